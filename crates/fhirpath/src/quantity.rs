//! Quantities with a small UCUM conversion table.

use rust_decimal::Decimal;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    /// UCUM code, or a calendar duration keyword (`year`, `month`, … singular).
    pub unit: String,
}

const CALENDAR: [(&str, &str); 16] = [
    ("year", "year"),
    ("years", "year"),
    ("month", "month"),
    ("months", "month"),
    ("week", "week"),
    ("weeks", "week"),
    ("day", "day"),
    ("days", "day"),
    ("hour", "hour"),
    ("hours", "hour"),
    ("minute", "minute"),
    ("minutes", "minute"),
    ("second", "second"),
    ("seconds", "second"),
    ("millisecond", "millisecond"),
    ("milliseconds", "millisecond"),
];

pub fn is_calendar_unit(u: &str) -> bool {
    CALENDAR.iter().any(|(k, _)| *k == u)
}

pub fn normalize_calendar(u: &str) -> Option<&'static str> {
    CALENDAR.iter().find(|(k, _)| *k == u).map(|(_, v)| *v)
}

/// The calendar unit a UCUM time unit corresponds to (for date arithmetic).
pub fn calendar_of(unit: &str) -> Option<&'static str> {
    if let Some(c) = normalize_calendar(unit) {
        return Some(c);
    }
    Some(match unit {
        "a" => "year",
        "mo" => "month",
        "wk" => "week",
        "d" => "day",
        "h" => "hour",
        "min" => "minute",
        "s" => "second",
        "ms" => "millisecond",
        _ => return None,
    })
}

/// (factor to base unit as (mantissa, scale), dimension).
fn unit_info(unit: &str) -> Option<(Decimal, &'static str)> {
    let d = |m: i64, scale: u32| Decimal::new(m, scale);
    Some(match unit {
        "g" => (d(1, 0), "g"),
        "mg" => (d(1, 3), "g"),
        "ug" | "mcg" => (d(1, 6), "g"),
        "ng" => (d(1, 9), "g"),
        "kg" => (d(1000, 0), "g"),
        "[lb_av]" => (d(45359237, 5), "g"),
        "m" => (d(1, 0), "m"),
        "cm" => (d(1, 2), "m"),
        "mm" => (d(1, 3), "m"),
        "um" => (d(1, 6), "m"),
        "km" => (d(1000, 0), "m"),
        "[in_i]" => (d(254, 4), "m"),
        "[ft_i]" => (d(3048, 4), "m"),
        "L" | "l" => (d(1, 0), "L"),
        "dL" | "dl" => (d(1, 1), "L"),
        "mL" | "ml" => (d(1, 3), "L"),
        "uL" | "ul" => (d(1, 6), "L"),
        "ms" | "millisecond" => (d(1, 3), "s"),
        "s" | "second" => (d(1, 0), "s"),
        "min" | "minute" => (d(60, 0), "s"),
        "h" | "hour" => (d(3600, 0), "s"),
        "d" | "day" => (d(86400, 0), "s"),
        "wk" | "week" => (d(604800, 0), "s"),
        "mo" => (d(2629800, 0), "s"),
        "a" => (d(31557600, 0), "s"),
        "1" => (d(1, 0), "1"),
        "%" => (d(1, 2), "1"),
        "Cel" => (d(1, 0), "Cel"),
        "mmol/L" => (d(1, 3), "mol/L"),
        "mol/L" => (d(1, 0), "mol/L"),
        "umol/L" => (d(1, 6), "mol/L"),
        "g/L" => (d(1, 0), "g/L"),
        "mg/dL" => (d(1, 2), "g/L"),
        "g/dL" => (d(10, 0), "g/L"),
        "mg/L" => (d(1, 3), "g/L"),
        "cm2" => (d(1, 4), "m2"),
        "m2" => (d(1, 0), "m2"),
        _ => return None,
    })
}

impl Quantity {
    pub fn new(value: Decimal, unit: &str) -> Quantity {
        let unit = normalize_calendar(unit)
            .map(str::to_string)
            .unwrap_or_else(|| unit.to_string());
        Quantity { value, unit }
    }

    pub fn is_calendar(&self) -> bool {
        normalize_calendar(&self.unit).is_some()
    }

    /// FHIRPath string form: `1 'mg'`, `2 years`.
    pub fn to_text(&self) -> String {
        let v = self.value.normalize_keep_int();
        if self.is_calendar() {
            let plural = if self.value == Decimal::ONE { "" } else { "s" };
            format!("{v} {}{plural}", self.unit)
        } else {
            format!("{v} '{}'", self.unit)
        }
    }

    /// Value in the base unit of the dimension. Calendar units above weeks have no definite
    /// duration (only for equivalence/ comparison of years/months with each other).
    fn base(&self, strict_calendar: bool) -> Option<(Decimal, &'static str)> {
        if strict_calendar && matches!(self.unit.as_str(), "year" | "month") {
            let months = if self.unit == "year" {
                self.value.checked_mul(Decimal::from(12))?
            } else {
                self.value
            };
            return Some((months, "calendar-month"));
        }
        let unit = match self.unit.as_str() {
            "year" => "a",
            "month" => "mo",
            u => u,
        };
        let (f, dim) = unit_info(unit)?;
        Some((self.value.checked_mul(f)?, dim))
    }

    /// Compares two quantities; `None` when the units are not comparable.
    pub fn compare(&self, other: &Quantity) -> Option<Ordering> {
        if self.unit == other.unit {
            return Some(self.value.cmp(&other.value));
        }
        let cal = self.is_calendar() || other.is_calendar();
        if cal && self.is_calendar() != other.is_calendar() {
            // calendar durations above seconds are not comparable with UCUM definite durations
            let big = |q: &Quantity| matches!(q.unit.as_str(), "year" | "month" | "a" | "mo");
            if big(self) || big(other) {
                return None;
            }
        }
        let (a, da) = self.base(cal)?;
        let (b, db) = other.base(cal)?;
        if da != db {
            return None;
        }
        Some(a.cmp(&b))
    }

    /// Equivalence: equal after conversion, at the precision of the least precise operand.
    pub fn equivalent(&self, other: &Quantity) -> bool {
        if self.is_calendar() != other.is_calendar() {
            let pair = |a: &str, b: &str| {
                matches!(
                    (a, b),
                    ("year", "a") | ("a", "year") | ("month", "mo") | ("mo", "month")
                )
            };
            if pair(&self.unit, &other.unit) {
                return self.value == other.value;
            }
        }
        if self.unit == other.unit {
            let s = self.value.scale().min(other.value.scale());
            return self.value.round_dp(s) == other.value.round_dp(s);
        }
        let cal = self.is_calendar() || other.is_calendar();
        match (self.base(cal), other.base(cal)) {
            (Some((a, da)), Some((b, db))) if da == db => {
                let s = a.scale().min(b.scale());
                a.round_dp(s) == b.round_dp(s)
            }
            _ => false,
        }
    }

    /// Multiplies or divides two quantities (units combined through their base units).
    pub fn mul_div(&self, other: &Quantity, divide: bool) -> Option<Quantity> {
        if other.unit == "1" {
            let v = if divide {
                self.value.checked_div(other.value)?
            } else {
                self.value.checked_mul(other.value)?
            };
            return Some(Quantity {
                value: v,
                unit: self.unit.clone(),
            });
        }
        if self.unit == "1" && !divide {
            return Some(Quantity {
                value: self.value.checked_mul(other.value)?,
                unit: other.unit.clone(),
            });
        }
        if divide && self.unit == other.unit {
            return Some(Quantity {
                value: self.value.checked_div(other.value)?,
                unit: "1".into(),
            });
        }
        let (a, da) = self.base(false).unwrap_or((self.value, ""));
        let (b, db) = other.base(false).unwrap_or((other.value, ""));
        let (ua, ub) = if da.is_empty() || db.is_empty() {
            (self.unit.as_str(), other.unit.as_str())
        } else {
            (da, db)
        };
        let (a, b) = if da.is_empty() || db.is_empty() {
            (self.value, other.value)
        } else {
            (a, b)
        };
        if divide {
            if ua == ub {
                return Some(Quantity {
                    value: a.checked_div(b)?,
                    unit: "1".into(),
                });
            }
            Some(Quantity {
                value: a.checked_div(b)?,
                unit: format!("{ua}/{ub}"),
            })
        } else {
            let unit = if ua == ub {
                format!("{ua}2")
            } else {
                format!("{ua}.{ub}")
            };
            Some(Quantity {
                value: a.checked_mul(b)?,
                unit,
            })
        }
    }

    /// Converts to another unit when the table knows both.
    pub fn convert(&self, unit: &str) -> Option<Quantity> {
        if self.unit == unit {
            return Some(self.clone());
        }
        let (v, d) = self.base(false)?;
        let (f, d2) = unit_info(unit)?;
        if d != d2 || f.is_zero() {
            return None;
        }
        Some(Quantity {
            value: v.checked_div(f)?.normalize(),
            unit: unit.to_string(),
        })
    }
}

pub trait NormalizeKeepInt {
    fn normalize_keep_int(&self) -> Decimal;
}

impl NormalizeKeepInt for Decimal {
    fn normalize_keep_int(&self) -> Decimal {
        *self
    }
}
