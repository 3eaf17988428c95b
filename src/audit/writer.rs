//! The appender: one locked, fsynced write per record (or per batch), torn-tail repair and
//! rotation, safe with several writers (the daemon and a one-off `clean`) on the same file.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg, RenameFlags};

use super::error::AuditError;
use super::read::{rotated_files, rotated_name};
use super::record::{
    line_hash, open_line, seal, sha256_hex, Actor, AuditRecord, Mode, NewRecord, NoteEvent,
    RecordKind, TornBytes, GENESIS_PREV,
};

/// Rotate the live file once it has grown past this many bytes.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;

/// How far back the tail reader reads at a time.
const TAIL_CHUNK: u64 = 16 * 1024;

/// An append handle on an audit trail. Cheap: the file is opened and locked per append, so
/// a rotation or repair by another writer is always seen.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    host: String,
    max_size: u64,
}

/// The last good record: the next one continues from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_PREV.to_string(),
        }
    }
}

/// The end of a file: the last complete line and whatever follows it without a newline.
#[derive(Debug, Default)]
struct Tail {
    /// (offset, bytes without the newline)
    last: Option<(u64, Vec<u8>)>,
    /// (offset, bytes): a final line without its newline, from a crash mid-write.
    torn: Option<(u64, Vec<u8>)>,
}

impl AuditLog {
    /// Open (creating the directory, mode 0750, and the file, mode 0640) the live file of a
    /// trail. Fails when the file cannot be opened for appending.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let err = |call, e| AuditError::write(path.to_path_buf(), call, e, None);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(|e| err("mkdir", e))?;
            }
        }
        open_live(path).map_err(|e| err("open", e))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(AuditLog {
            path: path.to_path_buf(),
            host,
            max_size: DEFAULT_MAX_SIZE,
        })
    }

    /// Rotate once the live file passes `bytes` (default [`DEFAULT_MAX_SIZE`]).
    pub fn with_max_size(mut self, bytes: u64) -> AuditLog {
        self.max_size = bytes.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record: lock, find the chain head (repairing a torn tail), rotate if the
    /// file is full, write the line in one `write(2)` and fsync it. When this returns `Err`
    /// for an intent, the caller must not act; the error says so and how to fix it.
    pub fn append(&mut self, record: NewRecord) -> Result<AuditRecord, AuditError> {
        let kind = record.kind;
        let (file, head) = self.lock_live(kind, &record.actor, record.mode)?;
        let mut rec = record.into_record(
            head.seq + 1,
            SystemTime::now(),
            self.host.clone(),
            head.hash,
        );
        self.write_record(&file, &mut rec, kind)?;
        Ok(rec)
    }

    /// Append `records` as one group commit: one lock, the records chained in order and
    /// written with one `write(2)` (more only if the kernel writes short), then ONE fsync.
    /// All or nothing: on `Err` whatever part of the batch reached the file is truncated
    /// away and none of it counts as written (for intents: act on none of them). Rotation
    /// happens only between batches, so a batch may carry the live file past the rotation
    /// size. An empty batch writes nothing.
    pub fn append_batch(
        &mut self,
        records: Vec<NewRecord>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        // Errors are worded for the first record's kind (a batch is intents or outcomes).
        let kind = first.kind;
        let (file, head) = self.lock_live(kind, &first.actor, first.mode)?;
        let time = SystemTime::now();
        let mut bytes = Vec::with_capacity(records.len() * 1024);
        let mut written = Vec::with_capacity(records.len());
        let (mut seq, mut prev) = (head.seq, head.hash);
        for record in records {
            seq += 1;
            let mut rec = record.into_record(seq, time, self.host.clone(), prev);
            let line =
                seal(&mut rec).map_err(|e| self.werr("serialize", kind)(io::Error::other(e)))?;
            prev = line_hash(&line);
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
            written.push(rec);
        }
        self.write_synced(&file, &bytes, kind)?;
        Ok(written)
    }

    fn werr(&self, call: &'static str, kind: RecordKind) -> impl Fn(io::Error) -> AuditError + '_ {
        move |e| AuditError::write(self.path.clone(), call, e, Some(kind))
    }

    /// Open and lock the current live file, repaired and rotated as needed, with its head.
    fn lock_live(
        &self,
        kind: RecordKind,
        actor: &Actor,
        mode: Mode,
    ) -> Result<(Flock<File>, Head), AuditError> {
        // Each retry means another writer renamed the file under us; a handful is plenty.
        for _ in 0..64 {
            let file = open_live(&self.path).map_err(self.werr("open", kind))?;
            let file = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| self.werr("flock", kind)(io::Error::from(errno)))?;
            let ours = file.metadata().map_err(self.werr("fstat", kind))?;
            match fs::metadata(&self.path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.werr("stat", kind)(e)),
            }
            let head = self.head_repairing(&file, ours.len(), kind, actor, mode)?;
            let len = file.metadata().map_err(self.werr("fstat", kind))?.len();
            if len >= self.max_size {
                self.rotate(&file, kind)?;
                continue;
            }
            if len == 0 {
                // A file just created (here or by another writer): make its name durable.
                sync_dir(&self.path).map_err(self.werr("fsync of the directory", kind))?;
            }
            return Ok((file, head));
        }
        Err(self.werr("open", kind)(io::Error::other(
            "the live file kept being replaced by other writers",
        )))
    }

    /// The head of the chain, after repairing a torn tail of the live file.
    fn head_repairing(
        &self,
        file: &File,
        len: u64,
        kind: RecordKind,
        actor: &Actor,
        mode: Mode,
    ) -> Result<Head, AuditError> {
        let tail = read_tail(file, len).map_err(self.werr("read", kind))?;
        let mut head = match &tail.last {
            Some((offset, line)) => self.head_of(*offset, line, kind)?,
            None => self.head_of_rotated(kind)?,
        };
        if let Some((offset, torn)) = tail.torn {
            head = self.repair(file, offset, &torn, head, kind, actor, mode)?;
        }
        Ok(head)
    }

    fn head_of(&self, offset: u64, line: &[u8], kind: RecordKind) -> Result<Head, AuditError> {
        match open_line(line) {
            Ok(r) => Ok(Head {
                seq: r.seq,
                hash: line_hash(line),
            }),
            Err(e) => Err(AuditError::Damaged {
                path: self.path.clone(),
                offset,
                problem: e.to_string(),
                consequence: super::error::consequence(Some(kind)),
            }),
        }
    }

    /// The head when the live file holds no complete record: the newest rotated file's last
    /// record, or the genesis.
    fn head_of_rotated(&self, kind: RecordKind) -> Result<Head, AuditError> {
        let rotated = rotated_files(&self.path).map_err(self.werr("read directory", kind))?;
        let Some(newest) = rotated.last() else {
            return Ok(Head::genesis());
        };
        let file = File::open(newest)
            .map_err(|e| AuditError::write(newest.clone(), "open", e, Some(kind)))?;
        let len = file.metadata().map_err(self.werr("fstat", kind))?.len();
        let tail = read_tail(&file, len)
            .map_err(|e| AuditError::write(newest.clone(), "read", e, Some(kind)))?;
        match tail.last {
            Some((offset, line)) => match open_line(&line) {
                Ok(r) => Ok(Head {
                    seq: r.seq,
                    hash: line_hash(&line),
                }),
                Err(e) => Err(AuditError::Damaged {
                    path: newest.clone(),
                    offset,
                    problem: e.to_string(),
                    consequence: super::error::consequence(Some(kind)),
                }),
            },
            None => Ok(Head::genesis()),
        }
    }

    /// Deal with a final line that has no newline (a crash mid-write). A complete record that
    /// continues the chain only gets its newline back. Anything else is saved byte for byte
    /// to a side file `<log>.torn-<offset>-<sha256 prefix>`, truncated away, and described in
    /// a `note` record (event `repair`) carrying its length, sha256 and text.
    #[allow(clippy::too_many_arguments)]
    fn repair(
        &self,
        file: &File,
        offset: u64,
        torn: &[u8],
        head: Head,
        kind: RecordKind,
        actor: &Actor,
        mode: Mode,
    ) -> Result<Head, AuditError> {
        // ext4 may leave NULs where a write did not reach the disk before a crash.
        let trimmed_len = torn.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let trimmed = &torn[..trimmed_len];
        if let Ok(r) = open_line(trimmed) {
            if r.seq == head.seq + 1 && r.prev == head.hash {
                file.set_len(offset + trimmed_len as u64)
                    .map_err(self.werr("truncate", kind))?;
                write_once(file, offset + trimmed_len as u64, b"\n")
                    .map_err(self.werr("write", kind))?;
                file.sync_data().map_err(self.werr("fsync", kind))?;
                return Ok(Head {
                    seq: r.seq,
                    hash: line_hash(trimmed),
                });
            }
        }
        let sha = sha256_hex(torn);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let side = self
            .path
            .with_file_name(format!("{name}.torn-{offset}-{}", &sha[..12]));
        save_durably(&side, torn)
            .map_err(|e| AuditError::write(side.clone(), "save torn bytes", e, Some(kind)))?;
        file.set_len(offset).map_err(self.werr("truncate", kind))?;
        file.sync_data().map_err(self.werr("fsync", kind))?;
        let mut note = NewRecord::note(
            actor.clone(),
            mode,
            NoteEvent::Repair,
            format!(
                "torn final line ({} bytes at byte {offset}, a crash mid-write) moved out of the chain; its exact \
                 bytes are in {}",
                torn.len(),
                side.display()
            ),
        );
        if let Some(n) = note.note.as_mut() {
            n.torn = Some(TornBytes {
                file: self.path.display().to_string(),
                offset,
                len: torn.len() as u64,
                sha256: sha,
                text: String::from_utf8_lossy(torn).into_owned(),
                saved_to: side.display().to_string(),
            });
        }
        let mut rec = note.into_record(
            head.seq + 1,
            SystemTime::now(),
            self.host.clone(),
            head.hash,
        );
        let hash = self.write_record(file, &mut rec, kind)?;
        Ok(Head { seq: rec.seq, hash })
    }

    /// Seal `rec`, write its line in one `write(2)` at the end of `file` and fsync; returns
    /// the line's hash (the next record's `prev`).
    fn write_record(
        &self,
        file: &File,
        rec: &mut AuditRecord,
        kind: RecordKind,
    ) -> Result<String, AuditError> {
        let mut line = seal(rec).map_err(|e| self.werr("serialize", kind)(io::Error::other(e)))?;
        let hash = line_hash(&line);
        line.push(b'\n');
        self.write_synced(file, &line, kind)?;
        Ok(hash)
    }

    /// Write whole lines at the end of `file` and fsync them. On failure the file is cut
    /// back to where it was, so that nothing the caller is told failed stays in the chain.
    fn write_synced(&self, file: &File, bytes: &[u8], kind: RecordKind) -> Result<(), AuditError> {
        let len = file.metadata().map_err(self.werr("fstat", kind))?.len();
        write_once(file, len, bytes).map_err(self.werr("write", kind))?;
        if let Err(e) = file.sync_data() {
            // Best effort: the caller treats these records as unwritten either way.
            let _ = file.set_len(len);
            let _ = file.sync_data();
            return Err(self.werr("fsync", kind)(e));
        }
        Ok(())
    }

    /// Rename the full live file to `<log>.<first seq, 20 digits>` so the names sort in order.
    fn rotate(&self, file: &File, kind: RecordKind) -> Result<(), AuditError> {
        let first = read_first_line(file).map_err(self.werr("read", kind))?;
        let seq = match open_line(&first) {
            Ok(r) => r.seq,
            Err(e) => {
                return Err(AuditError::Damaged {
                    path: self.path.clone(),
                    offset: 0,
                    problem: format!("cannot rotate: first record: {e}"),
                    consequence: super::error::consequence(Some(kind)),
                })
            }
        };
        let rotated = rotated_name(&self.path, seq);
        let dir = open_dir(&self.path).map_err(self.werr("open directory", kind))?;
        let (Some(from), Some(to)) = (self.path.file_name(), rotated.file_name()) else {
            return Err(self.werr("rename", kind)(io::Error::other(
                "audit log path has no file name",
            )));
        };
        // NOREPLACE: never overwrite an existing rotated file.
        nix::fcntl::renameat2(&dir, from, &dir, to, RenameFlags::RENAME_NOREPLACE).map_err(
            |errno| {
                AuditError::write(
                    rotated.clone(),
                    "rename (rotation)",
                    io::Error::from(errno),
                    Some(kind),
                )
            },
        )?;
        dir.sync_all()
            .map_err(self.werr("fsync of the directory", kind))
    }
}

fn open_live(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

fn open_dir(path: &Path) -> io::Result<File> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir),
        None => File::open("."),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    open_dir(path)?.sync_all()
}

/// One `write(2)` of `bytes` at the end of `file` (opened O_APPEND, at length `len`), more
/// only if the kernel writes short. A failure part way (disk full) is undone by truncating
/// back to `len`: no partial line is left.
fn write_once(file: &File, len: u64, bytes: &[u8]) -> io::Result<()> {
    let mut f = file;
    let written = loop {
        match f.write(bytes) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if written < bytes.len() {
        // Try the rest once to learn the real errno; either way leave no partial line.
        if let Err(e) = f.write_all(&bytes[written..]) {
            let _ = file.set_len(len);
            return Err(e);
        }
    }
    Ok(())
}

fn save_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(path)
}

fn read_first_line(file: &File) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut chunk = vec![0u8; TAIL_CHUNK as usize];
        let n = file.read_at(&mut chunk, offset)?;
        if n == 0 {
            return Ok(out);
        }
        chunk.truncate(n);
        if let Some(p) = chunk.iter().position(|b| *b == b'\n') {
            out.extend_from_slice(&chunk[..p]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        offset += n as u64;
    }
}

/// Read back from the end of `file` (of length `len`) just far enough to find the last
/// complete line and any torn bytes after it; never reads the whole file unless it must.
fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut newlines = buf.iter().rev().filter(|b| **b == b'\n');
        let enough = newlines.next().is_some() && newlines.next().is_some();
        if enough || start == 0 {
            break;
        }
        let from = start.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let mut tail = Tail::default();
    match buf.iter().rposition(|b| *b == b'\n') {
        None => {
            if !buf.is_empty() {
                tail.torn = Some((start, buf));
            }
        }
        Some(end) => {
            if end + 1 < buf.len() {
                tail.torn = Some((start + end as u64 + 1, buf[end + 1..].to_vec()));
            }
            let begin = buf[..end]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1);
            tail.last = Some((start + begin as u64, buf[begin..end].to_vec()));
        }
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_last_line_and_torn_bytes_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let long = "x".repeat(40_000);
        fs::write(&p, format!("a\n{long}\nzz")).expect("write");
        let f = File::open(&p).expect("open");
        let len = f.metadata().expect("meta").len();
        let t = read_tail(&f, len).expect("tail");
        assert_eq!(t.last, Some((2, long.clone().into_bytes())));
        assert_eq!(t.torn, Some((len - 2, b"zz".to_vec())));

        fs::write(&p, "only torn").expect("write");
        let t = read_tail(&File::open(&p).expect("open"), 9).expect("tail");
        assert_eq!((t.last, t.torn), (None, Some((0, b"only torn".to_vec()))));

        fs::write(&p, "one\n").expect("write");
        let t = read_tail(&File::open(&p).expect("open"), 4).expect("tail");
        assert_eq!((t.last, t.torn), (Some((0, b"one".to_vec())), None));
    }
}
