//! Kubernetes resource quantities (`250m`, `1.5`, `123456n`, `64Mi`, `1e3`) as numbers, for
//! summing usage the way metrics-server reports it.

/// The value of `quantity` in its base unit (cores, bytes), or None when it is not a quantity.
pub fn value(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let split = quantity
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map(|(i, _)| i)
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(number * factor)
}

/// CPU as metrics-server writes it: whole nanocores (`1500000n`).
pub fn nanocores(cores: f64) -> String {
    format!("{}n", (cores * 1e9).round() as u64)
}

/// Memory as metrics-server writes it: kibibytes (`65536Ki`).
pub fn kibibytes(bytes: f64) -> String {
    format!("{}Ki", (bytes / 1024.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_scale_to_base_units() {
        assert_eq!(value("250m"), Some(0.25));
        assert_eq!(value("2"), Some(2.0));
        assert_eq!(value("1500000000n"), Some(1.5));
        assert_eq!(value("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(value("1e3"), Some(1000.0));
        assert_eq!(value("1k"), Some(1000.0));
        assert_eq!(value("x"), None);
        assert_eq!(value("5Qi"), None);
    }

    #[test]
    fn written_as_metrics_server_does() {
        assert_eq!(nanocores(0.0015), "1500000n");
        assert_eq!(kibibytes(8.0 * 1024.0 * 1024.0), "8192Ki");
    }
}
