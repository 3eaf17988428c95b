//! Policy errors as a person fixes them: `file:line:col: error: message`, the source line
//! with a caret under the offending span, and `help:` saying what to write instead.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// One problem in one policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file as it was named to the loader.
    pub file: String,
    /// 1-based line and column (in characters) of the span's start; absent for errors
    /// about a whole file (unreadable, empty directory).
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    /// The source line the span starts on, without its newline.
    pub source_line: Option<String>,
    /// Width of the caret run under `source_line`, in characters (at least 1).
    pub caret_len: usize,
    /// What to write instead.
    pub help: Option<String>,
    /// Byte offset of the span in the file, to sort diagnostics in reading order.
    #[serde(skip)]
    pub offset: usize,
}

impl Diagnostic {
    /// A diagnostic pointing at `span` (byte offsets) in `source`.
    pub fn at(
        file: &str,
        source: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = floor_char_boundary(source, span.start.min(source.len()));
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line_no = source[..start].matches('\n').count() + 1;
        let col = source[line_start..start].chars().count() + 1;
        let end = floor_char_boundary(source, span.end.clamp(start, line_end));
        let caret_len = source[start..end].chars().count().max(1);
        let source_line = source[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        Diagnostic {
            file: file.to_string(),
            line: Some(line_no),
            col: Some(col),
            message: message.into(),
            source_line: Some(source_line),
            caret_len,
            help: None,
            offset: start,
        }
    }

    /// A diagnostic about a whole file.
    pub fn file(file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_string(),
            line: None,
            col: None,
            message: message.into(),
            source_line: None,
            caret_len: 0,
            help: None,
            offset: 0,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col` (or just `file`).
    pub fn location(&self) -> String {
        match (self.line, self.col) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            _ => self.file.clone(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: error: {}", self.location(), self.message)?;
        if let (Some(line), Some(col), Some(text)) = (self.line, self.col, &self.source_line) {
            let gutter = line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{line} | {text}")?;
            writeln!(
                f,
                "{:gutter$} | {:pad$}{}",
                "",
                "",
                "^".repeat(self.caret_len),
                pad = col - 1
            )?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found while loading a set of policy files, in file then reading order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\n{n} error{} in policy; nothing was loaded",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let w = norm(word);
    let close = candidates
        .iter()
        .map(|c| (edit_distance(&w, &norm(c)), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    // A truncated name (`max_destroys`) is a typo too, when only one candidate extends it.
    close.or_else(|| {
        let mut longer = candidates
            .iter()
            .filter(|c| w.len() >= 3 && norm(c).starts_with(&w));
        match (longer.next(), longer.next()) {
            (Some(c), None) => Some(*c),
            _ => None,
        }
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_caret_and_help() {
        let src = "mode = \"observe\"\n[[rule]]\nolder-than = \"10m\"\n";
        let start = src.find("older-than").expect("present");
        let d = Diagnostic::at("p.toml", src, start..start + 10, "unknown key `older-than`")
            .help("did you mean `older_than`?");
        assert_eq!(
            d.to_string(),
            "p.toml:3:1: error: unknown key `older-than`\n  |\n3 | older-than = \"10m\"\n  | ^^^^^^^^^^\nhelp: did you mean `older_than`?\n"
        );
    }

    #[test]
    fn columns_count_characters_and_carets_stop_at_line_end() {
        let src = "name = \"é\" # x\nb = 1\n";
        let start = src.find('#').expect("present");
        let d = Diagnostic::at("p", src, start..src.len(), "m");
        assert_eq!((d.line, d.col, d.caret_len), (Some(1), Some(12), 3));
        let d = Diagnostic::at("p", src, src.len()..src.len(), "eof");
        assert_eq!((d.line, d.col, d.caret_len), (Some(3), Some(1), 1));
    }

    #[test]
    fn suggests_close_names_only() {
        let keys = ["older_than", "states", "action"];
        assert_eq!(did_you_mean("older-than", &keys), Some("older_than"));
        assert_eq!(did_you_mean("state", &keys), Some("states"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(did_you_mean("older", &keys), Some("older_than"));
    }
}
