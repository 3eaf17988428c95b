//! Everything printed for people and scripts, from the same structs: socket tables sized to
//! the terminal, the per-state × owner summary, and JSON Lines.
//!
//! `scan --json` prints one [`SocketRecord`](crate::record::SocketRecord) per line;
//! `scan --summary --json` one [`SummaryRow`] per line.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use crate::duration;
use crate::model::{Age, Netns, NetnsId, StuckSocket, TcpState};
use crate::record::SocketRecord;
use crate::scan::Snapshot;

/// Text chosen by other processes (comm, cmdline, unit, container and namespace names) made
/// safe for a terminal, the way GNU `ls` and systemd's `cescape()` show file names: control
/// characters, newlines, invisible format characters and bidi overrides become visible
/// escapes (`\n`, `\x1b`, `\u{202e}`), and a backslash is doubled so the escapes are
/// unambiguous. JSON output keeps the exact text; every human table and message uses this.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal would act on or hide: C0/C1 controls and DEL, bidi embeddings,
/// overrides and isolates, zero-width and other invisible format characters, line and
/// paragraph separators, and the backslash that introduces our own escapes.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c as u32,
            0x061c | 0x115f | 0x1160 | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e
            | 0x2060..=0x206f | 0x3164 | 0xfeff | 0xfff9..=0xfffb | 0xe0000..=0xe007f)
}

/// An error and its causes in one line, `context: cause: cause`, each cause left out when
/// the message before it already says it (typed errors here put their source's text in
/// their own message, so `{:#}` would print it twice).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut last = text.clone();
    let mut cause = err.source();
    while let Some(c) = cause {
        let message = c.to_string();
        if !last.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        last = message;
        cause = c.source();
    }
    text
}

/// The version of the JSON contract (`docs/json.md`, `docs/schema.json`): every line any
/// command prints carries it as `schema`, with its `type`. Fields are added within a
/// version; a rename or removal makes the next one.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// One line of the contract: `type`, `schema`, then the body's own fields.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    schema: u32,
    #[serde(flatten)]
    body: T,
}

/// Write one JSON line of type `kind`.
pub fn json_line<T: Serialize>(out: &mut dyn Write, kind: &str, body: T) -> io::Result<()> {
    let line = Line {
        kind,
        schema: JSON_SCHEMA_VERSION,
        body,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Write one JSON line of type `kind` per item.
pub fn json_lines<T: Serialize>(
    out: &mut dyn Write,
    kind: &str,
    items: impl IntoIterator<Item = T>,
) -> io::Result<()> {
    for item in items {
        json_line(out, kind, item)?;
    }
    Ok(())
}

/// The age as a table shows it: `≥` marks a lower bound.
pub fn age_cell(age: &Age) -> String {
    let prefix = if age.lower_bound { "≥" } else { "" };
    format!("{prefix}{}", duration::format(age.secs))
}

/// Owners as a table cell: `api(1234) fd 7 api.service`, `+N more`, or why there are none.
/// Every table writes a process as `comm(pid)`.
pub fn owners_cell(s: &StuckSocket, unreadable_processes: usize) -> String {
    let Some(first) = s.owners.first() else {
        return if s.socket.inode.0 == 0 {
            "(orphan: no process holds it)".to_string()
        } else if unreadable_processes > 0 {
            "(owner not visible: see warning)".to_string()
        } else {
            "(no owner found: closed meanwhile?)".to_string()
        };
    };
    let p = &first.process;
    let mut cell = format!("{}({}) fd {}", p.comm, p.id.pid, first.fd);
    if let Some(unit) = p.unit.as_deref().or(p.container.as_deref()) {
        cell.push(' ');
        cell.push_str(unit);
    }
    if s.owners.len() > 1 {
        cell.push_str(&format!(" +{} more", s.owners.len() - 1));
    }
    cell
}

/// A plain table: columns padded to their widest cell, the last column cut to `width`.
/// Every cell is [`escape`]d: a cell can never move the cursor or forge a row.
pub fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
    width: Option<usize>,
) -> io::Result<()> {
    let escaped: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell)).collect())
        .collect();
    let rows = &escaped;
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        let last = widths.len().saturating_sub(1);
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        let text = text.trim_end();
        match width {
            Some(max) if text.chars().count() > max => {
                let cut: String = text.chars().take(max.saturating_sub(1)).collect();
                writeln!(out, "{cut}…")
            }
            _ => writeln!(out, "{text}"),
        }
    };
    line(&mut header.iter().copied())?;
    for row in rows {
        line(&mut row.iter().map(|c| c.as_ref()))?;
    }
    Ok(())
}

/// The socket table of `scan`.
pub fn sockets_table(out: &mut dyn Write, snap: &Snapshot, width: Option<usize>) -> io::Result<()> {
    let rows: Vec<Vec<String>> = snap
        .sockets
        .iter()
        .map(|s| {
            let k = &s.socket;
            vec![
                snap.netns_name(k.netns).into_owned(),
                k.state.name().to_string(),
                k.local.to_string(),
                k.remote.to_string(),
                k.recv_q.to_string(),
                k.send_q.to_string(),
                age_cell(&s.age),
                s.age.source.name().to_string(),
                owners_cell(s, snap.unreadable_processes),
            ]
        })
        .collect();
    table(
        out,
        &[
            "NETNS", "STATE", "LOCAL", "REMOTE", "RECV-Q", "SEND-Q", "AGE", "AGE-FROM", "OWNER",
        ],
        &rows,
        width,
    )
}

pub fn sockets_json(out: &mut dyn Write, snap: &Snapshot) -> io::Result<()> {
    let by_id: HashMap<NetnsId, &Netns> = snap.namespaces.iter().map(|n| (n.id, n)).collect();
    // One reused buffer handed over in large chunks: serde_json's many small writes through
    // `dyn Write` cost more than the formatting itself (seen in a 100k-socket profile).
    let mut buf = Vec::with_capacity(128 * 1024);
    for s in &snap.sockets {
        let record = match by_id.get(&s.socket.netns) {
            Some(netns) => SocketRecord::new(s, netns),
            None => SocketRecord::new(s, &Netns::unnamed(s.socket.netns)),
        };
        json_line(&mut buf, "socket", &record)?;
        if buf.len() >= 64 * 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

/// One line of `scan --summary`: sockets per state × owner, with the oldest age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    pub state: TcpState,
    /// The unit, else the container, else the command, else `(orphan)` / `(unknown)`.
    pub owner: String,
    pub sockets: usize,
    pub oldest_age_secs: u64,
    pub oldest_age_is_lower_bound: bool,
    pub namespaces: usize,
}

pub fn summarize(snap: &Snapshot) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<(TcpState, String), (usize, Age, std::collections::BTreeSet<u64>)> =
        BTreeMap::new();
    for s in &snap.sockets {
        let owner = match s.owners.first() {
            Some(o) => o
                .process
                .unit
                .clone()
                .or_else(|| o.process.container.clone())
                .unwrap_or_else(|| o.process.comm.clone()),
            None if s.socket.inode.0 == 0 => "(orphan)".to_string(),
            None => "(unknown)".to_string(),
        };
        let entry = groups
            .entry((s.socket.state, owner))
            .or_insert((0, s.age, Default::default()));
        entry.0 += 1;
        if s.age.secs > entry.1.secs {
            entry.1 = s.age;
        }
        entry.2.insert(s.socket.netns.inode);
    }
    let mut rows: Vec<SummaryRow> = groups
        .into_iter()
        .map(|((state, owner), (sockets, oldest, ns))| SummaryRow {
            state,
            owner,
            sockets,
            oldest_age_secs: oldest.secs,
            oldest_age_is_lower_bound: oldest.lower_bound,
            namespaces: ns.len(),
        })
        .collect();
    // Oldest first, like the socket list: the longest-stuck owner is the first to look at.
    rows.sort_by(|a, b| {
        b.oldest_age_secs
            .cmp(&a.oldest_age_secs)
            .then(b.sockets.cmp(&a.sockets))
    });
    rows
}

pub fn summary_table(
    out: &mut dyn Write,
    rows: &[SummaryRow],
    width: Option<usize>,
) -> io::Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let age = Age {
                secs: r.oldest_age_secs,
                source: crate::model::AgeSource::Observed,
                lower_bound: r.oldest_age_is_lower_bound,
            };
            vec![
                r.state.name().to_string(),
                r.sockets.to_string(),
                age_cell(&age),
                r.namespaces.to_string(),
                r.owner.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["STATE", "SOCKETS", "OLDEST", "NETNS", "OWNER"],
        &cells,
        width,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_what_a_terminal_would_act_on() {
        for (raw, shown) in [
            ("java", "java"),
            ("ünïcode ok", "ünïcode ok"),
            ("a\nb", "a\\nb"),
            ("\u{1b}[2J\u{1b}[Hfake", "\\x1b[2J\\x1b[Hfake"),
            ("x\ty\r", "x\\ty\\r"),
            ("\u{7f}\u{85}", "\\x7f\\u{85}"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("back\\slash", "back\\\\slash"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
    }

    /// A hostile name cannot clear the screen or add a row: every cell is escaped.
    #[test]
    fn a_table_row_stays_one_line() {
        let mut out = Vec::new();
        let rows = vec![vec![
            "\u{1b}[2J\u{1b}[H fake\nX".to_string(),
            "1".to_string(),
        ]];
        table(&mut out, &["NAME", "N"], &rows, None).expect("table");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("\\x1b[2J\\x1b[H fake\\nX"), "{text}");
    }

    /// Regression (output-contract issue): `stat(/nonexistent): No such file or directory
    /// (os error 2): No such file or directory (os error 2)`.
    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let sys = crate::sys::SysError::new("stat(/nonexistent)", io);
        let err = anyhow::Error::new(sys).context("listing namespaces");
        let text = error_chain(err.as_ref());
        assert_eq!(
            text,
            "listing namespaces: stat(/nonexistent): No such file or directory (os error 2)"
        );
    }
}
