//! Decimal parsing with the implied precision range of FHIR search.

/// Parses a decimal as written (`100`, `-1.50`, `1e2`, `2.5E-3`) into `(value, lo, hi)`, where `lo..hi` is
/// the range implied by its precision: half a unit of the last written digit either side (`100` →
/// 99.5..100.5, `1.50` → 1.495..1.505, `1e2` → 50..150). Bounds are computed from the exact digits, so they
/// are the nearest `f64` to the decimal bound. `None` for anything that is not a finite decimal
/// (`NaN`, `inf`, `1.`, `.5`, empty…). Never panics.
pub fn number_range(text: &str) -> Option<(f64, f64, f64)> {
    let t = text.trim();
    let b = t.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &t[int_start..i];
    if int_digits.is_empty() {
        return None;
    }
    let mut frac_digits = "";
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &t[s..i];
        if frac_digits.is_empty() {
            return None;
        }
    }
    let mut exp: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let exp_text = &t[i..];
        let digits = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        exp = exp_text.parse::<i64>().ok()?.clamp(-100_000, 100_000);
        i = b.len();
    }
    if i != b.len() {
        return None;
    }
    let value: f64 = t.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    // The place value of the last written digit is 10^unit_exp; the half unit is 5·10^(unit_exp-1).
    let unit_exp = exp - frac_digits.len() as i64;
    let scale = unit_exp - 1;
    let mantissa_digits = int_digits.len() + frac_digits.len();
    let (lo, hi) = if mantissa_digits <= 15 {
        // 10·m ± 5 is an exact integer below 2^53: a single rounding when scaling.
        let mut m: i64 = 0;
        for c in int_digits.bytes().chain(frac_digits.bytes()) {
            m = m * 10 + i64::from(c - b'0');
        }
        if negative {
            m = -m;
        }
        // Correctly rounded by the decimal parser (repeated multiplications by 10 were not, and could put
        // `lo` above the value itself for large exponents: "90045.3292506706E260").
        (decimal(10 * m - 5, scale)?, decimal(10 * m + 5, scale)?)
    } else {
        let half = decimal(5, scale)?;
        (value - half, value + half)
    };
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    Some((value, lo, hi))
}

/// `m · 10^p`, correctly rounded to the nearest double (the exponent is bounded: beyond ±400 the result is
/// 0 or infinite either way).
fn decimal(m: i64, p: i64) -> Option<f64> {
    format!("{m}e{}", p.clamp(-400, 400)).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implied_precision() {
        assert_eq!(number_range("100"), Some((100.0, 99.5, 100.5)));
        assert_eq!(number_range("1.50"), Some((1.5, 1.495, 1.505)));
        assert_eq!(number_range("1.5"), Some((1.5, 1.45, 1.55)));
        assert_eq!(number_range("-1.5"), Some((-1.5, -1.55, -1.45)));
        assert_eq!(number_range("+2"), Some((2.0, 1.5, 2.5)));
        // Found by the property test: the bounds must hold the value at any exponent.
        let (v, lo, hi) = number_range("90045.3292506706E260").expect("nombre");
        assert!(lo <= v && v <= hi);
        assert_eq!(number_range("0"), Some((0.0, -0.5, 0.5)));
        assert_eq!(number_range("1e2"), Some((100.0, 50.0, 150.0)));
        assert_eq!(number_range("1.0E2"), Some((100.0, 95.0, 105.0)));
        assert_eq!(number_range("2.5e-3"), Some((0.0025, 0.00245, 0.00255)));
        assert_eq!(number_range("0.001"), Some((0.001, 0.0005, 0.0015)));
        assert_eq!(number_range(" 185 "), Some((185.0, 184.5, 185.5)));
        let (v, lo, hi) = number_range("12345678901234567890.5").unwrap();
        assert!(lo <= v && v <= hi);
    }

    #[test]
    fn rejects_non_decimals() {
        for s in [
            "", "-", "+", ".5", "1.", "1e", "1e+", "NaN", "inf", "-inf", "1,5", "1.5.2", "0x10",
            "1e400", "1 2", "e5",
        ] {
            assert_eq!(number_range(s), None, "{s}");
        }
    }
}
