//! Parsing of the human-friendly values the commands accept (durations, sizes, `K=V`).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds (`1.5`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = split_unit(text);
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("invalid duration unit {other:?} in {text:?} (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        bail!("duration {text:?} must be positive");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a byte size: `128Mi`, `64M`, `1Gi`, `65536` (Kubernetes quantity suffixes).
pub(crate) fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) = split_unit(text);
    let value: u64 = number
        .parse()
        .with_context(|| format!("invalid size {text:?}"))?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => bail!("invalid size unit {other:?} in {text:?} (use Ki, Mi, Gi, K, M or G)"),
    };
    value
        .checked_mul(factor)
        .with_context(|| format!("size {text:?} is too large"))
}

fn split_unit(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    (&text[..split], &text[split..])
}

/// Parses `KEY=VALUE`.
pub(crate) fn parse_env(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => bail!("environment entries are KEY=VALUE, got {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("2").expect("bare"), Duration::from_secs(2));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("128Mi").expect("Mi"), 128 << 20);
        assert_eq!(parse_size("1G").expect("G"), 1_000_000_000);
        assert!(parse_size("12X").is_err());
        assert_eq!(
            parse_env("A=b=c").expect("env"),
            ("A".to_owned(), "b=c".to_owned())
        );
    }
}
