//! Partial-precision Date, DateTime and Time values.

use std::cmp::Ordering;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TKind {
    Date,
    DateTime,
    Time,
}

/// Precision levels.
pub const YEAR: u8 = 1;
pub const MONTH: u8 = 2;
pub const DAY: u8 = 3;
pub const HOUR: u8 = 4;
pub const MINUTE: u8 = 5;
pub const SECOND: u8 = 6;
pub const MILLIS: u8 = 7;

/// A date, date-time or time with a precision (fields beyond it are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub kind: TKind,
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
    /// Precision: YEAR..MILLIS (Time values start at HOUR).
    pub precision: u8,
    /// Timezone offset in minutes, when given.
    pub tz: Option<i16>,
}

fn num(s: &str, n: usize) -> Option<(u32, &str)> {
    if s.len() < n || !s.as_bytes()[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

pub fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

impl Temporal {
    fn empty(kind: TKind) -> Temporal {
        Temporal {
            kind,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            precision: YEAR,
            tz: None,
        }
    }

    /// Parses the body of a FHIRPath literal (after '@').
    pub fn parse_literal(s: &str) -> Option<Temporal> {
        if let Some(t) = s.strip_prefix('T') {
            return Self::parse_time(t);
        }
        let (t, rest) = Self::parse_date_part(s)?;
        match rest.strip_prefix('T') {
            None if rest.is_empty() => Some(t),
            None => None,
            Some(time) => {
                let mut t = t;
                t.kind = TKind::DateTime;
                if time.is_empty() {
                    return Some(t);
                }
                if t.precision != DAY {
                    return None;
                }
                Self::parse_time_into(&mut t, time, true)?;
                Some(t)
            }
        }
    }

    fn parse_date_part(s: &str) -> Option<(Temporal, &str)> {
        let mut t = Self::empty(TKind::Date);
        let (y, mut rest) = num(s, 4)?;
        t.year = y as i32;
        t.precision = YEAR;
        if let Some(r) = rest.strip_prefix('-') {
            let (m, r) = num(r, 2)?;
            if !(1..=12).contains(&m) {
                return None;
            }
            t.month = m as u8;
            t.precision = MONTH;
            rest = r;
            if let Some(r) = rest.strip_prefix('-') {
                let (d, r) = num(r, 2)?;
                if d < 1 || d > u32::from(days_in_month(t.year, t.month)) {
                    return None;
                }
                t.day = d as u8;
                t.precision = DAY;
                rest = r;
            }
        }
        Some((t, rest))
    }

    fn parse_time(s: &str) -> Option<Temporal> {
        let mut t = Self::empty(TKind::Time);
        Self::parse_time_into(&mut t, s, false)?;
        Some(t)
    }

    fn parse_time_into(t: &mut Temporal, s: &str, allow_tz: bool) -> Option<()> {
        let (h, mut rest) = num(s, 2)?;
        if h > 23 {
            return None;
        }
        t.hour = h as u8;
        t.precision = HOUR;
        if let Some(r) = rest.strip_prefix(':') {
            let (m, r) = num(r, 2)?;
            if m > 59 {
                return None;
            }
            t.minute = m as u8;
            t.precision = MINUTE;
            rest = r;
            if let Some(r) = rest.strip_prefix(':') {
                let (sec, r) = num(r, 2)?;
                if sec > 59 {
                    return None;
                }
                t.second = sec as u8;
                t.precision = SECOND;
                rest = r;
                if let Some(r) = rest.strip_prefix('.') {
                    let n = r.bytes().take_while(u8::is_ascii_digit).count();
                    if n == 0 {
                        return None;
                    }
                    let frac = &r[..n];
                    let mut ms = 0u16;
                    for (i, c) in frac.bytes().take(3).enumerate() {
                        ms += u16::from(c - b'0') * [100, 10, 1][i];
                    }
                    t.millis = ms;
                    t.precision = MILLIS;
                    rest = &r[n..];
                }
            }
        }
        if rest.is_empty() {
            return Some(());
        }
        if !allow_tz {
            return None;
        }
        if rest == "Z" {
            t.tz = Some(0);
            return Some(());
        }
        let sign: i16 = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (th, r) = num(&rest[1..], 2)?;
        let r = r.strip_prefix(':')?;
        let (tm, r) = num(r, 2)?;
        if !r.is_empty() || th > 14 || tm > 59 {
            return None;
        }
        t.tz = Some(sign * (th as i16 * 60 + tm as i16));
        Some(())
    }

    /// Parses FHIR JSON primitive text of the given kind (`time` has no leading 'T').
    pub fn parse_fhir(s: &str, kind: TKind) -> Option<Temporal> {
        match kind {
            TKind::Time => Self::parse_time(s),
            TKind::Date => {
                let (t, rest) = Self::parse_date_part(s)?;
                rest.is_empty().then_some(t)
            }
            TKind::DateTime => {
                let mut t = Self::parse_literal(s)?;
                if t.kind == TKind::Time {
                    return None;
                }
                t.kind = TKind::DateTime;
                Some(t)
            }
        }
    }

    pub fn has_date(&self) -> bool {
        self.kind != TKind::Time
    }

    fn time_string(&self, out: &mut String) {
        let _ = write!(out, "{:02}", self.hour);
        if self.precision >= MINUTE {
            let _ = write!(out, ":{:02}", self.minute);
        }
        if self.precision >= SECOND {
            let _ = write!(out, ":{:02}", self.second);
        }
        if self.precision >= MILLIS {
            let _ = write!(out, ".{:03}", self.millis);
        }
    }

    /// Canonical text (FHIR form: no '@', times without 'T').
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.kind == TKind::Time {
            self.time_string(&mut out);
            return out;
        }
        let _ = write!(out, "{:04}", self.year);
        if self.precision >= MONTH {
            let _ = write!(out, "-{:02}", self.month);
        }
        if self.precision >= DAY {
            let _ = write!(out, "-{:02}", self.day);
        }
        if self.kind == TKind::DateTime && self.precision >= HOUR {
            out.push('T');
            self.time_string(&mut out);
            match self.tz {
                Some(0) => out.push('Z'),
                Some(tz) => {
                    let sign = if tz < 0 { '-' } else { '+' };
                    let a = tz.abs();
                    let _ = write!(out, "{sign}{:02}:{:02}", a / 60, a % 60);
                }
                None => {}
            }
        }
        out
    }

    fn day_number(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// Shifts to UTC when a timezone is present and the precision reaches hours.
    fn normalized(&self) -> Temporal {
        match self.tz {
            Some(tz) if tz != 0 && self.kind == TKind::DateTime && self.precision >= HOUR => {
                let mut t = *self;
                let mins =
                    self.day_number() * 1440 + i64::from(self.hour) * 60 + i64::from(self.minute)
                        - i64::from(tz);
                let (y, m, d) = civil_from_days(mins.div_euclid(1440));
                let rem = mins.rem_euclid(1440);
                t.year = y;
                t.month = m;
                t.day = d;
                t.hour = (rem / 60) as u8;
                t.minute = (rem % 60) as u8;
                t.tz = Some(0);
                t
            }
            _ => *self,
        }
    }

    /// Ordering; `None` when the precisions differ and the common part is equal.
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        if (self.kind == TKind::Time) != (other.kind == TKind::Time) {
            return None;
        }
        if self.kind == TKind::DateTime
            && other.kind == TKind::DateTime
            && self.tz.is_some() != other.tz.is_some()
            && self.precision >= HOUR
            && other.precision >= HOUR
        {
            return None;
        }
        let a = self.normalized();
        let b = other.normalized();
        let pa = a.precision.min(SECOND);
        let pb = b.precision.min(SECOND);
        let levels = [
            (YEAR, i64::from(a.year), i64::from(b.year)),
            (MONTH, i64::from(a.month), i64::from(b.month)),
            (DAY, i64::from(a.day), i64::from(b.day)),
            (HOUR, i64::from(a.hour), i64::from(b.hour)),
            (MINUTE, i64::from(a.minute), i64::from(b.minute)),
            (
                SECOND,
                i64::from(a.second) * 1000 + i64::from(a.millis),
                i64::from(b.second) * 1000 + i64::from(b.millis),
            ),
        ];
        let start = if a.kind == TKind::Time { HOUR } else { YEAR };
        for (lvl, x, y) in levels {
            if lvl < start {
                continue;
            }
            if lvl > pa || lvl > pb {
                return if pa == pb {
                    Some(Ordering::Equal)
                } else {
                    None
                };
            }
            match x.cmp(&y) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        Some(Ordering::Equal)
    }

    /// Adds a calendar quantity (`unit` normalized to year/month/week/day/hour/minute/second/millisecond).
    pub fn add(&self, amount: i64, unit: &str) -> Option<Temporal> {
        if amount.unsigned_abs() > 1_000_000_000_000 {
            return None;
        }
        let mut t = *self;
        match unit {
            "year" => {
                if t.kind == TKind::Time {
                    return None;
                }
                t.year = i32::try_from(i64::from(t.year) + amount).ok()?;
                if t.precision >= DAY {
                    t.day = t.day.min(days_in_month(t.year, t.month));
                }
            }
            "month" => {
                if t.kind == TKind::Time {
                    return None;
                }
                if t.precision < MONTH {
                    return t.add(amount / 12, "year");
                }
                let total = i64::from(t.year) * 12 + i64::from(t.month) - 1 + amount;
                t.year = i32::try_from(total.div_euclid(12)).ok()?;
                t.month = (total.rem_euclid(12) + 1) as u8;
                if t.precision >= DAY {
                    t.day = t.day.min(days_in_month(t.year, t.month));
                }
            }
            "week" => return self.add(amount.checked_mul(7)?, "day"),
            "day" => {
                if t.kind == TKind::Time {
                    return None;
                }
                if t.precision < DAY {
                    return match t.precision {
                        MONTH => t.add(amount / 30, "month"),
                        _ => t.add(amount / 365, "year"),
                    };
                }
                let days = t.day_number().checked_add(amount)?;
                if days.unsigned_abs() > 1_000_000_000 {
                    return None;
                }
                let (y, m, d) = civil_from_days(days);
                t.year = y;
                t.month = m;
                t.day = d;
            }
            "hour" | "minute" | "second" | "millisecond" => {
                let ms_per = match unit {
                    "hour" => 3_600_000i64,
                    "minute" => 60_000,
                    "second" => 1000,
                    _ => 1,
                };
                if t.kind != TKind::Time && t.precision < HOUR {
                    let days = amount.checked_mul(ms_per)? / 86_400_000;
                    return t.add(days, "day");
                }
                let day_ms = i64::from(t.hour) * 3_600_000
                    + i64::from(t.minute) * 60_000
                    + i64::from(t.second) * 1000
                    + i64::from(t.millis);
                let total = day_ms.checked_add(amount.checked_mul(ms_per)?)?;
                let days = total.div_euclid(86_400_000);
                let rem = total.rem_euclid(86_400_000);
                t.hour = (rem / 3_600_000) as u8;
                t.minute = (rem / 60_000 % 60) as u8;
                t.second = (rem / 1000 % 60) as u8;
                t.millis = (rem % 1000) as u16;
                if t.kind != TKind::Time && days != 0 {
                    let days = t.day_number().checked_add(days)?;
                    if days.unsigned_abs() > 1_000_000_000 {
                        return None;
                    }
                    let (y, m, d) = civil_from_days(days);
                    t.year = y;
                    t.month = m;
                    t.day = d;
                }
                // keep the original precision (fields beyond it stay as computed)
            }
            _ => return None,
        }
        Some(t)
    }

    /// Current UTC date-time.
    pub fn now() -> Temporal {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ms = d.as_millis() as i64;
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        let (y, m, dd) = civil_from_days(days);
        Temporal {
            kind: TKind::DateTime,
            year: y,
            month: m,
            day: dd,
            hour: (rem / 3_600_000) as u8,
            minute: (rem / 60_000 % 60) as u8,
            second: (rem / 1000 % 60) as u8,
            millis: (rem % 1000) as u16,
            precision: MILLIS,
            tz: Some(0),
        }
    }

    /// Same value with a different precision (truncating or zero-extending).
    pub fn with_precision(&self, p: u8) -> Temporal {
        let mut t = *self;
        t.precision = p;
        if p < MONTH {
            t.month = 1;
        }
        if p < DAY {
            t.day = 1;
        }
        if p < HOUR {
            t.hour = 0;
        }
        if p < MINUTE {
            t.minute = 0;
        }
        if p < SECOND {
            t.second = 0;
        }
        if p < MILLIS {
            t.millis = 0;
        }
        t
    }
}
