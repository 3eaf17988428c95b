//! The appender: one locked, fsynced write per record (or per batch), torn-tail repair,
//! rotation and the anchor, safe with several writers (the daemon and a one-off `clean`)
//! on the same file. Every file is opened relative to the log's directory, never through a
//! symlink, and only in a directory no one but root can write.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{fstat, fstatat};

use super::anchor::{self, Anchor, AuditKey};
use super::error::AuditError;
use super::read::{rotated_name, rotated_names};
use super::record::{
    line_hash, open_line_with, seal_line, sha256_hex, Actor, AuditRecord, LineError, Mode,
    NewRecord, NoteEvent, RecordKind, TornBytes, GENESIS_PREV,
};
use crate::sys::files::SafeDir;

/// Rotate the live file once it has grown past this many bytes.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;

/// How far back the tail reader reads at a time.
const TAIL_CHUNK: u64 = 16 * 1024;
/// How much sealed JSON a streamed append holds before it writes it out.
pub const STREAM_BUFFER: usize = 1 << 20;

/// An append handle on an audit trail. The directory is opened (and checked) once; the live
/// file is opened and locked per append, so a rotation or repair by another writer is
/// always seen.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    dir: SafeDir,
    name: OsString,
    host: String,
    max_size: u64,
    key: Option<AuditKey>,
    /// The head after this handle's last append.
    head: Option<(u64, String)>,
}

/// The last good record: the next one continues from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
    /// The key id of the head record (keyed trails refuse unkeyed writers).
    key_id: Option<String>,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_PREV.to_string(),
            key_id: None,
        }
    }

    fn of(record: &AuditRecord, line: &[u8]) -> Head {
        Head {
            seq: record.seq,
            hash: line_hash(line),
            key_id: record.key_id.clone(),
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
    /// Open the live file of a trail (creating the file, mode 0640, but never its
    /// directory: a mistyped path must not start a second trail). Refuses a directory or
    /// file that is a symlink, or that anyone but root can write.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let refused = |source| AuditError::Refused {
            source,
            consequence: super::error::consequence(None),
        };
        let (dir, name) = anchor::live_dir(path).map_err(refused)?;
        dir.check_private().map_err(refused)?;
        dir.open_append(&name, 0o640).map_err(refused)?;
        let host = recorded_host(
            std::env::var("SOCKWARDEN_NODE_NAME").ok(),
            nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()),
        );
        Ok(AuditLog {
            path: path.to_path_buf(),
            dir,
            name,
            host,
            max_size: DEFAULT_MAX_SIZE,
            key: None,
            head: None,
        })
    }

    /// Seal every record written from now on with `key` (keyed mode).
    pub fn with_key(mut self, key: Option<AuditKey>) -> AuditLog {
        self.key = key;
        self
    }

    /// Rotate once the live file passes `bytes` (default [`DEFAULT_MAX_SIZE`]).
    pub fn with_max_size(mut self, bytes: u64) -> AuditLog {
        self.max_size = bytes.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn dir(&self) -> &SafeDir {
        &self.dir
    }

    pub(super) fn name(&self) -> &OsStr {
        &self.name
    }

    /// The head (seq, line hash) after this handle's last append, to publish elsewhere.
    pub fn head(&self) -> Option<(u64, &str)> {
        self.head.as_ref().map(|(s, h)| (*s, h.as_str()))
    }

    /// Append one record: lock, find the chain head (repairing a torn tail), rotate if the
    /// file is full, write the line in one `write(2)`, fsync it, then the anchor. When this
    /// returns `Err` for an intent, the caller must not act; the error says so and how to
    /// fix it.
    pub fn append(&mut self, record: NewRecord) -> Result<AuditRecord, AuditError> {
        let mut written = self.append_batch(vec![record])?;
        written.pop().ok_or_else(|| {
            AuditError::write(
                self.path.clone(),
                "write",
                io::Error::other("nothing written"),
                None,
            )
        })
    }

    /// Append `records` as one group commit: one lock, the records chained in order, then
    /// ONE fsync, then the anchor. All or nothing: on `Err` whatever part of the batch
    /// reached the file is truncated away and none of it counts as written (for intents:
    /// act on none of them). Rotation happens only between batches, so a batch may carry
    /// the live file past the rotation size. An empty batch writes nothing.
    pub fn append_batch(
        &mut self,
        records: Vec<NewRecord>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut written = Vec::with_capacity(records.len());
        self.append_streamed(records, |record| written.push(record))?;
        Ok(written)
    }

    /// [`append_batch`](Self::append_batch) for records made one at a time: each is sealed
    /// and written as it comes (at most [`STREAM_BUFFER`] bytes are held), `written` sees
    /// each record once it is handed to the file (on `Err`, forget them: none counts as
    /// written), and the fsync and the anchor come once at the
    /// end. A mass destroy's intents never exist in memory all at once. Same all-or-nothing.
    pub fn append_streamed(
        &mut self,
        records: impl IntoIterator<Item = NewRecord>,
        mut written: impl FnMut(AuditRecord),
    ) -> Result<(), AuditError> {
        let mut records = records.into_iter().peekable();
        let Some(first) = records.peek() else {
            return Ok(());
        };
        // Errors are worded for the first record's kind (a batch is intents or outcomes).
        let kind = first.kind;
        let (actor, mode) = (first.actor.clone(), first.mode);
        let (file, head) = self.lock_live(kind, &actor, mode)?;
        let len_before = file.metadata().map_err(self.werr("fstat", kind))?.len();
        let undo = |e: AuditError| {
            let _ = file.set_len(len_before);
            let _ = file.sync_data();
            e
        };
        let time = SystemTime::now();
        let mut bytes = Vec::with_capacity(STREAM_BUFFER);
        let head_hash = head.hash.clone();
        let (mut seq, mut prev) = (head.seq, head.hash);
        // Records in `bytes` not yet handed to `written`.
        let mut held: Vec<AuditRecord> = Vec::new();
        for record in records {
            seq += 1;
            let mut rec = record.into_record(seq, time, self.host.clone(), prev);
            let (line, hash) = seal_line(&mut rec, self.key.as_ref())
                .map_err(|e| undo(self.werr("serialize", kind)(io::Error::other(e))))?;
            prev = hash;
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
            held.push(rec);
            if bytes.len() >= STREAM_BUFFER {
                let len = file
                    .metadata()
                    .map_err(|e| undo(self.werr("fstat", kind)(e)))?
                    .len();
                write_once(&file, len, &bytes).map_err(|e| undo(self.werr("write", kind)(e)))?;
                bytes.clear();
                held.drain(..).for_each(&mut written);
            }
        }
        if let Err(e) = self.write_synced(&file, &bytes, kind) {
            return Err(undo(e));
        }
        held.drain(..).for_each(&mut written);
        if let Err(e) = self.write_anchor(seq, &prev, kind) {
            // All or nothing: records the anchor does not vouch for are not written. Put
            // the old anchor back in case the new one reached the disk after all.
            let _ = file.set_len(len_before);
            let _ = file.sync_data();
            let _ = self.write_anchor(head.seq, &head_hash, kind);
            return Err(e);
        }
        Ok(())
    }

    fn werr(&self, call: &'static str, kind: RecordKind) -> impl Fn(io::Error) -> AuditError + '_ {
        move |e| AuditError::write(self.path.clone(), call, e, Some(kind))
    }

    /// After the records are durable: the anchor names the new head. A crash between the
    /// two leaves the anchor behind the trail, which is fine; the reverse never happens.
    fn write_anchor(&mut self, seq: u64, hash: &str, kind: RecordKind) -> Result<(), AuditError> {
        let anchor = Anchor::new(seq, hash.to_string(), self.key.as_ref());
        anchor::write_side(&self.dir, &anchor::anchor_name(&self.path), &anchor)
            .map_err(self.werr("write of the anchor", kind))?;
        self.head = Some((seq, hash.to_string()));
        Ok(())
    }

    fn open_live(&self, kind: RecordKind) -> Result<File, AuditError> {
        self.dir
            .open_append(&self.name, 0o640)
            .map_err(|source| AuditError::Refused {
                source,
                consequence: super::error::consequence(Some(kind)),
            })
    }

    /// Open and lock the current live file, repaired and rotated as needed, with its head.
    fn lock_live(
        &mut self,
        kind: RecordKind,
        actor: &Actor,
        mode: Mode,
    ) -> Result<(Flock<File>, Head), AuditError> {
        // Each retry means another writer renamed the file under us; a handful is plenty.
        for _ in 0..64 {
            let file = self.open_live(kind)?;
            let file = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| self.werr("flock", kind)(io::Error::from(errno)))?;
            let ours = fstat(&*file).map_err(|e| self.werr("fstat", kind)(e.into()))?;
            match fstatat(
                self.dir.as_fd(),
                self.name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(m) if m.st_dev == ours.st_dev && m.st_ino == ours.st_ino => {}
                Ok(_) | Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(self.werr("stat", kind)(e.into())),
            }
            let len = u64::try_from(ours.st_size).unwrap_or(0);
            let head = self.head_repairing(&file, len, kind, actor, mode)?;
            if let Some(id) = &head.key_id {
                match &self.key {
                    Some(k) if k.id() == id => {}
                    Some(k) => {
                        return Err(AuditError::Key {
                            path: self.path.clone(),
                            problem: format!(
                                "the trail is sealed with audit key {id}, but the key given is {}",
                                k.id()
                            ),
                            consequence: super::error::consequence(Some(kind)),
                        })
                    }
                    None => {
                        return Err(AuditError::Key {
                            path: self.path.clone(),
                            problem: format!(
                                "the trail is sealed with audit key {id} and no key was given: an unkeyed record would break it"
                            ),
                            consequence: super::error::consequence(Some(kind)),
                        })
                    }
                }
            }
            let len = file.metadata().map_err(self.werr("fstat", kind))?.len();
            if len >= self.max_size {
                self.rotate(&file, kind)?;
                continue;
            }
            if len == 0 {
                // A file just created (here or by another writer): make its name durable.
                self.dir
                    .sync()
                    .map_err(self.werr("fsync of the directory", kind))?;
            }
            return Ok((file, head));
        }
        Err(self.werr("open", kind)(io::Error::other(
            "the live file kept being replaced by other writers",
        )))
    }

    /// The head of the chain, after repairing a torn tail of the live file, checked
    /// against the anchor: a trail that ends before its anchor was cut short.
    fn head_repairing(
        &mut self,
        file: &File,
        len: u64,
        kind: RecordKind,
        actor: &Actor,
        mode: Mode,
    ) -> Result<Head, AuditError> {
        let tail = read_tail(file, len).map_err(self.werr("read", kind))?;
        let mut head = match &tail.last {
            Some((offset, line)) => self.head_of(&self.path, *offset, line, kind)?,
            None => self.head_of_rotated(kind)?,
        };
        let anchor: Option<Anchor> = anchor::read_side(&self.dir, &anchor::anchor_name(&self.path))
            .map_err(|e| self.truncated(kind, e))?;
        if let Some((offset, torn)) = tail.torn {
            head = self.repair(
                file,
                offset,
                &torn,
                head,
                anchor.as_ref(),
                kind,
                actor,
                mode,
            )?;
        }
        match anchor {
            Some(a) if a.seq > head.seq => {
                return Err(self.truncated(
                    kind,
                    format!(
                        "the trail ends at seq {} but its anchor says seq {} was written: {} record(s) were removed from its end",
                        head.seq,
                        a.seq,
                        a.seq - head.seq
                    ),
                ))
            }
            Some(a) if a.seq == head.seq && a.hash != head.hash => {
                return Err(self.truncated(
                    kind,
                    format!(
                        "the head record (seq {}) is not the one its anchor names: the end of the trail was rewritten",
                        head.seq
                    ),
                ))
            }
            Some(_) => {}
            None if head.seq > 0 => {
                // Records but no anchor: the first write after an upgrade, or the anchor
                // was deleted. Say so in the chain, where it cannot be taken back.
                let note = NewRecord::note(
                    actor.clone(),
                    mode,
                    NoteEvent::Anchor,
                    format!(
                        "no anchor file beside a trail of {} record(s): a new anchor starts at seq {}; records removed from the end before this are not detectable by the anchor",
                        head.seq,
                        head.seq + 1
                    ),
                );
                head = self.write_note(file, note, head, kind)?;
            }
            None => {}
        }
        Ok(head)
    }

    fn truncated(&self, kind: RecordKind, problem: String) -> AuditError {
        AuditError::Truncated {
            path: self.path.clone(),
            problem,
            consequence: super::error::consequence(Some(kind)),
        }
    }

    fn head_of(
        &self,
        path: &Path,
        offset: u64,
        line: &[u8],
        kind: RecordKind,
    ) -> Result<Head, AuditError> {
        match open_line_with(line, self.key.as_ref()) {
            Ok(r) => Ok(Head::of(&r, line)),
            Err(LineError::Keyed { key_id }) | Err(LineError::OtherKey { key_id, .. }) => {
                // Let the key check name the problem.
                let r: AuditRecord =
                    serde_json::from_slice(line).map_err(|e| AuditError::Damaged {
                        path: path.to_path_buf(),
                        offset,
                        problem: e.to_string(),
                        consequence: super::error::consequence(Some(kind)),
                    })?;
                Ok(Head {
                    key_id: Some(key_id),
                    ..Head::of(&r, line)
                })
            }
            Err(e) => Err(AuditError::Damaged {
                path: path.to_path_buf(),
                offset,
                problem: e.to_string(),
                consequence: super::error::consequence(Some(kind)),
            }),
        }
    }

    /// The head when the live file holds no complete record: the newest rotated file's last
    /// record, or the genesis.
    fn head_of_rotated(&self, kind: RecordKind) -> Result<Head, AuditError> {
        let rotated =
            rotated_names(&self.dir, &self.name).map_err(self.werr("read directory", kind))?;
        let Some(newest) = rotated.last() else {
            return Ok(Head::genesis());
        };
        let newest_path = self.dir.join(newest);
        let file = self
            .dir
            .open_read(newest)
            .map_err(|e| AuditError::write(newest_path.clone(), "open", e, Some(kind)))?;
        let len = file.metadata().map_err(self.werr("fstat", kind))?.len();
        let tail = read_tail(&file, len)
            .map_err(|e| AuditError::write(newest_path.clone(), "read", e, Some(kind)))?;
        match tail.last {
            Some((offset, line)) => self.head_of(&newest_path, offset, &line, kind),
            None => Ok(Head::genesis()),
        }
    }

    /// Deal with a final line that has no newline. A complete record that continues the
    /// chain only gets its newline back. Anything else is a crash mid-write only if the
    /// anchor agrees (it names the record before the torn line, or is behind): then it is
    /// saved byte for byte to a side file `<log>.torn-<offset>-<sha256 prefix>`, truncated
    /// away, and described in a `note` record (event `repair`). If the anchor says the
    /// torn record was written whole, the line was cut afterwards: refuse.
    #[allow(clippy::too_many_arguments)]
    fn repair(
        &self,
        file: &File,
        offset: u64,
        torn: &[u8],
        head: Head,
        anchor: Option<&Anchor>,
        kind: RecordKind,
        actor: &Actor,
        mode: Mode,
    ) -> Result<Head, AuditError> {
        // ext4 may leave NULs where a write did not reach the disk before a crash.
        let trimmed_len = torn.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let trimmed = &torn[..trimmed_len];
        if let Ok(r) = open_line_with(trimmed, self.key.as_ref()) {
            if r.seq == head.seq + 1 && r.prev == head.hash {
                file.set_len(offset + trimmed_len as u64)
                    .map_err(self.werr("truncate", kind))?;
                write_once(file, offset + trimmed_len as u64, b"\n")
                    .map_err(self.werr("write", kind))?;
                file.sync_data().map_err(self.werr("fsync", kind))?;
                return Ok(Head::of(&r, trimmed));
            }
        }
        if let Some(a) = anchor.filter(|a| a.seq > head.seq) {
            return Err(self.truncated(
                kind,
                format!(
                    "the final line is cut short, but the anchor says seq {} was written whole: the trail was cut after it was written, not by a crash",
                    a.seq
                ),
            ));
        }
        let sha = sha256_hex(torn);
        let side_name = format!(
            "{}.torn-{offset}-{}",
            self.name.to_string_lossy(),
            &sha[..12]
        );
        let side = self.path.with_file_name(&side_name);
        let saved = (|| {
            let mut f = self.dir.create_new(OsStr::new(&side_name), 0o640)?;
            f.write_all(torn)?;
            f.sync_all()?;
            self.dir.sync()
        })();
        saved.map_err(|e| AuditError::write(side.clone(), "save torn bytes", e, Some(kind)))?;
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
        self.write_note(file, note, head, kind)
    }

    /// Write one note record after `head` (inside the caller's lock) and return the new head.
    fn write_note(
        &self,
        file: &File,
        note: NewRecord,
        head: Head,
        kind: RecordKind,
    ) -> Result<Head, AuditError> {
        let mut rec = note.into_record(
            head.seq + 1,
            SystemTime::now(),
            self.host.clone(),
            head.hash,
        );
        let (mut line, hash) = seal_line(&mut rec, self.key.as_ref())
            .map_err(|e| self.werr("serialize", kind)(io::Error::other(e)))?;
        line.push(b'\n');
        self.write_synced(file, &line, kind)?;
        Ok(Head {
            seq: rec.seq,
            hash,
            key_id: rec.key_id,
        })
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
        let seq = match serde_json::from_slice::<AuditRecord>(&first) {
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
        let Some(to) = rotated.file_name() else {
            return Err(self.werr("rename", kind)(io::Error::other(
                "audit log path has no file name",
            )));
        };
        // NOREPLACE: never overwrite an existing rotated file.
        self.dir
            .rename(&self.name, to, true)
            .map_err(|e| AuditError::write(rotated.clone(), "rename (rotation)", e, Some(kind)))?;
        self.dir
            .sync()
            .map_err(self.werr("fsync of the directory", kind))
    }
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

pub(super) fn read_first_line(file: &File) -> io::Result<Vec<u8>> {
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

/// The last complete line of `file`, if any.
pub(super) fn read_last_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    Ok(read_tail(file, len)?.last.map(|(_, line)| line))
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

/// The `host` of the records: `SOCKWARDEN_NODE_NAME` when set (in a pod the hostname is the
/// pod's, so the DaemonSet passes the node's name), else the hostname.
fn recorded_host(node_name: Option<String>, hostname: nix::Result<String>) -> String {
    node_name
        .filter(|n| !n.trim().is_empty())
        .or(hostname.ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_name_wins_over_the_pods_hostname() {
        let host = |node: Option<&str>, hostname: nix::Result<&str>| {
            recorded_host(node.map(str::to_string), hostname.map(str::to_string))
        };
        assert_eq!(host(Some("node-7"), Ok("sockwarden-x2k9f")), "node-7");
        assert_eq!(host(None, Ok("server1")), "server1");
        assert_eq!(host(Some(" "), Ok("server1")), "server1");
        assert_eq!(host(None, Err(nix::Error::EPERM)), "");
    }

    #[test]
    fn tail_finds_last_line_and_torn_bytes_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let long = "x".repeat(40_000);
        std::fs::write(&p, format!("a\n{long}\nzz")).expect("write");
        let f = File::open(&p).expect("open");
        let len = f.metadata().expect("meta").len();
        let t = read_tail(&f, len).expect("tail");
        assert_eq!(t.last, Some((2, long.clone().into_bytes())));
        assert_eq!(t.torn, Some((len - 2, b"zz".to_vec())));

        std::fs::write(&p, "only torn").expect("write");
        let t = read_tail(&File::open(&p).expect("open"), 9).expect("tail");
        assert_eq!((t.last, t.torn), (None, Some((0, b"only torn".to_vec()))));

        std::fs::write(&p, "one\n").expect("write");
        let t = read_tail(&File::open(&p).expect("open"), 4).expect("tail");
        assert_eq!((t.last, t.torn), (Some((0, b"one".to_vec())), None));
    }
}
