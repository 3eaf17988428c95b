//! First-seen times of sockets in their states, as the daemon observes them and the scan
//! ages sockets by ([`Observations`]). A mass leak has 100,000: each is kept in 24 bytes
//! (its namespace as an index into a table of the namespaces, the time in nanoseconds)
//! instead of a 48-byte (key, `SystemTime`) pair.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::model::{Cookie, NetnsId, NumberHash, TcpState};
use crate::scan::SocketKey;

/// (cookie, namespace index, state).
type CompactKey = (u64, u32, TcpState);

/// When each socket was first seen in its state.
#[derive(Debug, Default, Clone)]
pub struct Observations {
    /// Nanoseconds since the Unix epoch, by socket.
    times: HashMap<CompactKey, u64, NumberHash>,
    /// The namespaces the keys index.
    namespaces: Vec<NetnsId>,
    namespace_index: HashMap<NetnsId, u32>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

impl Observations {
    pub fn new() -> Observations {
        Observations::default()
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The key of `key` when its namespace is in the table.
    fn find(&self, (netns, cookie, state): SocketKey) -> Option<CompactKey> {
        let ns = *self.namespace_index.get(&netns)?;
        Some((cookie.0, ns, state))
    }

    /// The key of `key`, its namespace added to the table if need be.
    fn intern(&mut self, (netns, cookie, state): SocketKey) -> CompactKey {
        let ns = match self.namespace_index.get(&netns) {
            Some(&ns) => ns,
            None => {
                let ns = u32::try_from(self.namespaces.len()).unwrap_or(u32::MAX);
                self.namespaces.push(netns);
                self.namespace_index.insert(netns, ns);
                ns
            }
        };
        (cookie.0, ns, state)
    }

    fn key_of(&self, (cookie, ns, state): CompactKey) -> SocketKey {
        (self.namespaces[ns as usize], Cookie(cookie), state)
    }

    pub fn get(&self, key: SocketKey) -> Option<SystemTime> {
        self.find(key)
            .and_then(|k| self.times.get(&k))
            .map(|&n| time(n))
    }

    /// Set `key`'s first-seen time.
    pub fn insert(&mut self, key: SocketKey, first: SystemTime) {
        let key = self.intern(key);
        self.times.insert(key, nanos(first));
    }

    /// Move `key`'s first-seen time to `since` when that is earlier by more than `slack`;
    /// true when it moved.
    pub fn move_earlier(&mut self, key: SocketKey, since: SystemTime, slack: Duration) -> bool {
        let Some(key) = self.find(key) else {
            return false;
        };
        let Some(first) = self.times.get_mut(&key) else {
            return false;
        };
        let since = nanos(since);
        if first.saturating_sub(since) > u64::try_from(slack.as_nanos()).unwrap_or(u64::MAX) {
            *first = since;
            return true;
        }
        false
    }

    /// Record one pass: every socket `seen` gets a first-seen time of `now` unless it has
    /// one; sockets of the namespaces in `dumped` that were not seen are forgotten (closed,
    /// or moved to another state). Namespaces not dumped keep theirs. Returns whether
    /// anything changed.
    pub fn observe(
        &mut self,
        seen: impl IntoIterator<Item = SocketKey>,
        dumped: &[NetnsId],
        now: SystemTime,
    ) -> bool {
        let seen = seen.into_iter();
        let mut present: HashSet<CompactKey, NumberHash> =
            HashSet::with_capacity_and_hasher(seen.size_hint().0, NumberHash::default());
        let now = nanos(now);
        let mut changed = false;
        for key in seen {
            let key = self.intern(key);
            present.insert(key);
            if let std::collections::hash_map::Entry::Vacant(v) = self.times.entry(key) {
                v.insert(now);
                changed = true;
            }
        }
        let dumped: HashSet<u32> = dumped
            .iter()
            .filter_map(|n| self.namespace_index.get(n).copied())
            .collect();
        let before = self.times.len();
        self.times
            .retain(|key, _| !dumped.contains(&key.1) || present.contains(key));
        changed |= self.times.len() != before;
        drop(present);
        self.compact_namespaces();
        changed
    }

    /// Rebuild the namespace table when most of it is unused (namespaces come and go).
    fn compact_namespaces(&mut self) {
        if self.namespaces.len() < 64 {
            return;
        }
        let used: HashSet<u32> = self.times.keys().map(|&(_, ns, _)| ns).collect();
        if used.len() * 2 >= self.namespaces.len() {
            return;
        }
        let old = std::mem::take(&mut self.namespaces);
        let times = std::mem::take(&mut self.times);
        self.namespace_index.clear();
        for ((cookie, ns, state), n) in times {
            let key = self.intern((old[ns as usize], Cookie(cookie), state));
            self.times.insert(key, n);
        }
    }

    /// Every socket and its first-seen time.
    pub fn iter(&self) -> impl Iterator<Item = (SocketKey, SystemTime)> + '_ {
        self.times.iter().map(|(&k, &n)| (self.key_of(k), time(n)))
    }
}
