//! The checks both of our TOML files need (policies and `sockwarden.toml`): unknown keys
//! with a suggestion, strings and durations. Each returns the problem in words; the
//! caller files it as a `file:line:col` diagnostic.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::policy::did_you_mean;

/// What is wrong with a value, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub help: String,
}

impl Problem {
    fn new(message: impl Into<String>, help: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            help: help.into(),
        }
    }
}

pub type Value<'i> = Spanned<DeValue<'i>>;

/// How durations are written, for help texts.
pub const DURATION_HELP: &str =
    "write a number and a unit, e.g. \"90s\", \"10m\", \"2h\" or \"1h30m\"";

/// Every key of `table` not in `allowed` (an error in a file that can kill things), with
/// its span, its problem, and the allowed key suggested for it if any.
pub fn unknown_keys(
    table: &DeTable<'_>,
    allowed: &[&'static str],
    place: &str,
) -> Vec<(Range<usize>, Problem, Option<&'static str>)> {
    let mut out = Vec::new();
    for key in table.keys() {
        let k = key.get_ref().as_ref();
        if allowed.contains(&k) {
            continue;
        }
        let suggestion = did_you_mean(k, allowed);
        let help = match suggestion {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected one of: {}", allowed.join(", ")),
        };
        let message = if place.is_empty() {
            format!("unknown key `{k}`")
        } else {
            format!("unknown key `{k}` {place}")
        };
        out.push((key.span(), Problem::new(message, help), suggestion));
    }
    out
}

/// A string value.
pub fn string(key: &str, v: &Value<'_>) -> Result<String, Problem> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        other => Err(Problem::new(
            format!("`{key}` must be a string, found {}", other.type_str()),
            format!("put the value in double quotes: {key} = \"…\""),
        )),
    }
}

/// A duration string of at least `min`; a bare number is refused with the unit to add.
pub fn duration(key: &str, v: &Value<'_>, min: Duration) -> Result<Duration, Problem> {
    let text = match v.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => {
            return Err(Problem::new(
                format!(
                    "`{key}` must be a duration string, found the bare number {}",
                    i.as_str()
                ),
                format!(
                    "write the unit: `{key} = \"{}s\"` (or e.g. \"10m\", \"2h\", \"1h30m\")",
                    i.as_str()
                ),
            ))
        }
        other => {
            return Err(Problem::new(
                format!("`{key}` must be a duration, found {}", other.type_str()),
                DURATION_HELP,
            ))
        }
    };
    match crate::duration::parse(&text) {
        Ok(d) if d >= min => Ok(d),
        Ok(_) => Err(Problem::new(
            format!("`{key}` = \"{text}\" is too short"),
            format!("use at least {}", humantime::format_duration(min)),
        )),
        Err(e) => Err(Problem::new(
            format!("invalid duration `{text}` for `{key}`: {}", e.reason),
            DURATION_HELP,
        )),
    }
}
