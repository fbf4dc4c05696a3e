//! HL7 V3 point-in-time values (`TS`): `YYYY[MM[DD[HH[MM[SS[.F…]]]]]][±ZZZZ]`.
//!
//! A value keeps the precision it was given: `2021` stays a year, `20210401134745+0100` a second
//! with its UTC offset. Nothing is assumed for what is absent (no default time zone).

use serde::{Deserialize, Serialize};

/// A time value as written in the document, with its parsed form when it is a valid HL7 TS.
///
/// Official examples contain invalid values in places the DMP does not use (e.g. a
/// `legalAuthenticator/time` of `20240106113623+100`), so outside `ClinicalDocument/effectiveTime`
/// an invalid value is kept raw rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HlTime {
    /// The `value` attribute, verbatim.
    pub raw: String,
    /// The parsed value; `None` if `raw` is not a valid HL7 TS.
    pub parsed: Option<Timestamp>,
}

impl HlTime {
    /// Keeps `raw` and parses it.
    pub fn new(raw: &str) -> Self {
        Self {
            raw: raw.to_string(),
            parsed: Timestamp::parse(raw),
        }
    }
}

/// How much of a [`Timestamp`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// Seconds with a decimal fraction.
    Fraction,
}

/// A valid HL7 TS, precise to what was given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    pub year: u16,
    pub month: Option<u8>,
    pub day: Option<u8>,
    pub hour: Option<u8>,
    pub minute: Option<u8>,
    pub second: Option<u8>,
    /// Decimal digits after the seconds, verbatim (1 to 9 digits).
    pub fraction: Option<String>,
    /// UTC offset in minutes (`+0100` → 60), if given.
    pub offset_minutes: Option<i16>,
}

impl Timestamp {
    /// Parses an HL7 TS; `None` if the text does not follow the grammar or names no real date.
    pub fn parse(raw: &str) -> Option<Self> {
        if !raw.is_ascii() {
            return None;
        }
        let (main, zone) = match raw.find(['+', '-']) {
            Some(i) => (&raw[..i], Some(&raw[i..])),
            None => (raw, None),
        };
        let (digits, fraction) = match main.split_once('.') {
            Some((d, f)) => (d, Some(f)),
            None => (main, None),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit())
            || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        {
            return None;
        }
        let field = |i: usize| -> Option<u8> { digits.get(i..i + 2).and_then(|s| s.parse().ok()) };
        let year: u16 = digits.get(0..4)?.parse().ok()?;
        let month = field(4);
        let day = field(6);
        let hour = field(8);
        let minute = field(10);
        let second = field(12);
        if let Some(f) = fraction
            && (second.is_none()
                || f.is_empty()
                || f.len() > 9
                || !f.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        if month.is_some_and(|m| !(1..=12).contains(&m))
            || hour.is_some_and(|h| h > 23)
            || minute.is_some_and(|m| m > 59)
            || second.is_some_and(|s| s > 59)
        {
            return None;
        }
        if let (Some(m), Some(d)) = (month, day)
            && (d == 0 || d > days_in_month(year, m))
        {
            return None;
        }
        let offset_minutes = match zone {
            None => None,
            Some(z) => {
                let sign: i16 = if z.starts_with('-') { -1 } else { 1 };
                let hhmm = &z[1..];
                if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let h: i16 = hhmm[..2].parse().ok()?;
                let m: i16 = hhmm[2..].parse().ok()?;
                if h > 14 || m > 59 {
                    return None;
                }
                Some(sign * (h * 60 + m))
            }
        };
        Some(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction: fraction.map(str::to_string),
            offset_minutes,
        })
    }

    /// The most precise component given.
    pub fn precision(&self) -> Precision {
        match (
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            &self.fraction,
        ) {
            (_, _, _, _, Some(_), Some(_)) => Precision::Fraction,
            (_, _, _, _, Some(_), None) => Precision::Second,
            (_, _, _, Some(_), _, _) => Precision::Minute,
            (_, _, Some(_), _, _, _) => Precision::Hour,
            (_, Some(_), _, _, _, _) => Precision::Day,
            (Some(_), _, _, _, _, _) => Precision::Month,
            _ => Precision::Year,
        }
    }

    /// ISO 8601 extended form with the same precision: `2021`, `2021-04`, `2021-04-01`,
    /// `2021-04-01T13`, `2021-04-01T13:47`, `2021-04-01T13:47:45.5`, then the offset if given
    /// (`+01:00`).
    pub fn to_iso8601(&self) -> String {
        let mut s = format!("{:04}", self.year);
        if let Some(m) = self.month {
            s.push_str(&format!("-{m:02}"));
        }
        if let Some(d) = self.day {
            s.push_str(&format!("-{d:02}"));
        }
        if let Some(h) = self.hour {
            s.push_str(&format!("T{h:02}"));
        }
        if let Some(m) = self.minute {
            s.push_str(&format!(":{m:02}"));
        }
        if let Some(sec) = self.second {
            s.push_str(&format!(":{sec:02}"));
        }
        if let Some(f) = &self.fraction {
            s.push('.');
            s.push_str(f);
        }
        if let Some(off) = self.offset_minutes {
            let sign = if off < 0 { '-' } else { '+' };
            let abs = off.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", abs / 60, abs % 60));
        }
        s
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_timestamp_with_offset() {
        let t = Timestamp::parse("20210401134745+0100").unwrap();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2021, Some(4), Some(1), Some(13), Some(47), Some(45))
        );
        assert_eq!(t.offset_minutes, Some(60));
        assert_eq!(t.precision(), Precision::Second);
        assert_eq!(t.to_iso8601(), "2021-04-01T13:47:45+01:00");
    }

    #[test]
    fn partial_precisions_are_kept() {
        assert_eq!(Timestamp::parse("1979").unwrap().to_iso8601(), "1979");
        assert_eq!(
            Timestamp::parse("19790328").unwrap().to_iso8601(),
            "1979-03-28"
        );
        let t = Timestamp::parse("202101040735+0100").unwrap();
        assert_eq!(t.precision(), Precision::Minute);
        assert_eq!(t.to_iso8601(), "2021-01-04T07:35+01:00");
        let t = Timestamp::parse("20210104073512.25-0330").unwrap();
        assert_eq!(t.precision(), Precision::Fraction);
        assert_eq!(t.to_iso8601(), "2021-01-04T07:35:12.25-03:30");
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "202",
            "20210",
            "2021130",
            "20211301",
            "20210230",
            "20190229",
            "2021040125",
            "20240106113623+100",
            "20240106113623+1500",
            "2024010611.5",
            "20240106113623.",
            "2024-01-06",
            "20240106113623+01:00",
            "２０２１",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
        assert!(Timestamp::parse("20200229").is_some());
    }
}
