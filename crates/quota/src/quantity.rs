//! Kubernetes resource quantities (`500m`, `252Mi`, `1e3`): parsed exactly to nano units, added,
//! compared and printed in the canonical form kube-apiserver prints.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity was written, which decides how sums of it are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySi,
    /// `m`, `k`, `M`, ... or no suffix.
    DecimalSi,
    /// `1e3`.
    DecimalExponent,
}

/// A quantity, exact to 10^-9 (values below a nano unit round up, as upstream's do).
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Quantity = Quantity { nanos: 0, format: Format::DecimalSi };

    /// A whole number.
    pub fn from_int(value: i64) -> Quantity {
        Quantity { nanos: i128::from(value) * NANO, format: Format::DecimalSi }
    }

    /// Parses `s` as kube-apiserver does; the error says why it is not a quantity.
    pub fn parse(s: &str) -> Result<Quantity, String> {
        let invalid = || {
            format!(
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({s:?})"
            )
        };
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        // value = digits * 10^(-fraction.len())
        let digits: String = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(invalid());
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| invalid())? };
        let mut exponent10 = -(fraction.len() as i32);
        let (format, binary_shift) = match suffix {
            "" => (Format::DecimalSi, 0),
            "n" => {
                exponent10 -= 9;
                (Format::DecimalSi, 0)
            }
            "u" => {
                exponent10 -= 6;
                (Format::DecimalSi, 0)
            }
            "m" => {
                exponent10 -= 3;
                (Format::DecimalSi, 0)
            }
            "k" => {
                exponent10 += 3;
                (Format::DecimalSi, 0)
            }
            "M" => {
                exponent10 += 6;
                (Format::DecimalSi, 0)
            }
            "G" => {
                exponent10 += 9;
                (Format::DecimalSi, 0)
            }
            "T" => {
                exponent10 += 12;
                (Format::DecimalSi, 0)
            }
            "P" => {
                exponent10 += 15;
                (Format::DecimalSi, 0)
            }
            "E" => {
                exponent10 += 18;
                (Format::DecimalSi, 0)
            }
            "Ki" => (Format::BinarySi, 10),
            "Mi" => (Format::BinarySi, 20),
            "Gi" => (Format::BinarySi, 30),
            "Ti" => (Format::BinarySi, 40),
            "Pi" => (Format::BinarySi, 50),
            "Ei" => (Format::BinarySi, 60),
            other if other.starts_with(['e', 'E']) => {
                let exp: i32 = other[1..].parse().map_err(|_| invalid())?;
                if !(-40..=40).contains(&exp) {
                    return Err(invalid());
                }
                exponent10 += exp;
                (Format::DecimalExponent, 0)
            }
            _ => return Err(invalid()),
        };
        // nanos = mantissa * 2^shift * 10^(exponent10 + 9), rounded up away from zero.
        let mut value = mantissa.checked_mul(1i128 << binary_shift).ok_or_else(invalid)?;
        let scale = exponent10 + 9;
        if scale >= 0 {
            value = value.checked_mul(10i128.checked_pow(scale as u32).ok_or_else(invalid)?).ok_or_else(invalid)?;
        } else {
            let divisor = 10i128.checked_pow((-scale) as u32).unwrap_or(i128::MAX);
            value = value / divisor + i128::from(value % divisor != 0);
        }
        Ok(Quantity { nanos: if negative { -value } else { value }, format })
    }

    /// The format sums starting from this quantity keep.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The value as a float (ratios).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    /// Whether this is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether this is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// `self + other`, in `self`'s format (`other`'s when `self` is zero, as upstream's).
    fn add(self, other: Quantity) -> Quantity {
        let format = if self.nanos == 0 { other.format } else { self.format };
        Quantity { nanos: self.nanos.saturating_add(other.nanos), format }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;

    /// `self - other`, in `self`'s format (`other`'s when `self` is zero).
    fn sub(self, other: Quantity) -> Quantity {
        let format = if self.nanos == 0 { other.format } else { self.format };
        Quantity { nanos: self.nanos.saturating_sub(other.nanos), format }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    /// The canonical form: the largest suffix that keeps the number whole (`1500m`, `1k`,
    /// `252Mi`); binary quantities that are not whole multiples of 1024 print as decimal ones.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        if self.format == Format::BinarySi && magnitude.is_multiple_of(NANO as u128) {
            let mut whole = magnitude / NANO as u128;
            if whole >= 1024 {
                let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                let mut index = 0;
                while whole.is_multiple_of(1024) && index + 1 < suffixes.len() {
                    whole /= 1024;
                    index += 1;
                }
                return write!(f, "{sign}{whole}{}", suffixes[index]);
            }
        }
        // Decimal: mantissa * 10^exponent, exponent a multiple of 3 (from -9), as large as
        // the mantissa stays whole.
        let mut mantissa = magnitude;
        let mut exponent = -9i32;
        while mantissa.is_multiple_of(1000) && exponent < 18 {
            mantissa /= 1000;
            exponent += 3;
        }
        if self.format == Format::DecimalExponent {
            return if exponent == 0 {
                write!(f, "{sign}{mantissa}")
            } else {
                write!(f, "{sign}{mantissa}e{exponent}")
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn canonical_forms_match_upstream() {
        for (input, canonical) in [
            ("500m", "500m"),
            ("0.5", "500m"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1.5", "1500m"),
            ("252Mi", "252Mi"),
            ("1024Mi", "1Gi"),
            ("30Gi", "30Gi"),
            ("512", "512"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("10Gi", "10Gi"),
            ("0", "0"),
            ("-2", "-2"),
            ("1n", "1n"),
            ("0.1n", "1n"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn sums_keep_the_first_format_and_compare_by_value() {
        assert_eq!((q("252Mi") + q("100Mi")).to_string(), "352Mi");
        assert_eq!((q("500m") + q("600m")).to_string(), "1100m");
        assert_eq!((q("1") - q("1000m")).to_string(), "0");
        // Zero takes the format of what is added to it.
        assert_eq!((Quantity::ZERO + q("100Mi")).to_string(), "100Mi");
        assert!(q("1100m") > q("1"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1Ki"), q("1024"));
    }

    #[test]
    fn bad_quantities_are_refused() {
        for bad in ["", "abc", "1.2.3", "1Kb", "--1", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }
}
