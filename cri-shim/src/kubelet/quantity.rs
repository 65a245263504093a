//! Kubernetes resource quantities ("500m", "1.5", "128Mi", "1G", "1e3") as apimachinery's
//! `resource.Quantity` reads them: a decimal number, then nothing, a binary suffix (Ki … Ei), a
//! decimal SI suffix (n, u, m, k, M … E) or a decimal exponent (e3, E-2). Values are exact
//! (decimal mantissa × power) and rounded up on conversion, as `MilliValue()` / `Value()` do.
use anyhow::{bail, Context};

use super::manifest::Quantity;

/// A parsed quantity: `mantissa × 2^binary_exp × 10^decimal_exp`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    mantissa: i128,
    binary_exp: u32,
    decimal_exp: i32,
}

/// The largest mantissa we keep exactly; far beyond any real CPU or memory amount.
const MAX_DIGITS: usize = 30;

fn parse(text: &str) -> anyhow::Result<Parsed> {
    let s = text.trim();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        bail!("quantity {text:?}: no number");
    }
    if frac_part.contains('.') {
        bail!("quantity {text:?}: more than one decimal point");
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > MAX_DIGITS {
        bail!("quantity {text:?}: too many digits");
    }
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits
            .parse()
            .with_context(|| format!("quantity {text:?}: bad number"))?
    };
    if negative {
        mantissa = -mantissa;
    }
    let frac_digits = i32::try_from(frac_part.len()).context("quantity: fraction too long")?;
    let (binary_exp, suffix_exp) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            // A decimal exponent: e or E followed by a signed integer ("1e3", "5E-2").
            let exp = other
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty())
                .and_then(|e| e.parse::<i32>().ok())
                .filter(|e| e.abs() <= 100)
                .with_context(|| {
                    format!(
                        "quantity {text:?}: unknown suffix {other:?} (expected Ki, Mi, Gi, Ti, \
                         Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent like e3)"
                    )
                })?;
            (0, exp)
        }
    };
    Ok(Parsed {
        mantissa,
        binary_exp,
        decimal_exp: suffix_exp - frac_digits,
    })
}

/// `q × 10^scale`, rounded up (towards +∞), as an i64.
fn scaled(text: &str, scale: i32) -> anyhow::Result<i64> {
    let p = parse(text)?;
    let too_large = || anyhow::anyhow!("quantity {text:?} is too large");
    let mut n = p
        .mantissa
        .checked_mul(1i128 << p.binary_exp)
        .ok_or_else(too_large)?;
    let exp = p.decimal_exp + scale;
    if exp >= 0 {
        for _ in 0..exp {
            n = n.checked_mul(10).ok_or_else(too_large)?;
        }
    } else {
        let mut div: i128 = 1;
        for _ in 0..(-exp) {
            div = match div.checked_mul(10) {
                Some(d) => d,
                // Divisor beyond any mantissa: the value is in (-1, 1).
                None => return Ok(if n > 0 { 1 } else { 0 }),
            };
        }
        n = n.div_euclid(div) + i128::from(n.rem_euclid(div) != 0);
    }
    i64::try_from(n).map_err(|_| too_large())
}

/// Milli-units, rounded up (CPU: "500m" → 500, "1" → 1000, "0.1m" → 1), as `MilliValue()`.
pub fn milli_value(q: &Quantity) -> anyhow::Result<i64> {
    scaled(&q.0, 3)
}

/// Whole units, rounded up (memory: "128Mi" → 134217728, "1.5k" → 1500), as `Value()`.
pub fn value(q: &Quantity) -> anyhow::Result<i64> {
    scaled(&q.0, 0)
}

/// Checks that a quantity parses (for validation), with the same error text as the converters.
pub fn check(q: &Quantity) -> anyhow::Result<()> {
    parse(&q.0).map(|_| ())
}

/// Whether the quantity is negative.
pub fn is_negative(q: &Quantity) -> anyhow::Result<bool> {
    Ok(parse(&q.0)?.mantissa < 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn cpu_quantities_in_milli_units() {
        for (text, milli) in [
            ("500m", 500),
            ("1", 1000),
            ("0.5", 500),
            (".5", 500),
            ("1.5", 1500),
            ("2", 2000),
            ("100m", 100),
            ("0.1m", 1),
            ("1.0001", 1001),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("250000u", 250),
            ("1k", 1_000_000),
            ("0", 0),
        ] {
            assert_eq!(milli_value(&q(text)).unwrap(), milli, "{text}");
        }
    }

    #[test]
    fn memory_quantities_in_bytes() {
        for (text, bytes) in [
            ("128Mi", 128 * 1024 * 1024),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("1G", 1_000_000_000),
            ("1M", 1_000_000),
            ("64Ki", 65536),
            ("1k", 1000),
            ("1e3", 1000),
            ("1500m", 2),
            ("1m", 1),
            ("12345", 12345),
            ("2Ei", 2 << 60),
            ("0.5Ki", 512),
        ] {
            assert_eq!(value(&q(text)).unwrap(), bytes, "{text}");
        }
    }

    #[test]
    fn garbage_is_refused_with_the_text() {
        for text in [
            "", "abc", "1KB", "1K", "1.2.3", "Mi", "1 Gi", "1e", "1ee3", "--1",
        ] {
            let err = value(&q(text)).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
        }
        assert!(value(&q("100Ei"))
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn negative_values_round_up() {
        assert_eq!(milli_value(&q("-1")).unwrap(), -1000);
        assert_eq!(value(&q("-1500m")).unwrap(), -1);
        assert!(is_negative(&q("-1")).unwrap());
    }
}
