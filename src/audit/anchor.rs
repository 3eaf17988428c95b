//! What vouches for the trail from outside its lines: the **anchor** (the head's seq and
//! hash, rewritten with every append, so a trail cut short is caught), the **checkpoint**
//! (where a pruned trail now starts), and the optional **key** that seals records with an
//! HMAC instead of a plain hash (forgery needs the key, not just write access).
//!
//! Files beside the live file `audit.jsonl`:
//! - `audit.jsonl.head`: `{"seq":N,"hash":"<line hash>","time":"…"}` (+ `key_id`, `mac`
//!   in keyed mode), replaced atomically after every fsynced append or batch;
//! - `audit.jsonl.start`: `{"seq":S,"prev":"<hash>","time":"…","removed":[…]}`, written
//!   by `audit prune` before it removes files.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sys::files::{self, FileError, SafeDir};

/// The name of the anchor file beside live file `live`.
pub fn anchor_name(live: &Path) -> OsString {
    suffixed(live, ".head")
}

/// The name of the checkpoint file beside live file `live`.
pub fn checkpoint_name(live: &Path) -> OsString {
    suffixed(live, ".start")
}

fn suffixed(live: &Path, suffix: &str) -> OsString {
    let mut name = live
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    name
}

/// The head of the trail as the last writer left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: u64,
    /// The hash of the head record's line (what the next record's `prev` carries).
    pub hash: String,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// HMAC of `seq:hash` under the key, in keyed mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Anchor {
    pub fn new(seq: u64, hash: String, key: Option<&AuditKey>) -> Anchor {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        Anchor {
            seq,
            key_id: key.map(|k| k.id().to_string()),
            mac: key.map(|k| k.mac_hex(format!("{seq}:{hash}").as_bytes())),
            hash,
            time,
        }
    }

    /// In keyed mode, whether the anchor's MAC holds under `key`.
    pub fn mac_holds(&self, key: &AuditKey) -> bool {
        self.key_id.as_deref() == Some(key.id())
            && self.mac.as_deref()
                == Some(
                    key.mac_hex(format!("{}:{}", self.seq, self.hash).as_bytes())
                        .as_str(),
                )
    }
}

/// Where a pruned trail starts: its first record's seq and prev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    /// The files `audit prune` removed.
    #[serde(default)]
    pub removed: Vec<String>,
}

/// Read a small JSON side file (`None` when it does not exist).
pub fn read_side<T: for<'de> Deserialize<'de>>(
    dir: &SafeDir,
    name: &OsString,
) -> Result<Option<T>, String> {
    let mut file = match dir.open_read(name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.join(name).display())),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: not a valid file ({e})", dir.join(name).display()))
}

/// Write a small JSON side file atomically and durably.
pub fn write_side<T: Serialize>(dir: &SafeDir, name: &OsString, value: &T) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    dir.replace(name, &bytes, 0o640)
}

/// The secret that seals records (HMAC-SHA256) in keyed mode. Read from a file only root
/// can read; its id (a hash of it, never the key) is written into every keyed record.
#[derive(Clone)]
pub struct AuditKey {
    key: Vec<u8>,
    id: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.id)
    }
}

impl AuditKey {
    /// Load the key file: a regular file owned by root (or us) that no one else can read
    /// or write, of at least 16 bytes (e.g. `head -c 32 /dev/urandom`).
    pub fn load(path: &Path) -> Result<AuditKey, FileError> {
        let (dir, name) = files::split(path)?;
        let dir = SafeDir::open(dir)?;
        let refuse = |problem: String, fix: String| FileError {
            path: path.to_path_buf(),
            problem,
            fix,
            source: None,
        };
        let mut file = dir.open_read(name).map_err(|e| FileError {
            path: path.to_path_buf(),
            problem: format!("cannot open the audit key: {e}"),
            fix: "create it: `head -c 32 /dev/urandom > KEY && chmod 0400 KEY`".into(),
            source: Some(e),
        })?;
        let meta = file.metadata().map_err(|e| FileError {
            path: path.to_path_buf(),
            problem: format!("cannot stat the audit key: {e}"),
            fix: "check its permissions".into(),
            source: Some(e),
        })?;
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        if !meta.file_type().is_file() {
            return Err(refuse(
                "the audit key is not a regular file".into(),
                "point --audit-key at the key file".into(),
            ));
        }
        if meta.uid() != 0 && meta.uid() != me {
            return Err(refuse(
                format!("the audit key is owned by uid {}, not root", meta.uid()),
                format!("`chown root:root {}`", path.display()),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(refuse(
                format!(
                    "the audit key can be read or written by others (mode {:04o})",
                    meta.mode() & 0o7777
                ),
                format!(
                    "`chmod 0400 {}`: whoever reads the key can forge the trail",
                    path.display()
                ),
            ));
        }
        let mut key = Vec::new();
        file.read_to_end(&mut key).map_err(|e| FileError {
            path: path.to_path_buf(),
            problem: format!("cannot read the audit key: {e}"),
            fix: "check the file".into(),
            source: Some(e),
        })?;
        if key.len() < 16 {
            return Err(refuse(
                format!(
                    "the audit key has {} bytes; at least 16 are needed",
                    key.len()
                ),
                "make a new one: `head -c 32 /dev/urandom > KEY && chmod 0400 KEY`".into(),
            ));
        }
        Ok(AuditKey::from_bytes(key))
    }

    pub fn from_bytes(key: Vec<u8>) -> AuditKey {
        let mut h = Sha256::new();
        h.update(b"sockwarden audit key id\0");
        h.update(&key);
        let id = super::record::hex(&h.finalize())[..16].to_string();
        AuditKey { key, id }
    }

    /// A short public name of the key (16 hex digits of a hash of it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA256 of `bytes` under the key, as lowercase hex.
    pub fn mac_hex(&self, bytes: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(bytes);
        super::record::hex(&mac.finalize().into_bytes())
    }
}

/// The directory of live file `live`, opened safely, and the live file's name.
pub fn live_dir(live: &Path) -> Result<(SafeDir, OsString), FileError> {
    let (dir, name) = files::split(live)?;
    Ok((SafeDir::open(dir)?, name.to_os_string()))
}

/// `path` of a side file, for messages.
pub fn side_path(live: &Path, name: &OsString) -> PathBuf {
    live.with_file_name(name)
}
