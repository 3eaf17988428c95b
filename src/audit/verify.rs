//! `audit verify`: walk the whole chain, across rotated files, and name the first record
//! that does not hold, telling a crash's torn final line apart from tampering.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::read::{for_each_line, trail_files};
use super::record::{line_hash, open_line, LineError, GENESIS_PREV};

/// The first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    /// The record's seq, when the line still parses.
    pub seq: Option<u64>,
    pub problem: String,
}

/// A final line without its newline at the end of the live file: a crash mid-write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    pub file: PathBuf,
    pub line: u64,
    pub offset: u64,
    pub len: u64,
    /// The torn line is a whole record that only lacks its newline (it verifies and counts).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum VerifyFailure {
    /// The chain is broken: tampering or damage.
    Broken(BadRecord),
    /// The trail could not be read at all.
    Unreadable { error: String },
}

/// The result of [`verify`]. `failure == None` means every record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub files: Vec<PathBuf>,
    /// Records that verified, up to the first failure.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last good record's line: keep it elsewhere to anchor the chain.
    pub head_hash: Option<String>,
    pub torn_tail: Option<TornTail>,
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.failure.is_none()
    }

    /// 0 = chain intact (a torn tail included), 1 = broken or tampered, 2 = cannot read.
    pub fn exit_code(&self) -> i32 {
        match self.failure {
            None => 0,
            Some(VerifyFailure::Broken(_)) => 1,
            Some(VerifyFailure::Unreadable { .. }) => 2,
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = match self.files.len() {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
            _ => String::new(),
        };
        match &self.failure {
            Some(VerifyFailure::Unreadable { error }) => return write!(f, "{error}"),
            Some(VerifyFailure::Broken(bad)) => {
                let seq = bad.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
                writeln!(f, "audit trail {}: BROKEN", self.path.display())?;
                writeln!(
                    f,
                    "first bad record: {}:{}{seq}: {}",
                    bad.file.display(),
                    bad.line,
                    bad.problem
                )?;
                write!(f, "{} records before it verify{range}", self.records)?;
            }
            None => {
                write!(
                    f,
                    "audit trail {}: intact: {} records{range} in {files}",
                    self.path.display(),
                    self.records
                )?;
                if let Some(h) = &self.head_hash {
                    write!(f, "\nhead {h}")?;
                }
            }
        }
        if let Some(t) = &self.torn_tail {
            if t.complete {
                write!(
                    f,
                    "\nfinal line {}:{} lacks its newline (crash mid-write); the record itself verifies and the next \
                     write completes it",
                    t.file.display(),
                    t.line
                )?;
            } else {
                write!(
                    f,
                    "\ntorn final line {}:{} ({} bytes at byte {}, crash mid-write); {} records before it verify; the \
                     next write moves it into a `repair` note",
                    t.file.display(),
                    t.line,
                    t.len,
                    t.offset,
                    self.records
                )?;
            }
        }
        Ok(())
    }
}

/// Verify the whole trail whose live file is `path`: every line parses and matches its own
/// hash, seq increases by one, and `prev` is the hash of the line before — across files.
pub fn verify(path: &Path) -> VerifyReport {
    let mut report = VerifyReport {
        path: path.to_path_buf(),
        files: Vec::new(),
        records: 0,
        first_seq: None,
        last_seq: None,
        head_hash: None,
        torn_tail: None,
        failure: None,
    };
    let files = match trail_files(path) {
        Ok(f) => f,
        Err(e) => {
            report.failure = Some(VerifyFailure::Unreadable {
                error: e.to_string(),
            });
            return report;
        }
    };
    report.files = files.clone();
    let mut prev_hash = GENESIS_PREV.to_string();
    let mut prev_seq: Option<u64> = None;
    for (index, file) in files.iter().enumerate() {
        let last_file = index + 1 == files.len();
        let mut offset = 0u64;
        let mut failure: Option<BadRecord> = None;
        let read = for_each_line(file, |line, bytes, had_newline| {
            let line_offset = offset;
            offset += bytes.len() as u64 + u64::from(had_newline);
            let bad = |seq: Option<u64>, problem: String| BadRecord {
                file: file.clone(),
                line,
                seq,
                problem,
            };
            let torn_candidate = !had_newline && last_file;
            let opened = open_line(trim_nuls(bytes, torn_candidate));
            let record = match opened {
                Ok(r) => r,
                Err(LineError::Parse { eof: true, .. }) if torn_candidate => {
                    report.torn_tail = Some(torn(file, line, line_offset, bytes, false));
                    return ControlFlow::Break(());
                }
                Err(_) if torn_candidate && trim_nuls(bytes, true).is_empty() => {
                    report.torn_tail = Some(torn(file, line, line_offset, bytes, false));
                    return ControlFlow::Break(());
                }
                Err(e) => {
                    let seq = serde_json::from_slice::<serde_json::Value>(bytes)
                        .ok()
                        .and_then(|v| v.get("seq").and_then(|s| s.as_u64()));
                    let problem = if bytes.is_empty() {
                        "empty line".to_string()
                    } else {
                        e.to_string()
                    };
                    failure = Some(bad(seq, problem));
                    return ControlFlow::Break(());
                }
            };
            let expected_seq = prev_seq.map_or(1, |s| s + 1);
            if record.seq != expected_seq {
                let problem = match prev_seq {
                    None => format!(
                        "the trail starts at seq {} with prev {}…, but a trail starts at seq 1: the files or records \
                         before it were removed",
                        record.seq,
                        &record.prev[..record.prev.len().min(12)]
                    ),
                    Some(_) => format!(
                        "seq {} where {expected_seq} was expected: records were removed, inserted or reordered",
                        record.seq
                    ),
                };
                failure = Some(bad(Some(record.seq), problem));
                return ControlFlow::Break(());
            }
            if record.prev != prev_hash {
                let problem = if prev_seq.is_none() {
                    "prev of the first record is not 000…: the files or records before it were removed".to_string()
                } else {
                    "prev hash mismatch: the record before it was modified, or records before it were removed"
                        .to_string()
                };
                failure = Some(bad(Some(record.seq), problem));
                return ControlFlow::Break(());
            }
            if !had_newline {
                if !torn_candidate {
                    failure = Some(bad(
                        Some(record.seq),
                        "a rotated file ends without a newline: the file was modified".to_string(),
                    ));
                    return ControlFlow::Break(());
                }
                report.torn_tail = Some(torn(file, line, line_offset, bytes, true));
            }
            prev_hash = line_hash(trim_nuls(bytes, torn_candidate));
            prev_seq = Some(record.seq);
            report.first_seq.get_or_insert(record.seq);
            report.last_seq = Some(record.seq);
            report.head_hash = Some(prev_hash.clone());
            report.records += 1;
            ControlFlow::Continue(())
        });
        if let Err(e) = read {
            report.failure = Some(VerifyFailure::Unreadable {
                error: e.to_string(),
            });
            return report;
        }
        if let Some(bad) = failure {
            report.failure = Some(VerifyFailure::Broken(bad));
            return report;
        }
    }
    report
}

/// NULs at the end of a final line are what a crash leaves on some filesystems.
fn trim_nuls(bytes: &[u8], torn_candidate: bool) -> &[u8] {
    if !torn_candidate {
        return bytes;
    }
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    &bytes[..end]
}

fn torn(file: &Path, line: u64, offset: u64, bytes: &[u8], complete: bool) -> TornTail {
    TornTail {
        file: file.to_path_buf(),
        line,
        offset,
        len: bytes.len() as u64,
        complete,
    }
}
