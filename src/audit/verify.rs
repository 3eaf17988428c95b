//! `audit verify`: walk the whole chain, across rotated files, and name the first record
//! that does not hold, telling a crash's torn final line apart from tampering.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::anchor::{anchor_name, checkpoint_name, Anchor, AuditKey, Checkpoint};
use super::read::{for_each_line, trail_files};
use super::record::{line_hash, open_line_with, LineError, NoteEvent, RecordKind, GENESIS_PREV};

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
    /// The trail is shorter than its anchor, or has none: records may have been removed
    /// from its end.
    Truncated { problem: String },
    /// The trail could not be read at all, or its records are sealed with a key that was
    /// not given.
    Unreadable { error: String },
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The key of a keyed trail; without it keyed records cannot be checked.
    pub key: Option<AuditKey>,
    /// Skip the anchor comparison (`--no-anchor`): check the chain alone.
    pub no_anchor: bool,
    /// Accept a trail that starts at this seq (a copy that starts later).
    pub from_seq: Option<u64>,
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
    /// The anchor's seq, when there is an anchor and it was compared.
    pub anchor_seq: Option<u64>,
    /// The trail starts after seq 1 because `audit prune` removed older files (checkpoint).
    pub pruned_before: Option<u64>,
    /// Seqs of `anchor` notes: where a writer found no anchor and started a new one.
    pub anchor_restarts: Vec<u64>,
    /// Records sealed with the key (keyed mode).
    pub keyed_records: u64,
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
            Some(VerifyFailure::Broken(_)) | Some(VerifyFailure::Truncated { .. }) => 1,
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
            Some(VerifyFailure::Truncated { problem }) => {
                writeln!(f, "audit trail {}: BROKEN", self.path.display())?;
                writeln!(f, "{problem}")?;
                write!(f, "{} records verify{range} in {files}", self.records)?;
            }
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
                match (self.anchor_seq, self.last_seq) {
                    (Some(a), Some(l)) if a == l => write!(f, "\nthe anchor agrees (seq {a})")?,
                    (Some(a), Some(l)) => write!(
                        f,
                        "\nthe anchor is {} record(s) behind (seq {a}): a writer stopped between writing and anchoring",
                        l - a
                    )?,
                    _ => {}
                }
                if let Some(seq) = self.pruned_before {
                    write!(f, "\nolder records were pruned: the trail starts at seq {seq} (checkpoint attested by a prune note)")?;
                }
                if self.keyed_records > 0 {
                    write!(
                        f,
                        "\n{} record(s) sealed with the audit key",
                        self.keyed_records
                    )?;
                }
                for seq in &self.anchor_restarts {
                    write!(
                        f,
                        "\nwarning: at seq {seq} a writer found no anchor and started a new one: records removed from the end before then would not be detected"
                    )?;
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

/// [`verify_with`] with the default options: anchor compared, no key, trail from seq 1.
pub fn verify(path: &Path) -> VerifyReport {
    verify_with(path, &VerifyOptions::default())
}

/// Verify the whole trail whose live file is `path`: every line parses and matches its own
/// seal, seq increases by one, and `prev` is the hash of the line before — across files;
/// the trail starts at seq 1 (or where a prune checkpoint or `from_seq` says); and it ends
/// where its anchor says (or later).
pub fn verify_with(path: &Path, options: &VerifyOptions) -> VerifyReport {
    let mut report = VerifyReport {
        path: path.to_path_buf(),
        files: Vec::new(),
        records: 0,
        first_seq: None,
        last_seq: None,
        head_hash: None,
        torn_tail: None,
        anchor_seq: None,
        pruned_before: None,
        anchor_restarts: Vec::new(),
        keyed_records: 0,
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
    let side = |name| path.with_file_name(name);
    let anchor: Option<Anchor> = if options.no_anchor {
        None
    } else {
        match read_json(&side(anchor_name(path))) {
            Ok(a) => a,
            Err(error) => {
                report.failure = Some(VerifyFailure::Unreadable { error });
                return report;
            }
        }
    };
    let checkpoint: Option<Checkpoint> = read_json(&side(checkpoint_name(path))).unwrap_or(None);
    let key = options.key.as_ref();
    report.files = files.clone();
    let mut prev_hash = GENESIS_PREV.to_string();
    let mut prev_seq: Option<u64> = None;
    let mut keyed_seen = false;
    let mut last_keyed = false;
    let mut anchor_hash_ok: Option<bool> = None;
    let mut prune_attests: Vec<(u64, String)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let last_file = index + 1 == files.len();
        let mut offset = 0u64;
        let mut failure: Option<VerifyFailure> = None;
        let read = for_each_line(file, |line, bytes, had_newline| {
            let line_offset = offset;
            offset += bytes.len() as u64 + u64::from(had_newline);
            let bad = |seq: Option<u64>, problem: String| {
                VerifyFailure::Broken(BadRecord {
                    file: file.clone(),
                    line,
                    seq,
                    problem,
                })
            };
            let torn_candidate = !had_newline && last_file;
            let opened = open_line_with(trim_nuls(bytes, torn_candidate), key);
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
                Err(e @ LineError::Keyed { .. }) => {
                    failure = Some(VerifyFailure::Unreadable {
                        error: format!("{}:{line}: {e}", file.display()),
                    });
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
            match prev_seq {
                None => {
                    let genesis = record.seq == 1 && record.prev == GENESIS_PREV;
                    let by_checkpoint = checkpoint
                        .as_ref()
                        .is_some_and(|c| c.seq == record.seq && c.prev == record.prev);
                    let from_seq = options.from_seq == Some(record.seq);
                    if by_checkpoint && !genesis && !from_seq {
                        report.pruned_before = Some(record.seq);
                    } else if !genesis && !from_seq {
                        let problem = if record.seq == 1 {
                            "prev of the first record is not 000…: the files or records before it were removed".to_string()
                        } else {
                            format!(
                                "the trail starts at seq {} with prev {}…, but a trail starts at seq 1: the files or records \
                                 before it were removed (for a copy that starts later, pass --from-seq {}; after \
                                 `audit prune` the checkpoint file {} is missing or does not match)",
                                record.seq,
                                &record.prev[..record.prev.len().min(12)],
                                record.seq,
                                side(checkpoint_name(path)).display()
                            )
                        };
                        failure = Some(bad(Some(record.seq), problem));
                        return ControlFlow::Break(());
                    }
                }
                Some(p) => {
                    if record.seq != p + 1 {
                        failure = Some(bad(
                            Some(record.seq),
                            format!(
                                "seq {} where {} was expected: records were removed, inserted or reordered",
                                record.seq,
                                p + 1
                            ),
                        ));
                        return ControlFlow::Break(());
                    }
                    if record.prev != prev_hash {
                        failure = Some(bad(
                            Some(record.seq),
                            "prev hash mismatch: the record before it was modified, or records before it were removed"
                                .to_string(),
                        ));
                        return ControlFlow::Break(());
                    }
                }
            }
            if record.key_id.is_some() {
                keyed_seen = true;
                report.keyed_records += 1;
            } else if keyed_seen && key.is_some() {
                failure = Some(bad(
                    Some(record.seq),
                    "not sealed with the audit key although earlier records are: the records from here on were replaced"
                        .to_string(),
                ));
                return ControlFlow::Break(());
            }
            last_keyed = record.key_id.is_some();
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
            if record.kind == RecordKind::Note {
                if let Some(note) = &record.note {
                    match note.event {
                        NoteEvent::Prune => {
                            if let Some(c) = &note.checkpoint {
                                prune_attests.push((c.seq, c.prev.clone()));
                            }
                        }
                        NoteEvent::Anchor => report.anchor_restarts.push(record.seq),
                        _ => {}
                    }
                }
            }
            prev_hash = line_hash(trim_nuls(bytes, torn_candidate));
            if let Some(a) = &anchor {
                if a.seq == record.seq {
                    anchor_hash_ok = Some(a.hash == prev_hash);
                }
            }
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
        if let Some(f) = failure {
            report.failure = Some(f);
            return report;
        }
    }
    if let Some(seq) = report.pruned_before {
        let first_prev = checkpoint
            .as_ref()
            .map(|c| c.prev.clone())
            .unwrap_or_default();
        if !prune_attests
            .iter()
            .any(|(s, p)| *s == seq && *p == first_prev)
        {
            report.failure = Some(VerifyFailure::Truncated {
                problem: format!(
                    "the trail starts at seq {seq} and a checkpoint file says older files were pruned, but no `prune` note in the trail attests it: files were removed and the checkpoint forged"
                ),
            });
            return report;
        }
    }
    if key.is_some() && report.records > 0 && !last_keyed {
        report.failure = Some(VerifyFailure::Truncated {
            problem: "the newest record is not sealed with the audit key: the end of the trail was replaced".into(),
        });
        return report;
    }
    if options.no_anchor {
        return report;
    }
    let last = report.last_seq.unwrap_or(0);
    match &anchor {
        None if report.records > 0 => {
            report.failure = Some(VerifyFailure::Truncated {
                problem: format!(
                    "no anchor file {}: nothing vouches for where the trail ends, so records removed from its end would go unnoticed \
                     (a trail written before anchors gets one with its next record; pass --no-anchor to check the chain alone)",
                    side(anchor_name(path)).display()
                ),
            });
        }
        None => {}
        Some(a) => {
            report.anchor_seq = Some(a.seq);
            if let Some(k) = key {
                if a.key_id.is_some() && !a.mac_holds(k) {
                    report.failure = Some(VerifyFailure::Truncated {
                        problem: "the anchor is not sealed with the audit key: it was rewritten"
                            .into(),
                    });
                    return report;
                }
            }
            if a.seq > last {
                let torn = if report.torn_tail.is_some() {
                    ", and the final line is cut short — not a crash, since the anchor says the record was written whole"
                } else {
                    ""
                };
                report.failure = Some(VerifyFailure::Truncated {
                    problem: format!(
                        "the trail ends at seq {last} but its anchor says seq {} was written: {} record(s) are missing from its end{torn}",
                        a.seq,
                        a.seq - last
                    ),
                });
            } else if anchor_hash_ok == Some(false) {
                report.failure = Some(VerifyFailure::Truncated {
                    problem: format!(
                        "record seq {} is not the one the anchor names: the trail was rewritten from there",
                        a.seq
                    ),
                });
            } else if anchor_hash_ok.is_none()
                && a.seq > 0
                && report.first_seq.is_some_and(|f| f <= a.seq)
            {
                report.failure = Some(VerifyFailure::Truncated {
                    problem: format!("the anchor names seq {}, which is not in the trail", a.seq),
                });
            }
        }
    }
    report
}

fn read_json<T: for<'de> serde::Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not a valid file ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
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
