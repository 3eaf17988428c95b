//! The index watcher's decisions, pure: in each namespace, what the eBPF index can stand
//! for and what must still be dumped with sock_diag.
//!
//! The index holds every full socket that entered a watched state since it was created,
//! and those older in the namespaces the agent has swept (one dump whose sockets it
//! stamped). In a namespace it holds completely, a pass looks up by id only the sockets
//! the index names — one hash lookup each, where a dump walks every socket of the host,
//! whichever namespace it asks for. It cannot hold the kernel's minisockets: TIME_WAIT and
//! orphaned FIN_WAIT_2 (timewait sockets, counted per namespace by `sockstat`'s `tw`), and
//! SYN_RECV requests (a namespace holds one older than a second only where `on_synack` saw
//! a SYN-ACK retransmitted); nor can a SYN_SENT stamp taken before the local port was
//! chosen be looked up. Those are dumped, only where there can be some.

use std::time::Duration;

use super::Stamp;
use crate::model::{Cookie, StateSet, TcpState};

/// The states the tracepoint program stamps (`WATCHED` in sockwarden.bpf.c).
pub fn indexed_states() -> StateSet {
    StateSet::from_iter([
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Closing,
    ])
}

/// Whether a pass over `states` can be served by the index at all: every state is one the
/// program stamps, or TIME_WAIT (minisockets only, dumped where `tw` says there are some).
pub fn servable(states: StateSet) -> bool {
    states
        .iter()
        .all(|s| indexed_states().contains(s) || s == TcpState::TimeWait)
}

/// How long a SYN_RECV request socket can live after a SYN-ACK retransmission: it is
/// retransmitted `tcp_synack_retries` times (5 by default) with a doubling timeout from
/// 1 s, 63 s in all; this covers 7 retries. A namespace whose last retransmission is older
/// has none left, and one that never retransmitted has none older than its first timeout.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(255);

/// What is known of one namespace besides the stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceFacts {
    /// Whether the index holds all of it (born under the index, or swept).
    pub complete: bool,
    /// `tw` of its `sockstat`: timewait minisockets (TIME_WAIT, orphaned FIN_WAIT_2); `None`
    /// when it cannot be read (or was not, the pass asking for neither state).
    pub timewait: Option<u64>,
    /// How long ago it last retransmitted a SYN-ACK: `Some(None)` never (since the index
    /// exists), `None` when that is not tracked.
    pub last_request: Option<Option<Duration>>,
    /// The TCP sockets of the whole host (every namespace's `sockstat`), when counted: a
    /// dump walks all of them.
    pub host_sockets: Option<u64>,
}

/// What a lookup by id costs, and what a dump costs per socket of the host it walks and
/// per socket it returns (measured here: 100,000 lookups in 200 ms; a dump of 100,000 in
/// 150 ms; a walk past 100,000 sockets of other namespaces in 40 ms).
const LOOKUP_NS: u64 = 2_000;
const WALK_NS: u64 = 400;
const DUMP_NS: u64 = 1_500;

/// Whether dumping a namespace costs less than looking up its `n` stamped sockets: when
/// it holds most of the host's sockets (a mass leak in one namespace).
fn dump_is_cheaper(n: usize, host_sockets: Option<u64>) -> bool {
    let n = n as u64;
    host_sockets.is_some_and(|h| WALK_NS * h + DUMP_NS * n < LOOKUP_NS * n)
}

/// What a pass does in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan<'a> {
    /// The states to dump with sock_diag there.
    pub dump: StateSet,
    /// The dump is a sweep: stamp what it finds in indexed states, then mark the namespace
    /// complete.
    pub sweep: bool,
    /// The sockets to look up by id: stamped in a state the pass asks for, not dumped.
    pub lookups: Vec<(Cookie, &'a Stamp)>,
}

/// The plan for one namespace in a pass over `states` ([`servable`]), given the index's
/// stamps there.
pub fn plan<'a>(
    states: StateSet,
    stamps: &[(Cookie, &'a Stamp)],
    facts: &NamespaceFacts,
) -> NamespacePlan<'a> {
    if !facts.complete {
        return NamespacePlan {
            dump: states.iter().chain(indexed_states().iter()).collect(),
            sweep: true,
            lookups: Vec::new(),
        };
    }
    let asked = stamps
        .iter()
        .filter(|(_, s)| states.contains(s.state))
        .count();
    if dump_is_cheaper(asked, facts.host_sockets) {
        return NamespacePlan {
            dump: states,
            sweep: false,
            lookups: Vec::new(),
        };
    }
    let dump = dumps_needed(states, stamps.iter().map(|(_, s)| *s), facts);
    let lookups = stamps
        .iter()
        .filter(|(_, s)| states.contains(s.state) && !dump.contains(s.state))
        .copied()
        .collect();
    NamespacePlan {
        dump,
        sweep: false,
        lookups,
    }
}

/// The states that must be dumped with sock_diag in a complete namespace for a pass over
/// `states`, given its stamps: everything else is looked up from the index.
fn dumps_needed<'a>(
    states: StateSet,
    stamps: impl IntoIterator<Item = &'a Stamp>,
    facts: &NamespaceFacts,
) -> StateSet {
    let mut needed = StateSet::empty();
    let mut need = |s: TcpState| {
        if states.contains(s) {
            needed.insert(s);
        }
    };
    if facts.timewait != Some(0) {
        need(TcpState::TimeWait);
        need(TcpState::FinWait2);
    }
    let requests_possible = match facts.last_request {
        None => true,
        Some(None) => false,
        Some(Some(ago)) => ago <= REQUEST_LIFETIME,
    };
    if requests_possible {
        need(TcpState::SynRecv);
    }
    for stamp in stamps {
        // Stamped before its port was chosen (SYN_SENT): no id to look it up by.
        if stamp.local.port() == 0 {
            need(stamp.state);
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, Inode};

    fn stamp(state: TcpState, port: u16) -> Stamp {
        Stamp {
            state,
            entered_boot_ns: 1,
            netns_inode: 7,
            family: Family::Ipv4,
            local: format!("127.0.0.1:{port}").parse().expect("addr"),
            remote: "127.0.0.1:9".parse().expect("addr"),
            interface: 0,
            inode: Inode(11),
            uid: 0,
            swept: false,
        }
    }

    fn set(states: &[TcpState]) -> StateSet {
        StateSet::from_iter(states.iter().copied())
    }

    const QUIET: NamespaceFacts = NamespaceFacts {
        complete: true,
        timewait: Some(0),
        last_request: Some(None),
        host_sockets: None,
    };

    fn cookies(plan: &NamespacePlan<'_>) -> Vec<u64> {
        plan.lookups.iter().map(|(c, _)| c.0).collect()
    }

    #[test]
    fn a_quiet_complete_namespace_is_only_looked_up() {
        use TcpState::*;
        let (cw, ss, lack) = (
            stamp(CloseWait, 80),
            stamp(SynSent, 4000),
            stamp(LastAck, 81),
        );
        let stamps = [(Cookie(1), &cw), (Cookie(2), &ss), (Cookie(3), &lack)];
        let all = plan(StateSet::default_stuck(), &stamps, &QUIET);
        assert!(all.dump.is_empty() && !all.sweep, "{all:?}");
        assert_eq!(cookies(&all), [1, 2, 3]);
        // Only the stamps of the states asked for.
        let one = plan(set(&[CloseWait]), &stamps, &QUIET);
        assert_eq!(cookies(&one), [1]);
    }

    #[test]
    fn a_namespace_the_index_does_not_hold_whole_is_swept() {
        use TcpState::*;
        let facts = NamespaceFacts {
            complete: false,
            ..QUIET
        };
        let cw = stamp(CloseWait, 80);
        let p = plan(set(&[TimeWait]), &[(Cookie(1), &cw)], &facts);
        assert!(p.sweep && p.lookups.is_empty());
        // The sweep dumps every indexed state, and what the pass asks for.
        let mut want = indexed_states();
        want.insert(TimeWait);
        assert_eq!(p.dump, want);
    }

    #[test]
    fn minisockets_and_portless_stamps_are_dumped_for_their_states_only() {
        use TcpState::*;
        let all = StateSet::default_stuck();
        let dumped =
            |facts: &NamespaceFacts, stamps: &[(Cookie, &Stamp)]| plan(all, stamps, facts).dump;
        let timewait = NamespaceFacts {
            timewait: Some(3),
            ..QUIET
        };
        assert_eq!(
            dumped(&timewait, &[]),
            set(&[FinWait2]),
            "TIME_WAIT is not asked"
        );
        let unknown = NamespaceFacts {
            timewait: None,
            last_request: None,
            ..QUIET
        };
        assert_eq!(dumped(&unknown, &[]), set(&[FinWait2, SynRecv]));
        let recent = NamespaceFacts {
            last_request: Some(Some(Duration::from_secs(30))),
            ..QUIET
        };
        assert_eq!(dumped(&recent, &[]), set(&[SynRecv]));
        let long_ago = NamespaceFacts {
            last_request: Some(Some(REQUEST_LIFETIME + Duration::from_secs(1))),
            ..QUIET
        };
        assert!(dumped(&long_ago, &[]).is_empty());
        // A SYN_SENT stamped before its port was chosen is dumped; a CLOSE_WAIT stamped in
        // an accept queue (no inode yet) is looked up all the same.
        let (portless, queued) = (
            stamp(SynSent, 0),
            Stamp {
                inode: Inode(0),
                ..stamp(CloseWait, 80)
            },
        );
        let stamps = [(Cookie(1), &portless), (Cookie(2), &queued)];
        let p = plan(all, &stamps, &QUIET);
        assert_eq!(p.dump, set(&[SynSent]));
        assert_eq!(cookies(&p), [2]);
        // A dumped state is never looked up as well (it would be reported twice).
        let fin_wait_2 = stamp(FinWait2, 80);
        let p = plan(all, &[(Cookie(5), &fin_wait_2)], &timewait);
        assert!(p.lookups.is_empty(), "{p:?}");
        // Only what the pass asks for.
        assert_eq!(
            plan(set(&[LastAck]), &stamps, &unknown).dump,
            StateSet::empty()
        );
    }

    #[test]
    fn a_namespace_with_most_of_the_host_s_sockets_is_dumped_not_looked_up() {
        let cw = stamp(TcpState::CloseWait, 80);
        let stamps: Vec<(Cookie, &Stamp)> = (0..1000).map(|c| (Cookie(c), &cw)).collect();
        let all = StateSet::default_stuck();
        let with_host = |h| NamespaceFacts {
            host_sockets: Some(h),
            ..QUIET
        };
        // 1,000 of 1,100: one walk costs less than 1,000 lookups.
        let p = plan(all, &stamps, &with_host(1_100));
        assert_eq!((p.dump, p.lookups.len(), p.sweep), (all, 0, false));
        // 1,000 of 100,000: the walk would cost more.
        assert_eq!(plan(all, &stamps, &with_host(100_000)).lookups.len(), 1000);
        // Not counted: looked up.
        assert_eq!(plan(all, &stamps, &QUIET).lookups.len(), 1000);
    }

    #[test]
    fn only_indexed_states_and_time_wait_are_servable() {
        assert!(servable(StateSet::default_stuck()));
        assert!(servable(set(&[TcpState::TimeWait, TcpState::CloseWait])));
        assert!(!servable(set(&[TcpState::Established])));
        assert!(!servable(StateSet::all()));
    }
}
