//! First-seen times of the sockets the daemon watches, by cookie and state, kept in
//! `<state_dir>/observations.json` (replaced atomically) so that a restart of the agent
//! does not reset ages. A first-seen time only ever moves earlier: to first sight, or to
//! when the kernel's evidence says the socket entered its state, so an age never shrinks.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{Cookie, NetnsId, TcpState};
use crate::scan::{Observations, SocketKey};

pub const FILE_NAME: &str = "observations.json";
const FORMAT_VERSION: u32 = 1;

/// The state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{call} {}: {source} (ages observed by the agent will restart from zero after a restart; make the state directory writable, or set `state_dir` / --state-dir)", path.display())]
pub struct SaveError {
    pub call: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The file's layout (`observations.json`).
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// `/proc/sys/kernel/random/boot_id` of the boot these cookies belong to.
    boot_id: String,
    sockets: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    netns_dev: u64,
    netns_inode: u64,
    cookie: u64,
    state: TcpState,
    /// Milliseconds since the Unix epoch.
    first_seen_ms: u64,
}

/// The daemon's memory of when it first saw each socket in its state.
#[derive(Debug)]
pub struct ObservationStore {
    path: PathBuf,
    boot_id: String,
    times: Observations,
    /// Changed since the last save.
    dirty: bool,
}

impl ObservationStore {
    /// Load `<state_dir>/observations.json`. A missing file is an empty store; a file from
    /// another boot, or one that cannot be read, is set aside with a warning (returned).
    /// First-seen times before `booted_at` or after `now` cannot be true (a forged
    /// `first_seen_ms = 1` would make every "older than" rule fire at once): they are
    /// dropped, with a warning.
    pub fn load(
        state_dir: &Path,
        boot_id: &str,
        booted_at: SystemTime,
        now: SystemTime,
    ) -> (ObservationStore, Option<String>) {
        let mut store = ObservationStore {
            path: state_dir.join(FILE_NAME),
            boot_id: boot_id.to_string(),
            times: Observations::new(),
            dirty: false,
        };
        let text = match fs::read_to_string(&store.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (store, None),
            Err(e) => {
                let warning = format!(
                    "cannot read {}: {e}; observed ages start from zero",
                    store.path.display()
                );
                return (store, Some(warning));
            }
        };
        let file: StateFile = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                store.dirty = true;
                let warning = format!(
                    "{} is not a valid state file ({e}); observed ages start from zero",
                    store.path.display()
                );
                return (store, Some(warning));
            }
        };
        if file.version != FORMAT_VERSION || file.boot_id != boot_id {
            store.dirty = true;
            let warning = format!(
                "{} is from another boot or format; its cookies mean other sockets now, so observed ages start from zero",
                store.path.display()
            );
            return (store, Some(warning));
        }
        let mut dropped = 0usize;
        // The boot time is known to the second or so; allow for that.
        let earliest = booted_at
            .checked_sub(Duration::from_secs(5))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let latest = now + Duration::from_secs(5);
        for e in file.sockets {
            let netns = NetnsId {
                dev: e.netns_dev,
                inode: e.netns_inode,
            };
            let first = SystemTime::UNIX_EPOCH + Duration::from_millis(e.first_seen_ms);
            if first < earliest || first > latest {
                dropped += 1;
                continue;
            }
            store
                .times
                .insert((netns, Cookie(e.cookie), e.state), first);
        }
        if dropped > 0 {
            store.dirty = true;
            let warning = format!(
                "{}: dropped {dropped} first-seen time(s) from before this boot or in the future (the file was edited, or the clock jumped); those sockets are aged from now",
                store.path.display()
            );
            return (store, Some(warning));
        }
        (store, None)
    }

    /// Save to another state directory from now on (after a reload changed it).
    pub fn move_to(&mut self, state_dir: &Path) {
        let path = state_dir.join(FILE_NAME);
        if path != self.path {
            self.path = path;
            self.dirty = true;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the scan ages sockets by.
    pub fn observations(&self) -> &Observations {
        &self.times
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn first_seen(&self, key: SocketKey) -> Option<SystemTime> {
        self.times.get(key)
    }

    /// Record one pass (see [`Observations::observe`]).
    pub fn update(
        &mut self,
        seen: impl IntoIterator<Item = SocketKey>,
        dumped: &[NetnsId],
        now: SystemTime,
    ) {
        self.dirty |= self.times.observe(seen, dumped, now);
    }

    /// The kernel's evidence says the socket has been in `state` since at least `since`:
    /// move its first-seen time there when that is earlier by more than a second (ages are
    /// whole seconds; smaller moves would rewrite the file every pass). Then a later pass
    /// whose `tcp_info` figure was reset by traffic still reports the older age.
    pub fn backdate(&mut self, key: SocketKey, since: SystemTime) {
        self.dirty |= self.times.move_earlier(key, since, Duration::from_secs(1));
    }

    /// Write the file if anything changed: a temporary file in the same directory, fsync,
    /// rename over the old one, fsync the directory. Returns whether it wrote.
    pub fn save(&mut self) -> Result<bool, SaveError> {
        if !self.dirty {
            return Ok(false);
        }
        let err = |call, path: &Path| {
            let path = path.to_path_buf();
            move |source| SaveError { call, path, source }
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&dir)
                .map_err(err("mkdir", &dir))?;
        }
        let mut sockets: Vec<Entry> = self
            .times
            .iter()
            .map(|((netns, cookie, state), first)| Entry {
                netns_dev: netns.dev,
                netns_inode: netns.inode,
                cookie: cookie.0,
                state,
                first_seen_ms: first
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect();
        sockets.sort_by_key(|e| (e.netns_inode, e.cookie, e.state));
        let file = StateFile {
            version: FORMAT_VERSION,
            boot_id: self.boot_id.clone(),
            sockets,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| SaveError {
            call: "serialize",
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        let safe = crate::sys::files::SafeDir::open(&dir).map_err(|e| SaveError {
            call: "open",
            path: dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        safe.check_private().map_err(|e| SaveError {
            call: "check",
            path: dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        safe.replace(std::ffi::OsStr::new(FILE_NAME), &bytes, 0o640)
            .map_err(err("replace", &self.path))?;
        self.dirty = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far_future() -> SystemTime {
        SystemTime::now() + Duration::from_secs(10 * 365 * 86400)
    }

    const NS: NetnsId = NetnsId { dev: 4, inode: 100 };
    const OTHER: NetnsId = NetnsId { dev: 4, inode: 200 };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn first_seen_is_set_once_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, warning) =
            ObservationStore::load(dir.path(), "boot-a", SystemTime::UNIX_EPOCH, far_future());
        assert!(warning.is_none() && store.is_empty());
        let cw = (NS, Cookie(7), TcpState::CloseWait);
        store.update([cw], &[NS], at(0));
        store.update([cw], &[NS], at(10));
        assert_eq!(
            store.first_seen((NS, Cookie(7), TcpState::CloseWait)),
            Some(at(0))
        );
        assert!(store.save().expect("save"));
        assert!(
            !store.save().expect("nothing changed"),
            "no rewrite at rest"
        );

        let (mut again, warning) =
            ObservationStore::load(dir.path(), "boot-a", SystemTime::UNIX_EPOCH, far_future());
        assert!(warning.is_none(), "{warning:?}");
        again.update([cw], &[NS], at(20));
        assert_eq!(
            again.first_seen((NS, Cookie(7), TcpState::CloseWait)),
            Some(at(0)),
            "a restart must not reset the age"
        );
        assert!(!dir.path().join("observations.json.tmp").exists());
    }

    #[test]
    fn kernel_evidence_only_ever_moves_first_sight_earlier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) =
            ObservationStore::load(dir.path(), "b", SystemTime::UNIX_EPOCH, far_future());
        store.update([(NS, Cookie(1), TcpState::CloseWait)], &[NS], at(100));
        store.save().expect("save");
        store.backdate((NS, Cookie(1), TcpState::CloseWait), at(0));
        assert_eq!(
            store.first_seen((NS, Cookie(1), TcpState::CloseWait)),
            Some(at(0))
        );
        assert!(store.save().expect("save"), "moved earlier: saved");
        store.backdate((NS, Cookie(1), TcpState::CloseWait), at(50));
        store.backdate(
            (NS, Cookie(1), TcpState::CloseWait),
            at(0) - Duration::from_millis(900),
        );
        assert_eq!(
            store.first_seen((NS, Cookie(1), TcpState::CloseWait)),
            Some(at(0))
        );
        assert!(
            !store.save().expect("save"),
            "later or sub-second: unchanged"
        );
        store.backdate((NS, Cookie(2), TcpState::CloseWait), at(0));
        assert_eq!(
            store.first_seen((OTHER, Cookie(2), TcpState::CloseWait)),
            None
        );
    }

    #[test]
    fn sockets_no_longer_seen_are_forgotten_only_in_namespaces_that_were_dumped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) =
            ObservationStore::load(dir.path(), "b", SystemTime::UNIX_EPOCH, far_future());
        store.update(
            [
                (NS, Cookie(1), TcpState::CloseWait),
                (OTHER, Cookie(2), TcpState::FinWait2),
            ],
            &[NS, OTHER],
            at(0),
        );
        // OTHER's dump failed this pass: its socket keeps its age; NS's socket 1 is gone.
        store.update([], &[NS], at(5));
        assert_eq!(store.first_seen((NS, Cookie(1), TcpState::CloseWait)), None);
        assert_eq!(
            store.first_seen((OTHER, Cookie(2), TcpState::FinWait2)),
            Some(at(0))
        );
        // A socket that changes state starts a new age in the new state.
        store.update([(OTHER, Cookie(2), TcpState::LastAck)], &[OTHER], at(9));
        assert_eq!(
            store.first_seen((OTHER, Cookie(2), TcpState::FinWait2)),
            None
        );
        assert_eq!(
            store.first_seen((OTHER, Cookie(2), TcpState::LastAck)),
            Some(at(9))
        );
    }

    #[test]
    fn another_boot_or_a_broken_file_starts_afresh_with_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) =
            ObservationStore::load(dir.path(), "boot-a", SystemTime::UNIX_EPOCH, far_future());
        store.update([(NS, Cookie(1), TcpState::CloseWait)], &[NS], at(0));
        store.save().expect("save");
        let (other_boot, warning) =
            ObservationStore::load(dir.path(), "boot-b", SystemTime::UNIX_EPOCH, far_future());
        assert!(other_boot.is_empty());
        assert!(warning.expect("warned").contains("another boot"));

        fs::write(dir.path().join(FILE_NAME), b"{not json").expect("write");
        let (broken, warning) =
            ObservationStore::load(dir.path(), "boot-a", SystemTime::UNIX_EPOCH, far_future());
        assert!(broken.is_empty());
        assert!(warning.expect("warned").contains("not a valid state file"));
    }

    #[test]
    fn save_creates_the_state_directory_and_reports_what_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b");
        let (mut store, _) =
            ObservationStore::load(&nested, "b", SystemTime::UNIX_EPOCH, far_future());
        store.update([(NS, Cookie(1), TcpState::CloseWait)], &[NS], at(0));
        store.save().expect("save into a new directory");
        assert!(nested.join(FILE_NAME).is_file());

        // A state "directory" that is a file cannot hold the state file.
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").expect("write");
        let (mut store, _) =
            ObservationStore::load(&blocker, "b", SystemTime::UNIX_EPOCH, far_future());
        store.update([(NS, Cookie(1), TcpState::CloseWait)], &[NS], at(0));
        let err = store.save().expect_err("cannot write");
        assert!(err.to_string().contains("state directory"), "{err}");
    }

    /// Regression (trust issue): a forged `first_seen_ms = 1` made an "older than 1h" rule
    /// fire at once. Times before this boot or in the future are dropped, with a warning.
    #[test]
    fn first_seen_times_before_this_boot_or_in_the_future_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let booted = now - Duration::from_secs(3600);
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after epoch")
                .as_millis()
        };
        let text = format!(
            r#"{{"version":1,"boot_id":"b","sockets":[
{{"netns_dev":4,"netns_inode":1,"cookie":1,"state":"close-wait","first_seen_ms":1}},
{{"netns_dev":4,"netns_inode":1,"cookie":2,"state":"close-wait","first_seen_ms":{future}}},
{{"netns_dev":4,"netns_inode":1,"cookie":3,"state":"close-wait","first_seen_ms":{good}}}]}}"#,
            future = ms(now + Duration::from_secs(86400)),
            good = ms(now - Duration::from_secs(600)),
        );
        fs::write(dir.path().join(FILE_NAME), text).expect("write");
        let (store, warning) = ObservationStore::load(dir.path(), "b", booted, now);
        let warning = warning.expect("a warning");
        assert!(
            warning.contains("dropped 2 first-seen time(s)"),
            "{warning}"
        );
        assert_eq!(store.len(), 1);
        let ns = NetnsId { dev: 4, inode: 1 };
        assert!(store
            .first_seen((ns, Cookie(3), TcpState::CloseWait))
            .is_some());
        assert!(store
            .first_seen((ns, Cookie(1), TcpState::CloseWait))
            .is_none());
    }
}
