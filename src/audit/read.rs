//! Reading a trail: its files in order (rotated, then live) and a tolerant record reader
//! for `show`, `summary` and the engine's history.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::error::AuditError;
use super::record::{AuditRecord, RecordKind};

/// The name a live file is rotated to: `<live name>.<first seq, 20 digits>`, so that names
/// sort in chain order.
pub fn rotated_name(live: &Path, first_seq: u64) -> PathBuf {
    let name = live
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    live.with_file_name(format!("{name}.{first_seq:020}"))
}

/// The rotated files of the trail whose live file is `live`, oldest first.
pub fn rotated_files(live: &Path) -> io::Result<Vec<PathBuf>> {
    let Some(name) = live.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let dir = match live.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let prefix = format!("{name}.");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if is_rotated(&file_name, &prefix) {
            found.push(file_name);
        }
    }
    found.sort();
    Ok(found.into_iter().map(|n| live.with_file_name(n)).collect())
}

/// The names of the rotated files of live file `live` in `dir`, oldest first.
pub(crate) fn rotated_names(
    dir: &crate::sys::files::SafeDir,
    live: &std::ffi::OsStr,
) -> io::Result<Vec<std::ffi::OsString>> {
    let prefix = format!("{}.", live.to_string_lossy());
    let mut found: Vec<std::ffi::OsString> = dir
        .names()?
        .into_iter()
        .filter(|n| is_rotated(&n.to_string_lossy(), &prefix))
        .collect();
    found.sort();
    Ok(found)
}

fn is_rotated(file_name: &str, prefix: &str) -> bool {
    file_name
        .strip_prefix(prefix)
        .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Every file of the trail in chain order: rotated files, then the live file if it exists.
pub fn trail_files(live: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let read_err = |source| AuditError::Read {
        path: live.to_path_buf(),
        source,
    };
    let mut files = rotated_files(live).map_err(read_err)?;
    match std::fs::metadata(live) {
        Ok(_) => files.push(live.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_err(e)),
    }
    if files.is_empty() {
        return Err(AuditError::NotFound {
            path: live.to_path_buf(),
        });
    }
    Ok(files)
}

/// Call `each(line_number, line_without_newline, had_newline)` for every line of `file`.
pub(crate) fn for_each_line(
    file: &Path,
    each: impl FnMut(u64, &[u8], bool) -> std::ops::ControlFlow<()>,
) -> Result<(), AuditError> {
    for_each_line_from(file, 0, each).map(|_| ())
}

/// [`for_each_line`] from byte `start` of `file` (line numbers count from there). Returns
/// the file's inode and where its last whole line read ends: reading on from there gives
/// the lines appended since (a torn last line is read again then, whole).
pub(crate) fn for_each_line_from(
    file: &Path,
    start: u64,
    mut each: impl FnMut(u64, &[u8], bool) -> std::ops::ControlFlow<()>,
) -> Result<(u64, u64), AuditError> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let err = |source| AuditError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mut opened = File::open(file).map_err(err)?;
    let inode = opened.metadata().map_err(err)?.ino();
    opened.seek(SeekFrom::Start(start)).map_err(err)?;
    let mut reader = BufReader::with_capacity(256 * 1024, opened);
    let mut buf = Vec::new();
    let mut number = 0u64;
    let mut end = start;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(err)?;
        if n == 0 {
            return Ok((inode, end));
        }
        number += 1;
        let had_newline = buf.last() == Some(&b'\n');
        if had_newline {
            buf.pop();
            end += n as u64;
        }
        if each(number, &buf, had_newline).is_break() {
            return Ok((inode, end));
        }
    }
}

/// A line the tolerant reader could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub file: PathBuf,
    pub line: u64,
    pub reason: String,
}

/// Every readable record of a trail, in order, batch records expanded into one entry per
/// socket and each outcome joined to its intent (its rule, action and target filled in:
/// outcomes on disk carry only the result). Not verified: see [`super::verify`].
#[derive(Debug, Clone, Default)]
pub struct Trail {
    pub files: Vec<PathBuf>,
    pub records: Vec<AuditRecord>,
    /// Lines that did not parse (a torn tail, damage): reported, never fatal.
    pub skipped: Vec<SkippedLine>,
}

/// Read the whole trail (rotated files and the live file) tolerantly.
pub fn read_trail(path: &Path) -> Result<Trail, AuditError> {
    let files = trail_files(path)?;
    read_files(files)
}

pub(crate) fn read_files(files: Vec<PathBuf>) -> Result<Trail, AuditError> {
    let mut trail = Trail {
        files: files.clone(),
        ..Trail::default()
    };
    for file in &files {
        for_each_line(file, |line, bytes, had_newline| {
            match serde_json::from_slice::<AuditRecord>(bytes) {
                Ok(r) => trail.records.extend(r.entries()),
                Err(e) => trail.skipped.push(SkippedLine {
                    file: file.clone(),
                    line,
                    reason: if had_newline {
                        e.to_string()
                    } else {
                        format!("torn final line: {e}")
                    },
                }),
            }
            std::ops::ControlFlow::Continue(())
        })?;
    }
    join_outcomes(&mut trail.records);
    Ok(trail)
}

/// Records as readers see them: batches expanded, outcomes joined to their intents (what
/// [`read_trail`] does to the records of the files).
pub fn joined(records: Vec<AuditRecord>) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = records.into_iter().flat_map(AuditRecord::entries).collect();
    join_outcomes(&mut out);
    out
}

/// Fill each outcome's rule, digest, action, target, unit, process and why from the intent
/// it answers (when the outcome does not carry them itself, as records before this version
/// did).
fn join_outcomes(records: &mut [AuditRecord]) {
    let intents: std::collections::HashMap<(u64, Option<u32>), usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == RecordKind::Intent)
        .filter_map(|(i, r)| Some((r.answer_key()?, i)))
        .collect();
    for i in 0..records.len() {
        if records[i].kind != RecordKind::Outcome || records[i].action.is_some() {
            continue;
        }
        let Some(&n) = records[i].answer_key().and_then(|k| intents.get(&k)) else {
            continue;
        };
        let intent = records[n].clone();
        let r = &mut records[i];
        r.rule = intent.rule;
        r.policy_digest = intent.policy_digest;
        r.action = intent.action;
        r.escalated = intent.escalated;
        r.target = intent.target;
        r.unit = intent.unit;
        r.process = intent.process;
        r.why = intent.why;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_sort_in_chain_order_and_ignore_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("audit.jsonl");
        for seq in [120u64, 5, 1000] {
            std::fs::write(rotated_name(&live, seq), "").expect("write");
        }
        std::fs::write(dir.path().join("audit.jsonl.torn-5-abc"), "").expect("write");
        std::fs::write(dir.path().join("audit.jsonl.1.gz"), "").expect("write");
        let names: Vec<String> = rotated_files(&live)
            .expect("list")
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl.00000000000000000005",
                "audit.jsonl.00000000000000000120",
                "audit.jsonl.00000000000000001000"
            ]
        );
        assert!(matches!(
            trail_files(&dir.path().join("other.jsonl")),
            Err(AuditError::NotFound { .. })
        ));
    }
}
