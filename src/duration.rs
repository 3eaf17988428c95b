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

/// The one way a duration is shown (ages in tables, thresholds, cooldowns, messages):
/// the two most significant units, the second zero-padded and left out when zero, so
/// that `10m` reads as written and an age says `12m03s`: `45s`, `10m`, `12m03s`, `1h30m`,
/// `3h`, `2d04h`.
pub fn format(secs: u64) -> String {
    Shown(secs).to_string()
}

/// [`format`] as a `Display`, to write a duration into a longer text without a `String` of
/// its own (a mass leak's 100,000 explanations each name two).
#[derive(Debug, Clone, Copy)]
pub struct Shown(pub u64);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0;
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let (big, big_unit, small, small_unit) = match () {
            _ if d > 0 => (d, "d", h, "h"),
            _ if h > 0 => (h, "h", m, "m"),
            _ if m > 0 => (m, "m", s, "s"),
            _ => return write!(f, "{s}s"),
        };
        if small == 0 {
            write!(f, "{big}{big_unit}")
        } else {
            write!(f, "{big}{big_unit}{small:02}{small_unit}")
        }
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
    fn one_format_for_ages_and_thresholds() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (63, "1m03s"),
            (600, "10m"),
            (723, "12m03s"),
            (5400, "1h30m"),
            (3605, "1h"),
            (3 * 3600 + 5 * 60 + 9, "3h05m"),
            (2 * 86_400 + 4 * 3600, "2d04h"),
            (86_400, "1d"),
        ] {
            assert_eq!(format(secs), text, "{secs}");
            // What is shown parses back to at most the original.
            assert!(parse(text).expect(text).as_secs() <= secs, "{text}");
        }
    }
}
