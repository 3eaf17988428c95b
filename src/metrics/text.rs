//! Writing the Prometheus text exposition format, version 0.0.4: `# HELP`/`# TYPE` headers,
//! samples with escaped label values, and Go-compatible float spellings.

use std::fmt::Write as _;

/// The Content-Type of the format, for the HTTP endpoint.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type as the `# TYPE` line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: counts stay exact integers, the rest are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// Append the `# HELP` and `# TYPE` lines of a family.
pub fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {}", kind.name());
}

/// Append one sample line: `name{l1="v1",l2="v2"} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: Value) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (n, (label, v)) in labels.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_into(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    match value {
        Value::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Float(v) => out.push_str(&float(v)),
    }
    out.push('\n');
}

/// A float as Prometheus reads it: `+Inf`, `-Inf`, `NaN`, else Rust's shortest exact
/// decimal (never an exponent, which the format would also accept).
pub fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// Label values escape `\`, `"` and newline; nothing else.
fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes `\` and newline (a `"` is literal there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(
            &mut out,
            "m",
            &[("a", "x\"y\\z\nw"), ("b", "plain ü")],
            Value::Int(3),
        );
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"plain ü\"} 3\n");
    }

    #[test]
    fn floats_use_the_go_spellings() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(10.0), "10");
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(0.0000001), "0.0000001");
    }

    #[test]
    fn help_escapes_backslash_and_newline_only() {
        let mut out = String::new();
        header(&mut out, "m", "a \"q\" \\ b\nc", Kind::Gauge);
        assert_eq!(out, "# HELP m a \"q\" \\\\ b\\nc\n# TYPE m gauge\n");
    }
}
