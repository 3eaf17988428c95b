//! Durations as operators write them ("90s", "10m", "2h", "1h30m") and as tables show them.

use std::time::Duration;

/// A duration that could not be parsed, with examples of what is accepted.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}; write e.g. \"90s\", \"10m\", \"2h\" or \"1h30m\"")]
pub struct BadDuration {
    pub input: String,
    pub reason: String,
}

pub fn parse(input: &str) -> Result<Duration, BadDuration> {
    let text = input.trim();
    // A bare number is ambiguous (seconds? ms?): refuse it rather than guess.
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(BadDuration {
            input: input.to_string(),
            reason: "a unit is required".into(),
        });
    }
    humantime::parse_duration(text).map_err(|e| BadDuration {
        input: input.to_string(),
        reason: e.to_string(),
    })
}

/// Compact form for tables: `45s`, `12m03s`, `3h05m`, `2d04h`.
pub fn compact(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        _ if d > 0 => format!("{d}d{h:02}h"),
        _ if h > 0 => format!("{h}h{m:02}m"),
        _ if m > 0 => format!("{m}m{s:02}s"),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_write() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("2h", 7200),
            ("1h30m", 5400),
            (" 3s ", 3),
        ] {
            assert_eq!(
                parse(text).expect(text),
                Duration::from_secs(secs),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_bare_numbers_and_garbage() {
        for text in ["10", "", "ten minutes", "5x"] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains("\"10m\""), "{err}");
        }
    }

    #[test]
    fn compact_forms() {
        assert_eq!(compact(0), "0s");
        assert_eq!(compact(59), "59s");
        assert_eq!(compact(63), "1m03s");
        assert_eq!(compact(3 * 3600 + 5 * 60 + 9), "3h05m");
        assert_eq!(compact(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
