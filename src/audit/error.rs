//! Audit errors, worded for the operator who must fix them: what failed, what it means
//! for the action at hand, and what to do.

use std::io;
use std::path::PathBuf;

use super::record::RecordKind;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A system call on the audit log failed while writing.
    #[error("audit log {}: {call} failed: {source}; {consequence} — {hint}", path.display(), hint = hint(source))]
    Write {
        path: PathBuf,
        /// `open`, `lock`, `write`, `fsync`, `truncate`, `rename`, …
        call: &'static str,
        #[source]
        source: io::Error,
        /// What this means for the action, e.g. "no action was taken".
        consequence: &'static str,
    },
    /// The last record of the trail does not verify: the writer will not extend the chain.
    #[error(
        "audit log {}: the last record (byte {offset}) is damaged: {problem}; refusing to extend a chain that \
         does not verify; {consequence} — run `sockwarden audit verify --audit-log {}`, then move the damaged \
         file aside to start a new trail",
        path.display(),
        path.display()
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        problem: String,
        consequence: &'static str,
    },
    /// The log's directory or file is unsafe to write (a symlink, missing, or writable by
    /// someone other than root).
    #[error("audit log: {source}; {consequence}")]
    Refused {
        #[source]
        source: crate::sys::files::FileError,
        consequence: &'static str,
    },
    /// The trail is shorter than its anchor says, or its end was rewritten.
    #[error(
        "audit log {}: {problem}; refusing to extend it; {consequence} — run `sockwarden audit verify --audit-log {}` \
         and investigate; to start over, move the trail and its `.head` file aside",
        path.display(),
        path.display()
    )]
    Truncated {
        path: PathBuf,
        problem: String,
        consequence: &'static str,
    },
    /// The trail's records are sealed with a key the writer does not have.
    #[error("audit log {}: {problem}; {consequence} — pass the trail's key with --audit-key (or SOCKWARDEN_AUDIT_KEY)", path.display())]
    Key {
        path: PathBuf,
        problem: String,
        consequence: &'static str,
    },
    /// The trail could not be read.
    #[error("cannot read audit log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Neither the live file nor any rotated file exists.
    #[error(
        "audit log {} does not exist: nothing has been recorded there yet, or --audit-log (or \
         SOCKWARDEN_AUDIT_LOG) points at the wrong file",
        path.display()
    )]
    NotFound { path: PathBuf },
}

impl AuditError {
    /// The errno behind the error, when there is one (28 = ENOSPC).
    pub fn errno(&self) -> Option<i32> {
        match self {
            AuditError::Write { source, .. } | AuditError::Read { source, .. } => {
                source.raw_os_error()
            }
            AuditError::Refused { source, .. } => source.errno(),
            AuditError::Damaged { .. }
            | AuditError::NotFound { .. }
            | AuditError::Truncated { .. }
            | AuditError::Key { .. } => None,
        }
    }

    pub(crate) fn write(
        path: PathBuf,
        call: &'static str,
        source: io::Error,
        kind: Option<RecordKind>,
    ) -> AuditError {
        AuditError::Write {
            path,
            call,
            source,
            consequence: consequence(kind),
        }
    }
}

/// What a failed write means for the caller; `None` when opening the log.
pub(crate) fn consequence(kind: Option<RecordKind>) -> &'static str {
    match kind {
        Some(RecordKind::Intent) => "no action was taken",
        Some(RecordKind::Outcome) => "the action was taken but its outcome is NOT recorded",
        Some(RecordKind::DryRun) | Some(RecordKind::Note) => "the record was not written",
        None => "nothing can be acted on until the audit log is writable",
    }
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "free space or point --audit-log elsewhere",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "run as root, or fix the permissions of the file and its directory, or point --audit-log at a writable path"
        }
        Some(libc::EROFS) => "the filesystem is read-only: point --audit-log at a writable path",
        Some(libc::EIO) => "the disk reported an I/O error: check `dmesg` and the disk, or point --audit-log elsewhere",
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => "check that the directory of --audit-log exists and is a directory",
        _ => "fix the cause or point --audit-log elsewhere",
    }
}
