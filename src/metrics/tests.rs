//! render() for built snapshots, plans and reports: exact lines, escaping, cumulative
//! buckets, counters that accumulate and gauges that are replaced.

use crate::sys::fake;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::engine::{PlanItem, Target};
use crate::model::{
    Cookie, Inode, KernelSocket, Netns, NetnsId, Pid, Process, ProcessId, StuckSocket,
};
use crate::policy::Action;

const HOST: NetnsId = NetnsId {
    dev: 4,
    inode: 4026531840,
};
const ODD: NetnsId = NetnsId {
    dev: 4,
    inode: 4026532999,
};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn process(pid: i32, unit: Option<&str>) -> Arc<Process> {
    Arc::new(Process {
        id: ProcessId {
            pid: Pid(pid),
            start_time: 1,
        },
        comm: "srv".into(),
        cmdline: "srv".into(),
        exe: None,
        uid: 0,
        unit: unit.map(str::to_string),
        container: None,
        handle: Default::default(),
    })
}

fn sock(
    cookie: u64,
    netns: NetnsId,
    state: TcpState,
    age_secs: u64,
    owners: &[&Arc<Process>],
) -> StuckSocket {
    let socket = KernelSocket {
        local: "10.0.0.1:8080".parse().expect("addr"),
        remote: "10.0.0.2:40000".parse().expect("addr"),
        inode: Inode(cookie),
        ..fake::socket(netns, cookie, state)
    };
    fake::stuck(socket, owners, age_secs)
}

fn snapshot(taken_at: u64, sockets: Vec<StuckSocket>) -> Snapshot {
    Snapshot {
        taken_at: at(taken_at),
        namespaces: vec![
            Netns::new(HOST, "host", PathBuf::from("/proc/1/ns/net")),
            Netns::new(ODD, "we\"ird\\ns\nx", PathBuf::from("/run/netns/weird")),
        ],
        sockets,
        unseen: Vec::new(),
        tcp_info_may_wrap: false,
        warnings: vec![],
        owners_scanned: true,
        unreadable_processes: 0,
        passed_over: vec![],
        unlisted: vec![],
    }
}

fn item(rule: &str, action: Action, decision: Decision) -> PlanItem {
    PlanItem {
        rule: rule.into(),
        escalated: false,
        action: action.into(),
        target: Target::Socket {
            cookie: Cookie(1),
            index: 0,
        },
        owner: None,
        socket_indices: vec![0].into(),
        exec: None,
        decision,
        reason: Default::default(),
    }
}

fn held(rule: &str, reason: HeldReason) -> PlanItem {
    item(rule, Action::Destroy, Decision::Held(reason))
}

fn report(rule: &str, action: &str, result: &str) -> ActionReport {
    ActionReport {
        rule: rule.into(),
        action: action.into(),
        target: crate::actions::TargetText::Words("socket 0x1".into()),
        action_ref: crate::audit::Action::new(crate::policy::ActionKind::Destroy),
        target_ref: crate::record::TargetRef::Socket {
            netns_inode: 1,
            cookie: 1,
        },
        result: result.into(),
        errno: None,
        message: None,
        intent_seq: Some(1),
        age_secs: None,
    }
}

fn plan(mode: Mode, items: Vec<PlanItem>) -> Plan {
    Plan { mode, items }
}

/// The lines of the rendering that start with `prefix` (samples of one family, or its
/// comments), in order.
fn lines_of(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn a_small_pass_renders_exactly() {
    let api = process(100, Some("api.service"));
    let script = process(200, None);
    let m = Metrics::new();
    m.set_capability("sock_destroy", true);
    m.set_capability("systemd", false);
    let snap = snapshot(
        1_700_000_000,
        vec![
            sock(1, HOST, TcpState::CloseWait, 5, &[&api]),
            sock(2, HOST, TcpState::CloseWait, 700, &[&api]),
            sock(3, HOST, TcpState::CloseWait, 90_000, &[&script]),
            sock(4, HOST, TcpState::FinWait2, 60, &[]),
        ],
    );
    let p = plan(
        Mode::Enforce,
        vec![
            item("leak", Action::Destroy, Decision::Act),
            held(
                "leak",
                HeldReason::Budget {
                    budget: "max_destroys_per_minute".into(),
                    limit: 1,
                    used: 1,
                },
            ),
            held("leak", HeldReason::NoOwner),
        ],
    );
    m.observe_pass(
        &snap,
        &p,
        &[report("leak", "destroy", "destroyed")],
        Duration::from_millis(3),
    );
    let out = m.render();

    assert_eq!(
        lines_of(&out, "sockwarden_stuck_sockets"),
        [
            "sockwarden_stuck_sockets{state=\"fin-wait-2\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"\"} 1",
            "sockwarden_stuck_sockets{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"\"} 1",
            "sockwarden_stuck_sockets{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"api.service\"} 2",
        ]
    );
    assert!(out.contains("# TYPE sockwarden_stuck_sockets gauge\n"));
    assert!(out.contains("# HELP sockwarden_stuck_sockets Sockets old enough for a rule"));

    // A snapshot is a gauge: the oldest of each group, with the groups' labels.
    assert_eq!(
        lines_of(&out, "sockwarden_stuck_oldest_age_seconds"),
        [
            "sockwarden_stuck_oldest_age_seconds{state=\"fin-wait-2\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"\"} 60",
            "sockwarden_stuck_oldest_age_seconds{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"\"} 90000",
            "sockwarden_stuck_oldest_age_seconds{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"api.service\"} 700",
        ]
    );
    assert!(out.contains("# TYPE sockwarden_stuck_oldest_age_seconds gauge\n"));
    // Events are a histogram: socket 1 (5 s old) was destroyed.
    assert!(out.contains("# TYPE sockwarden_destroyed_socket_age_seconds histogram\n"));
    assert!(out.contains("sockwarden_destroyed_socket_age_seconds_bucket{le=\"10\"} 1\n"));
    assert!(out.contains(
        "sockwarden_destroyed_socket_age_seconds_sum 5\nsockwarden_destroyed_socket_age_seconds_count 1\n"
    ));

    assert_eq!(
        lines_of(&out, "sockwarden_actions_total"),
        ["sockwarden_actions_total{action=\"destroy\",rule=\"leak\",outcome=\"destroyed\"} 1"]
    );
    assert!(out.contains("# TYPE sockwarden_actions_total counter\n"));
    assert_eq!(
        lines_of(&out, "sockwarden_guard_refusals_total"),
        [
            "sockwarden_guard_refusals_total{guard=\"budget:max_destroys_per_minute\",rule=\"leak\"} 1",
            "sockwarden_guard_refusals_total{guard=\"no-owner\",rule=\"leak\"} 1",
        ]
    );
    assert!(out.contains(
        "sockwarden_scan_duration_seconds_bucket{le=\"0.0025\"} 0\n\
         sockwarden_scan_duration_seconds_bucket{le=\"0.005\"} 1\n"
    ));
    assert!(out.contains("sockwarden_scan_duration_seconds_sum 0.003\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_count 1\n"));
    assert!(out.contains("# TYPE sockwarden_passes_total counter\nsockwarden_passes_total 1\n"));
    assert!(out.contains("sockwarden_last_pass_timestamp_seconds 1700000000\n"));
    assert!(out.contains("sockwarden_mode{mode=\"enforce\"} 1\n"));
    assert_eq!(
        lines_of(&out, "sockwarden_capability"),
        [
            "sockwarden_capability{capability=\"sock_destroy\"} 1",
            "sockwarden_capability{capability=\"systemd\"} 0",
        ]
    );
    assert!(out.contains(&format!(
        "sockwarden_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(out.ends_with('\n'));
}

#[test]
fn every_family_has_help_and_type_before_its_samples() {
    let m = Metrics::new();
    let a = process(1, Some("a.service"));
    m.observe_pass(
        &snapshot(10, vec![sock(1, HOST, TcpState::CloseWait, 3, &[&a])]),
        &plan(Mode::Observe, vec![held("r", HeldReason::Observe)]),
        &[report("r", "destroy", "observed")],
        Duration::from_millis(1),
    );
    m.set_capability("pidfd", true);
    let out = m.render();
    let mut declared: Vec<(String, String)> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap_or_default().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(
                helped.last().map(String::as_str),
                Some(name),
                "HELP before TYPE"
            );
            declared.push((name.to_string(), kind.to_string()));
        } else {
            let name = line.split(['{', ' ']).next().expect("sample name");
            let (family, kind) = declared.last().expect("a sample before any TYPE");
            let ok = match kind.as_str() {
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_string()),
                _ => name == family,
            };
            assert!(ok, "{line} is not a sample of {family} ({kind})");
        }
    }
    let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "sockwarden_stuck_sockets",
            "sockwarden_stuck_oldest_age_seconds",
            "sockwarden_watched_sockets",
            "sockwarden_destroyed_socket_age_seconds",
            "sockwarden_actions_total",
            "sockwarden_guard_refusals_total",
            "sockwarden_scan_duration_seconds",
            "sockwarden_passes_total",
            "sockwarden_failed_passes_total",
            "sockwarden_audit_write_failures_total",
            "sockwarden_last_pass_timestamp_seconds",
            "sockwarden_mode",
            "sockwarden_capability",
            "sockwarden_unseen_namespaces",
            "sockwarden_audit_head_seq",
            "sockwarden_watcher",
            "sockwarden_build_info",
        ]
    );
    for (n, kind) in &declared {
        assert_eq!(
            n.ends_with("_total"),
            kind == "counter",
            "{n}: counters and only counters end in _total"
        );
    }
}

#[test]
fn label_values_are_escaped() {
    let odd = process(1, Some("a\"b\\c\nd.service"));
    let m = Metrics::new();
    m.observe_pass(
        &snapshot(10, vec![sock(1, ODD, TcpState::LastAck, 3, &[&odd])]),
        &plan(Mode::Enforce, vec![held("r\"1", HeldReason::Listening)]),
        &[],
        Duration::ZERO,
    );
    let out = m.render();
    assert!(
        out.contains(
            "sockwarden_stuck_sockets{state=\"last-ack\",netns=\"we\\\"ird\\\\ns\\nx\",pod_uid=\"\",container=\"\",unit=\"a\\\"b\\\\c\\nd.service\"} 1\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("sockwarden_guard_refusals_total{guard=\"listening\",rule=\"r\\\"1\"} 1\n")
    );
    // No raw newline leaked into a sample: every line is a comment or ends in a value.
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
    }
}

#[test]
fn counters_accumulate_and_gauges_are_replaced() {
    let api = process(100, Some("api.service"));
    let web = process(300, Some("web.service"));
    let m = Metrics::new();
    let destroy = |n: usize| {
        (0..n)
            .map(|_| report("leak", "destroy", "destroyed"))
            .collect::<Vec<_>>()
    };
    m.observe_pass(
        &snapshot(
            100,
            vec![
                sock(1, HOST, TcpState::CloseWait, 20, &[&api]),
                sock(2, HOST, TcpState::CloseWait, 20, &[&web]),
            ],
        ),
        &plan(
            Mode::Enforce,
            vec![held(
                "leak",
                HeldReason::Cooldown {
                    last_secs_ago: 1,
                    cooldown_secs: 60,
                },
            )],
        ),
        &destroy(2),
        Duration::from_millis(20),
    );
    m.observe_pass(
        &snapshot(160, vec![sock(1, HOST, TcpState::CloseWait, 80, &[&api])]),
        &plan(
            Mode::Enforce,
            vec![held(
                "leak",
                HeldReason::Cooldown {
                    last_secs_ago: 61,
                    cooldown_secs: 600,
                },
            )],
        ),
        &destroy(3),
        Duration::from_millis(200),
    );
    let out = m.render();
    assert_eq!(
        lines_of(&out, "sockwarden_stuck_sockets"),
        ["sockwarden_stuck_sockets{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"api.service\"} 1"],
        "web.service left the snapshot, so it leaves the gauge"
    );
    assert!(out.contains(
        "sockwarden_stuck_oldest_age_seconds{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"api.service\"} 80\n"
    ));
    assert!(out.contains(
        "sockwarden_actions_total{action=\"destroy\",rule=\"leak\",outcome=\"destroyed\"} 5\n"
    ));
    assert!(out.contains("sockwarden_guard_refusals_total{guard=\"cooldown\",rule=\"leak\"} 2\n"));
    assert!(out.contains("sockwarden_passes_total 2\n"));
    assert!(out.contains("sockwarden_last_pass_timestamp_seconds 160\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_count 2\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_bucket{le=\"0.025\"} 1\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_bucket{le=\"0.25\"} 2\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_bucket{le=\"+Inf\"} 2\n"));

    // An empty pass empties the gauges and the age histogram, not the counters.
    m.observe_pass(
        &snapshot(220, vec![]),
        &plan(Mode::Enforce, vec![]),
        &[],
        Duration::from_millis(1),
    );
    let out = m.render();
    assert!(lines_of(&out, "sockwarden_stuck_sockets").is_empty());
    assert!(lines_of(&out, "sockwarden_stuck_oldest_age_seconds").is_empty());
    assert!(out.contains(
        "sockwarden_actions_total{action=\"destroy\",rule=\"leak\",outcome=\"destroyed\"} 5\n"
    ));
    assert!(out.contains("sockwarden_passes_total 3\n"));
}

#[test]
fn histogram_buckets_are_cumulative_and_inf_is_the_count() {
    let m = Metrics::new();
    let ages = [
        0, 10, 11, 59, 60, 61, 299, 301, 599, 601, 1799, 1801, 3599, 3601, 21601, 86400, 86401,
        10_000_000,
    ];
    let sockets = ages
        .iter()
        .enumerate()
        .map(|(i, &a)| sock(i as u64, HOST, TcpState::FinWait2, a, &[]))
        .collect();
    // Every socket destroyed: the event histogram gets each one's age.
    let reports: Vec<ActionReport> = (0..ages.len())
        .map(|i| {
            let mut r = report("leak", "destroy", "destroyed");
            r.target_ref = crate::record::TargetRef::Socket {
                netns_inode: 1,
                cookie: i as u64,
            };
            r
        })
        .collect();
    m.observe_pass(
        &snapshot(1, sockets),
        &plan(Mode::Observe, vec![]),
        &reports,
        Duration::from_secs(30),
    );
    let out = m.render();
    let buckets: Vec<(String, u64)> =
        lines_of(&out, "sockwarden_destroyed_socket_age_seconds_bucket")
            .iter()
            .map(|l| {
                let le = l
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .expect("le");
                let n = l
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("count");
                (le.to_string(), n)
            })
            .collect();
    let expected: Vec<(String, u64)> = AGE_BUCKETS
        .iter()
        .map(|&b| {
            (
                text::float(b),
                ages.iter().filter(|&&a| a as f64 <= b).count() as u64,
            )
        })
        .chain([("+Inf".to_string(), ages.len() as u64)])
        .collect();
    assert_eq!(buckets, expected);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    assert!(out.contains(&format!(
        "sockwarden_destroyed_socket_age_seconds_count {}\n",
        ages.len()
    )));
    // A scan slower than the last bucket lands in +Inf only.
    assert!(out.contains("sockwarden_scan_duration_seconds_bucket{le=\"10\"} 0\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
}

#[test]
fn guard_and_action_labels() {
    let pid = ProcessId {
        pid: Pid(5),
        start_time: 1,
    };
    for (reason, name) in [
        (HeldReason::Observe, "observe"),
        (HeldReason::Listening, "listening"),
        (
            HeldReason::Protected {
                what: "sshd".into(),
            },
            "protected",
        ),
        (HeldReason::NoOwner, "no-owner"),
        (HeldReason::NoUnit, "no-unit"),
        (
            HeldReason::Cooldown {
                last_secs_ago: 1,
                cooldown_secs: 2,
            },
            "cooldown",
        ),
        (
            HeldReason::Budget {
                budget: "max_restarts_per_unit_per_hour".into(),
                limit: 1,
                used: 1,
            },
            "budget:max_restarts_per_unit_per_hour",
        ),
        (
            HeldReason::OwnerFraction {
                owner: pid,
                limit: 1,
                matching: 4,
            },
            "owner-fraction",
        ),
        (
            HeldReason::AlreadyPlanned { rule: "x".into() },
            "already-planned",
        ),
    ] {
        assert_eq!(guard_name(&reason), name);
    }
    // The report's action text carries the signal or the command line; the label does not.
    for (text, label) in [
        ("destroy", "destroy"),
        ("log", "log"),
        ("restart", "restart"),
        ("signal SIGTERM", "signal"),
        ("exec /usr/local/bin/notify {cookie} --why \"x\"", "exec"),
        ("", "other"),
        ("frobnicate", "other"),
    ] {
        assert_eq!(action_name(text), label, "{text:?}");
    }
}

#[test]
fn before_the_first_pass() {
    let out = Metrics::new().render();
    assert!(out.contains("sockwarden_passes_total 0\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    assert!(out.contains("sockwarden_scan_duration_seconds_count 0\n"));
    assert!(lines_of(&out, "sockwarden_last_pass_timestamp_seconds").is_empty());
    assert!(out.contains("# TYPE sockwarden_last_pass_timestamp_seconds gauge\n"));
    assert!(!out.contains("sockwarden_mode{"));
}

#[test]
fn failed_passes_keep_the_last_gauges() {
    let m = Metrics::new();
    m.observe_pass(
        &snapshot(5, vec![sock(1, HOST, TcpState::Closing, 1, &[])]),
        &plan(Mode::Enforce, vec![]),
        &[],
        Duration::ZERO,
    );
    m.observe_failed_pass(false);
    let out = m.render();
    assert!(out.contains("sockwarden_failed_passes_total 1\n"));
    assert!(out.contains("sockwarden_passes_total 1\n"));
    assert!(
        out.contains("sockwarden_stuck_sockets{state=\"closing\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"\"} 1\n")
    );
}

#[test]
fn textfile_is_replaced_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sockwarden.prom");
    let m = Metrics::new();
    std::fs::write(&path, "old\n").expect("seed");
    m.write_textfile(&path).expect("write");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), m.render());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["sockwarden.prom"], "no temporary file left behind");

    let err = m
        .write_textfile(&dir.path().join("missing/x.prom"))
        .expect_err("no such directory");
    assert!(
        matches!(
            err,
            MetricsError::Textfile {
                step: "open directory",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn listen_addresses_as_node_exporter_takes_them() {
    assert_eq!(
        super::parse_listen(":9477"),
        Ok("0.0.0.0:9477".parse().expect("addr"))
    );
    assert_eq!(
        super::parse_listen("[::1]:9477"),
        Ok("[::1]:9477".parse().expect("addr"))
    );
    let e = super::parse_listen("localhost:9477").expect_err("a name is not an address");
    assert!(
        e.contains("`localhost:9477`") && e.contains(":9477)"),
        "{e}"
    );
    assert!(super::parse_listen(":99999").is_err());
}

#[test]
fn liveness_is_the_age_of_the_last_completed_pass_in_intervals() {
    let metrics = Metrics::new();
    metrics.set_interval(std::time::Duration::from_secs(10));
    let st = metrics.lock();
    let start = st.started;
    let at = |secs| start + std::time::Duration::from_secs(secs);
    assert!(Metrics::liveness_at(&st, at(29)).ok, "starting up");
    let stuck = Metrics::liveness_at(&st, at(30));
    assert!(
        !stuck.ok && stuck.detail.contains("no pass yet"),
        "{stuck:?}"
    );
    drop(st);
    let mut st = metrics.lock();
    st.last_completed = Some(at(100));
    assert!(Metrics::liveness_at(&st, at(129)).ok);
    assert!(!Metrics::liveness_at(&st, at(130)).ok);
}

#[test]
fn groups_are_labelled_by_pod_and_container_and_every_watched_socket_counts() {
    let mut snap = snapshot(10, vec![]);
    let pod = "0f4c1a2b-3d4e-4f50-8a6b-7c8d9e0f1a2b";
    snap.namespaces[1].origin = crate::model::NetnsOrigin {
        label: format!("pod:{pod}"),
        pod_uid: Some(pod.into()),
        container: Some("aaaaaaaaaaaa".into()),
    };
    // The owner's own container wins over the namespace's (a pod has several).
    let mut app = (*process(1, None)).clone();
    app.container = Some("bbbbbbbbbbbb".into());
    let app = Arc::new(app);
    snap.sockets = vec![sock(1, ODD, TcpState::CloseWait, 30, &[&app])];
    snap.passed_over = vec![
        (ODD, Cookie(2), TcpState::CloseWait),
        (ODD, Cookie(3), TcpState::FinWait2),
        (HOST, Cookie(4), TcpState::FinWait2),
    ];
    let m = Metrics::new();
    m.observe_pass(&snap, &plan(Mode::Observe, vec![]), &[], Duration::ZERO);
    let out = m.render();
    assert_eq!(
        lines_of(&out, "sockwarden_stuck_sockets"),
        [format!(
            "sockwarden_stuck_sockets{{state=\"close-wait\",netns=\"pod:{pod}\",pod_uid=\"{pod}\",container=\"bbbbbbbbbbbb\",unit=\"\"}} 1"
        )]
    );
    assert_eq!(
        lines_of(&out, "sockwarden_watched_sockets"),
        [
            "sockwarden_watched_sockets{state=\"fin-wait-2\",netns=\"host\"} 1".to_string(),
            format!("sockwarden_watched_sockets{{state=\"fin-wait-2\",netns=\"pod:{pod}\"}} 1"),
            format!("sockwarden_watched_sockets{{state=\"close-wait\",netns=\"pod:{pod}\"}} 2"),
        ]
    );
    // No label carries a pid.
    assert!(!out.contains("pid:"), "{out}");
}

#[test]
fn an_audit_failure_is_counted_apart() {
    let m = Metrics::new();
    m.observe_failed_pass(false);
    m.observe_failed_pass(true);
    let out = m.render();
    assert!(out.contains("sockwarden_failed_passes_total 2\n"), "{out}");
    assert!(
        out.contains("sockwarden_audit_write_failures_total 1\n"),
        "{out}"
    );
}

#[test]
fn the_watcher_series_names_the_watcher_once_set() {
    let m = Metrics::new();
    assert!(
        !m.render().contains("sockwarden_watcher{"),
        "no sample before it is known"
    );
    m.set_watcher("sock-diag");
    m.set_watcher("bpf");
    let text = m.render();
    assert!(
        text.contains("sockwarden_watcher{watcher=\"bpf\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("watcher=\"sock-diag\""),
        "only the current watcher"
    );
}
