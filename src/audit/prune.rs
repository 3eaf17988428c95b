//! Retention: `audit prune --before TIME` removes whole rotated files whose records are all
//! older than TIME, and leaves a checkpoint so that what remains still verifies: a `prune`
//! note in the chain (sealed like any record) and the `.start` file, both naming the first
//! record kept (its seq and prev).

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::anchor::{self, Checkpoint};
use super::error::AuditError;
use super::read::rotated_names;
use super::record::{Actor, AuditRecord, Mode, NewRecord, NoteEvent, StartPoint};
use super::writer::AuditLog;

/// What `audit prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub removed: Vec<PathBuf>,
    /// Records in the removed files.
    pub removed_records: u64,
    /// The seq the trail starts at now (unchanged when nothing was removed).
    pub starts_at: Option<u64>,
    /// The seq of the `prune` note, when one was written.
    pub note_seq: Option<u64>,
}

/// Remove the rotated files of `log` whose newest record is older than `before`. The live
/// file is never removed, nor the newest rotated file while the live file is empty (it
/// holds the head the next record chains to).
pub fn prune(
    log: &mut AuditLog,
    before: SystemTime,
    actor: Actor,
    mode: Mode,
) -> Result<PruneReport, AuditError> {
    let path = log.path().to_path_buf();
    let read_err = |source| AuditError::Read {
        path: path.clone(),
        source,
    };
    let rotated = rotated_names(log.dir(), log.name()).map_err(read_err)?;
    let live_records = first_record(log, log.name())?.is_some();
    let mut removable = Vec::new();
    for (i, name) in rotated.iter().enumerate() {
        let newest_rotated = i + 1 == rotated.len();
        if newest_rotated && !live_records {
            break;
        }
        let Some(last) = last_record(log, name)? else {
            break;
        };
        if last.timestamp().map_or(true, |t| t >= before) {
            break;
        }
        removable.push((name.clone(), last.seq));
    }
    let mut report = PruneReport::default();
    let Some((_, last_removed_seq)) = removable.last().cloned() else {
        return Ok(report);
    };
    // The first record kept: the next rotated file's first, or the live file's.
    let kept = rotated
        .get(removable.len())
        .cloned()
        .unwrap_or_else(|| log.name().to_os_string());
    let Some(first_kept) = first_record(log, &kept)? else {
        return Ok(report);
    };
    let start = StartPoint {
        seq: first_kept.seq,
        prev: first_kept.prev.clone(),
    };
    let first_removed_seq = match first_record(log, &removable[0].0)? {
        Some(r) => r.seq,
        None => 1,
    };
    let removed_names: Vec<String> = removable
        .iter()
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .collect();
    let mut note = NewRecord::note(
        actor,
        mode,
        NoteEvent::Prune,
        format!(
            "pruned {} rotated file(s) holding seq {first_removed_seq}..{last_removed_seq} (every record older than {}): {}; the trail now starts at seq {}",
            removable.len(),
            humantime::format_rfc3339_seconds(before),
            removed_names.join(", "),
            start.seq
        ),
    );
    if let Some(n) = note.note.as_mut() {
        n.checkpoint = Some(start.clone());
    }
    // First the note (in the chain, fsynced), then the checkpoint file, then the removal:
    // a crash part way leaves a trail that still verifies, or one that `audit prune` run
    // again finishes.
    let written = log.append(note)?;
    let checkpoint = Checkpoint {
        seq: start.seq,
        prev: start.prev,
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        removed: removed_names,
    };
    let checkpoint_name = anchor::checkpoint_name(&path);
    anchor::write_side(log.dir(), &checkpoint_name, &checkpoint).map_err(|e| {
        AuditError::write(
            anchor::side_path(&path, &checkpoint_name),
            "write of the checkpoint",
            e,
            None,
        )
    })?;
    for (name, _) in &removable {
        log.dir()
            .remove(name)
            .map_err(|e| AuditError::write(log.dir().join(name), "remove (prune)", e, None))?;
        report.removed.push(log.dir().join(name));
    }
    log.dir()
        .sync()
        .map_err(|e| AuditError::write(path.clone(), "fsync of the directory", e, None))?;
    report.removed_records = last_removed_seq + 1 - first_removed_seq;
    report.starts_at = Some(checkpoint.seq);
    report.note_seq = Some(written.seq);
    Ok(report)
}

fn first_record(log: &AuditLog, name: &std::ffi::OsStr) -> Result<Option<AuditRecord>, AuditError> {
    let file = log
        .dir()
        .open_read(name)
        .map_err(|source| AuditError::Read {
            path: log.dir().join(name),
            source,
        })?;
    let line = super::writer::read_first_line(&file).map_err(|source| AuditError::Read {
        path: log.dir().join(name),
        source,
    })?;
    Ok(serde_json::from_slice(&line).ok())
}

fn last_record(log: &AuditLog, name: &std::ffi::OsStr) -> Result<Option<AuditRecord>, AuditError> {
    let path = log.dir().join(name);
    let file = log
        .dir()
        .open_read(name)
        .map_err(|source| AuditError::Read {
            path: path.clone(),
            source,
        })?;
    let line =
        super::writer::read_last_line(&file).map_err(|source| AuditError::Read { path, source })?;
    Ok(line.and_then(|l| serde_json::from_slice(&l).ok()))
}
