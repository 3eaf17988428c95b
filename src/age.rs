//! How long a socket has been in its state, from the best evidence available: kernel
//! timers (exact), the moment the kernel moved it into its state (exact; known for sockets
//! that changed state while sockwarden's eBPF program was loaded), `tcp_info` "time since
//! last ACK/data" (exact for a silent socket, else a lower bound), and observation by the
//! agent (a lower bound).

use std::time::Duration;

use crate::model::{Age, AgeSource, KernelSocket, TcpState, TimerKind};

/// TIME_WAIT lasts a fixed 60 s in Linux (TCP_TIMEWAIT_LEN).
const TIME_WAIT_LEN: Duration = Duration::from_secs(60);

/// What the estimate knows besides the socket itself.
#[derive(Debug, Clone, Copy)]
pub struct AgeContext {
    /// `net.ipv4.tcp_fin_timeout` of the socket's namespace (orphaned FIN_WAIT2 timer length).
    pub tcp_fin_timeout: Duration,
    /// Time since boot: a `tcp_info` figure larger than this is a never-set field, not an age.
    pub uptime: Duration,
    /// How long ago the agent first saw this cookie in this state, if it has been watching.
    pub observed: Option<Duration>,
    /// How long ago the kernel moved this socket into this state, when the eBPF index
    /// recorded it.
    pub entered: Option<Duration>,
}

/// `tcp_info`'s "ms since" figures are u32 milliseconds: they wrap every 2^32 ms (49.7 days).
/// On a host up longer than that, a figure may have wrapped — a socket that old looks
/// young — and a smaller figure than the agent's observation is either a wrap or traffic
/// that reset it; the two cannot be told apart. Both make the figure too small, never too
/// large, so it stays a lower bound, the observation wins when larger, and nothing is ever
/// added to it (adding a turn for what was only traffic would make a young socket look 49.7
/// days old, and rules fire at once).
pub const TCP_INFO_WRAP: Duration = Duration::from_millis(1 << 32);

/// Whether `tcp_info` figures on a host up `uptime` may have wrapped.
pub fn tcp_info_may_wrap(uptime: Duration) -> bool {
    uptime >= TCP_INFO_WRAP
}

/// The age of `socket`: the largest of the figures that are valid lower bounds, with the
/// source that gave it. Exact timer figures win outright.
pub fn estimate(socket: &KernelSocket, ctx: &AgeContext) -> Age {
    if let Some(age) = from_timer(socket, ctx) {
        return age;
    }
    if let Some(entered) = ctx.entered {
        return Age {
            secs: entered.as_secs(),
            source: AgeSource::KernelTransition,
            lower_bound: false,
        };
    }
    let observed = ctx.observed.map(|d| Age {
        secs: d.as_secs(),
        source: AgeSource::Observed,
        lower_bound: true,
    });
    let tcp = from_tcp_info(socket, ctx);
    match (tcp, observed) {
        (Some(t), Some(o)) if o.secs > t.secs => o,
        (Some(t), _) => t,
        (None, Some(o)) => o,
        (None, None) => Age {
            secs: 0,
            source: AgeSource::Observed,
            lower_bound: true,
        },
    }
}

/// TIME_WAIT and orphaned FIN_WAIT2 minisockets run one timer of known length from the
/// moment they entered the state: age = length − remaining.
fn from_timer(socket: &KernelSocket, ctx: &AgeContext) -> Option<Age> {
    let timer = socket.timer?;
    if timer.kind != TimerKind::TimeWait {
        return None;
    }
    let length = match socket.state {
        TcpState::TimeWait => TIME_WAIT_LEN,
        TcpState::FinWait2 => ctx.tcp_fin_timeout,
        _ => return None,
    };
    let remaining = Duration::from_millis(timer.expires_ms);
    Some(Age {
        secs: length.saturating_sub(remaining).as_secs(),
        source: AgeSource::KernelTimer,
        lower_bound: false,
    })
}

/// The `tcp_info` field that starts counting when the socket enters `state`:
/// - CLOSE_WAIT: the peer's FIN carried its last ACK; FIN_WAIT2: the peer ACKed our FIN;
///   ESTABLISHED: time since the peer last said anything.
/// - FIN_WAIT1, LAST_ACK, CLOSING, SYN_SENT: our FIN (or SYN) was the last data we sent.
fn from_tcp_info(socket: &KernelSocket, ctx: &AgeContext) -> Option<Age> {
    let tcp = socket.tcp?;
    let ms = match socket.state {
        TcpState::CloseWait | TcpState::FinWait2 | TcpState::Established => tcp.last_ack_recv_ms,
        TcpState::FinWait1 | TcpState::LastAck | TcpState::Closing | TcpState::SynSent => {
            tcp.last_data_sent_ms
        }
        _ => return None,
    };
    let age = Duration::from_millis(u64::from(ms));
    if age > ctx.uptime {
        return None;
    }
    Some(Age {
        secs: age.as_secs(),
        source: AgeSource::TcpInfo,
        lower_bound: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cookie, Family, Inode, NetnsId, TcpTimes, Timer};

    fn socket(state: TcpState, timer: Option<Timer>, tcp: Option<TcpTimes>) -> KernelSocket {
        KernelSocket {
            netns: NetnsId {
                dev: 4,
                inode: 4026531840,
            },
            family: Family::Ipv4,
            state,
            local: "127.0.0.1:80".parse().expect("addr"),
            remote: "127.0.0.1:5555".parse().expect("addr"),
            interface: 0,
            cookie: Cookie(1),
            inode: Inode(7),
            uid: 0,
            recv_q: 0,
            send_q: 0,
            timer,
            tcp,
        }
    }

    fn ctx(observed: Option<u64>) -> AgeContext {
        AgeContext {
            tcp_fin_timeout: Duration::from_secs(60),
            uptime: Duration::from_secs(86_400),
            observed: observed.map(Duration::from_secs),
            entered: None,
        }
    }

    #[test]
    fn the_recorded_transition_is_exact_and_beats_tcp_info_and_observation() {
        let s = socket(TcpState::CloseWait, None, acked(5_000));
        let ctx = AgeContext {
            entered: Some(Duration::from_secs(3_600)),
            ..ctx(Some(7_200))
        };
        let age = estimate(&s, &ctx);
        assert_eq!(
            (age.secs, age.source, age.lower_bound),
            (3_600, AgeSource::KernelTransition, false),
            "a socket that entered its state an hour ago is an hour old, whatever it did since"
        );
        // A minisocket's timer is as exact and comes from the socket itself.
        let tw = socket(
            TcpState::TimeWait,
            Some(Timer {
                kind: TimerKind::TimeWait,
                expires_ms: 20_000,
                retransmits: 0,
            }),
            None,
        );
        assert_eq!(estimate(&tw, &ctx).source, AgeSource::KernelTimer);
    }

    fn acked(ms: u32) -> Option<TcpTimes> {
        Some(TcpTimes {
            last_ack_recv_ms: ms,
            last_data_sent_ms: 999_999_000,
            last_data_recv_ms: 0,
        })
    }

    fn tw_timer(expires_ms: u64) -> Option<Timer> {
        Some(Timer {
            kind: TimerKind::TimeWait,
            expires_ms,
            retransmits: 0,
        })
    }

    #[test]
    fn each_state_takes_its_evidence() {
        // (what, socket, observed secs, expected secs, source, lower bound)
        let cases = [
            (
                "time-wait: 60 s minus remaining",
                socket(TcpState::TimeWait, tw_timer(15_000), None),
                None,
                45,
                AgeSource::KernelTimer,
                false,
            ),
            (
                "orphan fin-wait-2: fin_timeout minus remaining",
                socket(TcpState::FinWait2, tw_timer(50_000), None),
                None,
                10,
                AgeSource::KernelTimer,
                false,
            ),
            (
                "close-wait: since the peer's FIN",
                socket(TcpState::CloseWait, None, acked(3_012)),
                None,
                3,
                AgeSource::TcpInfo,
                true,
            ),
            (
                "owned fin-wait-2: since our FIN was acked",
                socket(TcpState::FinWait2, None, acked(125_000)),
                None,
                125,
                AgeSource::TcpInfo,
                true,
            ),
            (
                "observation older than tcp_info wins",
                socket(TcpState::CloseWait, None, acked(3_000)),
                Some(600),
                600,
                AgeSource::Observed,
                true,
            ),
            (
                "tcp_info older than observation wins",
                socket(TcpState::CloseWait, None, acked(900_000)),
                Some(600),
                900,
                AgeSource::TcpInfo,
                true,
            ),
            (
                "syn-recv has no evidence: lower bound 0",
                socket(TcpState::SynRecv, None, None),
                None,
                0,
                AgeSource::Observed,
                true,
            ),
            (
                "a never-set field beyond uptime is ignored",
                socket(TcpState::LastAck, None, acked(1)),
                Some(5),
                5,
                AgeSource::Observed,
                true,
            ),
        ];
        for (what, sock, observed, secs, source, lower) in cases {
            let age = estimate(&sock, &ctx(observed));
            assert_eq!(
                (age.secs, age.source, age.lower_bound),
                (secs, source, lower),
                "{what}"
            );
        }
    }

    #[test]
    fn remaining_longer_than_the_timer_does_not_underflow() {
        let age = estimate(
            &socket(TcpState::TimeWait, tw_timer(70_000), None),
            &ctx(None),
        );
        assert_eq!(age.secs, 0);
    }

    /// Regression (house-in-order issue): `tcpi_last_ack_recv` is a u32 of milliseconds;
    /// after 49.7 days it wraps and a very old socket looks young. At the boundary the
    /// figure is read in full; past it, the observation (when longer) wins and nothing is
    /// invented on top of the figure.
    #[test]
    fn tcp_info_at_and_past_the_wrap() {
        let day = 86_400u64;
        let ctx = |observed: Option<u64>, uptime: u64| AgeContext {
            tcp_fin_timeout: Duration::from_secs(60),
            uptime: Duration::from_secs(uptime),
            observed: observed.map(Duration::from_secs),
            entered: None,
        };
        // The largest figure the kernel can give: 2^32 - 1 ms = 49.7 days, on a host up
        // longer than that.
        let s = socket(TcpState::CloseWait, None, acked(u32::MAX));
        let age = estimate(&s, &ctx(None, 60 * day));
        assert_eq!(age.secs, 4_294_967);
        assert!(age.lower_bound);
        // Up 120 days, 1 day on the u32 clock, watched for 30 days: wrapped or reset by
        // traffic — the observation stands, and no 49.7-day turn is added.
        let s = socket(TcpState::CloseWait, None, acked(86_400_000));
        let age = estimate(&s, &ctx(Some(30 * day), 120 * day));
        assert_eq!((age.secs, age.source), (30 * day, AgeSource::Observed));
        // Watched for less than the figure: the figure.
        let age = estimate(&s, &ctx(Some(3600), 120 * day));
        assert_eq!((age.secs, age.source), (day, AgeSource::TcpInfo));
        assert!(!tcp_info_may_wrap(Duration::from_secs(49 * day)));
        assert!(tcp_info_may_wrap(Duration::from_secs(50 * day)));
    }
}
