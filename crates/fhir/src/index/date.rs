//! FHIR date / dateTime / instant parsing into inclusive millisecond ranges.

const MS_PER_SEC: i64 = 1_000;
const MS_PER_MIN: i64 = 60 * MS_PER_SEC;
const MS_PER_HOUR: i64 = 60 * MS_PER_MIN;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Parses a FHIR `date`, `dateTime` or `instant` (or a search date value) into the inclusive range of
/// milliseconds since the Unix epoch (UTC) that its precision covers.
///
/// Accepted forms: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, then `Thh`, `Thh:mm`, `Thh:mm:ss`, `Thh:mm:ss.f…`, each
/// time optionally followed by `Z` or `±hh:mm`. A value without time zone is taken as UTC. `2013` gives the
/// whole year, `2013-01-14T10:00+10:00` the minute 00:00–00:00:59.999 UTC, `…:05.1` the tenth of a second.
/// Anything else (invalid day of month, hour 24, trailing text…) gives `None`. Never panics.
pub fn parse_date_range(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    let mut p = Cursor { b, i: 0 };
    let year = p.digits(4)?;
    let (mut month, mut day) = (1, 1);
    // The end of the range is `start + span - 1` for calendar units, computed from the next unit start.
    let precision;
    if p.eat(b'-') {
        month = p.digits(2)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        if p.eat(b'-') {
            day = p.digits(2)?;
            if day < 1 || day > days_in_month(year, month) {
                return None;
            }
            precision = Precision::Day;
        } else {
            precision = Precision::Month;
        }
    } else {
        precision = Precision::Year;
    }
    let day_start = days_from_civil(year, month, day) * MS_PER_DAY;
    if !p.eat(b'T') {
        if !p.done() {
            return None;
        }
        let end = match precision {
            Precision::Year => days_from_civil(year + 1, 1, 1) * MS_PER_DAY,
            Precision::Month if month == 12 => days_from_civil(year + 1, 1, 1) * MS_PER_DAY,
            Precision::Month => days_from_civil(year, month + 1, 1) * MS_PER_DAY,
            Precision::Day => day_start + MS_PER_DAY,
        };
        return Some((day_start, end - 1));
    }
    if precision != Precision::Day {
        return None;
    }
    let hour = p.digits(2)?;
    if hour > 23 {
        return None;
    }
    let mut start = day_start + hour * MS_PER_HOUR;
    let mut span = MS_PER_HOUR;
    if p.eat(b':') {
        let minute = p.digits(2)?;
        if minute > 59 {
            return None;
        }
        start += minute * MS_PER_MIN;
        span = MS_PER_MIN;
        if p.eat(b':') {
            let second = p.digits(2)?;
            // FHIR allows a leap second `60`.
            if second > 60 {
                return None;
            }
            start += second * MS_PER_SEC;
            span = MS_PER_SEC;
            if p.eat(b'.') {
                let first = p.i;
                let mut ms = 0i64;
                let mut n = 0u32;
                while let Some(d) = p.peek().filter(u8::is_ascii_digit) {
                    if n < 3 {
                        ms = ms * 10 + i64::from(d - b'0');
                        n += 1;
                    }
                    p.i += 1;
                }
                if p.i == first {
                    return None;
                }
                let scale = 10i64.pow(3 - n);
                start += ms * scale;
                span = scale;
            }
        }
    }
    let offset = match p.peek() {
        None => 0,
        Some(b'Z') => {
            p.i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            p.i += 1;
            let h = p.digits(2)?;
            if !p.eat(b':') {
                return None;
            }
            let m = p.digits(2)?;
            if h > 14 || m > 59 {
                return None;
            }
            let off = h * MS_PER_HOUR + m * MS_PER_MIN;
            if sign == b'-' { -off } else { off }
        }
        Some(_) => return None,
    };
    if !p.done() {
        return None;
    }
    Some((start - offset, start - offset + span - 1))
}

#[derive(Clone, Copy, PartialEq)]
enum Precision {
    Year,
    Month,
    Day,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let s = self.b.get(self.i..self.i + n)?;
        let mut v = 0i64;
        for &d in s {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        self.i += n;
        Some(v)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y2013: i64 = 1_356_998_400_000; // 2013-01-01T00:00:00Z

    fn ms(s: &str) -> i64 {
        parse_date_range(s).unwrap().0
    }

    #[test]
    fn precisions() {
        assert_eq!(parse_date_range("1970"), Some((0, 365 * MS_PER_DAY - 1)));
        assert_eq!(parse_date_range("2013"), Some((Y2013, ms("2014") - 1)));
        assert_eq!(
            parse_date_range("2013-01"),
            Some((Y2013, Y2013 + 31 * MS_PER_DAY - 1))
        );
        assert_eq!(
            parse_date_range("2013-12"),
            Some((ms("2013-12-01"), ms("2014-01-01") - 1))
        );
        assert_eq!(
            parse_date_range("2013-01-14"),
            Some((Y2013 + 13 * MS_PER_DAY, Y2013 + 14 * MS_PER_DAY - 1))
        );
        let d14 = Y2013 + 13 * MS_PER_DAY;
        assert_eq!(
            parse_date_range("2013-01-14T10"),
            Some((d14 + 10 * MS_PER_HOUR, d14 + 11 * MS_PER_HOUR - 1))
        );
        assert_eq!(
            parse_date_range("2013-01-14T10:00"),
            Some((
                d14 + 10 * MS_PER_HOUR,
                d14 + 10 * MS_PER_HOUR + MS_PER_MIN - 1
            ))
        );
        assert_eq!(
            parse_date_range("2013-01-14T10:00:05"),
            Some((d14 + 10 * MS_PER_HOUR + 5000, d14 + 10 * MS_PER_HOUR + 5999))
        );
        assert_eq!(
            parse_date_range("2013-01-14T10:00:05.1Z"),
            Some((d14 + 10 * MS_PER_HOUR + 5100, d14 + 10 * MS_PER_HOUR + 5199))
        );
        assert_eq!(
            parse_date_range("2013-01-14T10:00:05.123Z"),
            Some((d14 + 10 * MS_PER_HOUR + 5123, d14 + 10 * MS_PER_HOUR + 5123))
        );
        assert_eq!(
            parse_date_range("2013-01-14T10:00:05.123456Z"),
            Some((d14 + 10 * MS_PER_HOUR + 5123, d14 + 10 * MS_PER_HOUR + 5123))
        );
    }

    #[test]
    fn time_zones() {
        let d14 = Y2013 + 13 * MS_PER_DAY;
        assert_eq!(ms("2013-01-14T10:00:00+10:00"), d14);
        assert_eq!(
            ms("2013-01-14T10:00:00-05:30"),
            d14 + 15 * MS_PER_HOUR + 30 * MS_PER_MIN
        );
        assert_eq!(ms("2013-01-14T10:00:00Z"), ms("2013-01-14T10:00:00"));
        assert_eq!(
            parse_date_range("2013-01-14T10:00+10:00"),
            Some((d14, d14 + MS_PER_MIN - 1))
        );
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), -1);
    }

    #[test]
    fn calendar() {
        assert!(parse_date_range("2012-02-29").is_some());
        assert!(parse_date_range("2000-02-29").is_some());
        assert!(parse_date_range("1900-02-29").is_none());
        assert!(parse_date_range("2013-02-29").is_none());
        assert_eq!(ms("2000-03-01") - ms("2000-02-01"), 29 * MS_PER_DAY);
        assert_eq!(ms("1600-01-01"), -11_676_096_000_000);
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "201",
            "2013-1",
            "2013-13",
            "2013-00",
            "2013-01-32",
            "2013-01-00",
            "2013-01-14T",
            "2013-01-14T24:00",
            "2013-01-14T10:60",
            "2013-01-14T10:00:61",
            "2013-01-14T10:00:00.",
            "2013-01-14T10:00:00+10",
            "2013-01-14T10:00:00+1000",
            "2013-01-14T10:00:00+15:00",
            "2013-01-14 10:00",
            "2013-01T10:00",
            "2013T10:00",
            "2013-01-14Z",
            "2013-01-14x",
            "abcd",
            "2013-01-14T10:00:00Zx",
            "２０１３",
            "2013-01-1é",
        ] {
            assert_eq!(parse_date_range(s), None, "{s}");
        }
    }
}
