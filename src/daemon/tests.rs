//! Passes of the daemon over the fake system: acting, observing, degrading what cannot work,
//! ageing by observation across passes and restarts, reloads, and a trail it cannot write.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::*;
use crate::model::{Cookie, KernelSocket, NetnsId, TcpState};
use crate::sys::fake;
use crate::sys::fake::FakeSystem;

const NS: NetnsId = NetnsId {
    dev: 4,
    inode: 4026532000,
};

fn netns() -> Netns {
    Netns::new(NS, "host", "/proc/1/ns/net")
}

/// A socket in `state`; `idle_ms` is its tcp_info age, `None` for no tcp_info at all.
fn sock(cookie: u64, state: TcpState, idle_ms: Option<u32>) -> KernelSocket {
    KernelSocket {
        tcp: idle_ms.map(fake::idle),
        ..fake::socket(NS, cookie, state)
    }
}

fn fake(sockets: Vec<KernelSocket>) -> FakeSystem {
    FakeSystem {
        namespaces: vec![netns()],
        sockets,
        uptime: Duration::from_secs(100_000_000),
        ..FakeSystem::default()
    }
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(policy: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), policy).expect("write policy");
        Setup { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn sources(&self) -> Sources {
        Sources {
            config: self.path("absent.toml"),
            explicit: false,
            flags: Settings {
                policy: Some(self.path("policy.toml")),
                audit_log: Some(self.path("audit.jsonl")),
                state_dir: Some(self.path("state")),
                ..Settings::default()
            },
        }
    }
    fn daemon<'a>(&self, sys: &'a FakeSystem, caps: Capabilities) -> Daemon<'a> {
        let sources = self.sources();
        let (config, policies) = sources.load().expect("valid settings");
        Daemon::new(sys, sources, config, policies, caps, t(1_000_000))
    }
    fn records(&self) -> Vec<Value> {
        records(&self.path("audit.jsonl"))
    }
}

/// The trail as `audit show --json` gives it: one entry per socket, outcomes joined.
fn records(path: &Path) -> Vec<Value> {
    match crate::audit::read_trail(path) {
        Ok(trail) => trail
            .records
            .iter()
            .map(|r| serde_json::to_value(r).expect("JSON"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn kinds(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

const DESTROY_CW: &str = r#"
mode = "enforce"
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "3s"
action = "destroy"
"#;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

#[test]
fn old_sockets_are_destroyed_with_intent_and_outcome_young_ones_left_alone() {
    let setup = Setup::new(DESTROY_CW);
    let sys = fake(vec![
        sock(1, TcpState::CloseWait, Some(10_000)),
        sock(2, TcpState::CloseWait, Some(1_000)),
    ]);
    let mut d = setup.daemon(&sys, Capabilities::all());
    let s = d.pass(t(0));
    assert_eq!(s.error, None);
    assert_eq!(
        (s.watched, s.stuck, s.acted, s.succeeded),
        (2, 1, 1, 1),
        "{s}"
    );
    assert!(sys.destroyed.borrow().contains(&Cookie(1)));
    assert!(!sys.destroyed.borrow().contains(&Cookie(2)));
    let recs = setup.records();
    assert_eq!(kinds(&recs), ["intent", "outcome"]);
    assert_eq!(recs[0]["actor"]["kind"], "daemon");
    assert_eq!(recs[1]["outcome"]["result"], "destroyed");
    assert!(
        s.to_string().starts_with("pass 1: 1 stuck of 2 watched"),
        "{s}"
    );
}

#[test]
fn nothing_stuck_means_one_dump_no_proc_walk_and_no_audit_read() {
    let setup = Setup::new(DESTROY_CW);
    let sys = fake(vec![sock(2, TcpState::CloseWait, Some(1_000))]);
    let mut d = setup.daemon(&sys, Capabilities::all());
    d.pass(t(0));
    sys.calls.borrow_mut().clear();
    let s = d.pass(t(1));
    assert_eq!(s.error, None);
    assert_eq!(
        *sys.calls.borrow(),
        ["dump host"],
        "the second pass only dumps"
    );
    assert!(!setup.path("audit.jsonl").exists());
}

#[test]
fn observe_mode_records_each_would_be_action_once() {
    let setup = Setup::new(&DESTROY_CW.replace("enforce", "observe"));
    let sys = fake(vec![sock(1, TcpState::CloseWait, Some(10_000))]);
    let mut d = setup.daemon(&sys, Capabilities::all());
    let s = d.pass(t(0));
    assert_eq!((s.acted, s.observed), (0, 1), "{s}");
    d.pass(t(1));
    d.pass(t(2));
    assert!(sys.destroyed.borrow().is_empty());
    let recs = setup.records();
    assert_eq!(kinds(&recs), ["dry-run"], "once, not every pass");
    assert_eq!(recs[0]["mode"], "observe");
}

/// The daemon's degraded modes, from what the probes find on the (fake) machine: in
/// enforce mode an action that cannot work here is said loudly and recorded as observed.
#[test]
fn each_probe_failure_degrades_its_action_to_observe() {
    use crate::sys::fake::Probes;
    use crate::sys::DestroyOutcome;
    let signal = DESTROY_CW.replace(
        "action = \"destroy\"",
        "action = \"signal\"\nsignal = \"SIGHUP\"",
    );
    let restart = DESTROY_CW.replace("action = \"destroy\"", "action = \"restart\"");
    let cases: Vec<(&str, String, Probes, &str)> = vec![
        (
            "no SOCK_DESTROY",
            DESTROY_CW.to_string(),
            Probes {
                destroy: DestroyOutcome::Unsupported,
                ..Probes::default()
            },
            "CONFIG_INET_DIAG_DESTROY",
        ),
        (
            "no CAP_NET_ADMIN",
            DESTROY_CW.to_string(),
            Probes {
                destroy: DestroyOutcome::NotPermitted,
                ..Probes::default()
            },
            "needs CAP_NET_ADMIN",
        ),
        (
            "no pidfd",
            signal,
            Probes {
                pidfd: false,
                ..Probes::default()
            },
            "no pidfd support",
        ),
        (
            "no systemd",
            restart,
            Probes {
                systemd: Err("no bus".into()),
                ..Probes::default()
            },
            "does not answer",
        ),
    ];
    for (what, policy, probes, says) in cases {
        let setup = Setup::new(&policy);
        let owner = std::sync::Arc::new(crate::model::Process {
            id: crate::model::ProcessId {
                pid: crate::model::Pid(4321),
                start_time: 9,
            },
            comm: "api".into(),
            cmdline: "api".into(),
            exe: None,
            uid: 1000,
            unit: Some("api.service".into()),
            container: None,
            handle: Default::default(),
        });
        let socket = KernelSocket {
            inode: crate::model::Inode(77),
            ..sock(1, TcpState::CloseWait, Some(10_000))
        };
        let sys = FakeSystem {
            probes,
            owners: [(
                crate::model::Inode(77),
                vec![crate::model::Owner {
                    process: owner,
                    fd: 3,
                }],
            )]
            .into_iter()
            .collect(),
            ..fake(vec![socket])
        };
        let mut d = setup.daemon(&sys, Capabilities::default());
        let warnings = d.check_capabilities();
        assert!(
            warnings.iter().any(|w| w.contains(says)),
            "{what}: {warnings:?}"
        );
        let s = d.pass(t(0));
        assert_eq!((s.acted, s.degraded), (0, 1), "{what}: {s}");
        assert!(sys.destroyed.borrow().is_empty(), "{what}");
        assert_eq!(kinds(&setup.records()), ["dry-run"], "{what}");
    }
}

#[test]
fn an_action_that_cannot_work_here_is_recorded_as_observed_and_says_why() {
    let setup = Setup::new(DESTROY_CW);
    let sys = fake(vec![sock(1, TcpState::CloseWait, Some(10_000))]);
    let caps = Capabilities {
        destroy: Some(Capability::Unavailable("SOCK_DESTROY refused".into())),
        ..Capabilities::all()
    };
    let mut d = setup.daemon(&sys, caps);
    let s = d.pass(t(0));
    assert_eq!((s.acted, s.observed, s.degraded), (0, 1, 1), "{s}");
    assert!(sys.destroyed.borrow().is_empty());
    assert!(d
        .start_detail()
        .contains("destroy UNAVAILABLE (SOCK_DESTROY refused)"));
    let recs = setup.records();
    assert_eq!(kinds(&recs), ["dry-run"]);
    let why = recs[0]["why"].as_str().unwrap_or("");
    assert!(
        why.contains("not carried out: SOCK_DESTROY refused"),
        "{why}"
    );
}

#[test]
fn ages_by_observation_grow_across_passes_and_a_restart() {
    // A socket with no kernel evidence of its age (as a SYN_RECV request socket).
    let setup = Setup::new(
        r#"
mode = "enforce"
[[rule]]
name = "sr"
states = ["syn-recv"]
older_than = "60s"
action = "destroy"
"#,
    );
    let sys = fake(vec![sock(9, TcpState::SynRecv, None)]);
    {
        let mut d = setup.daemon(&sys, Capabilities::all());
        assert_eq!(d.pass(t(0)).stuck, 0);
        assert_eq!(d.pass(t(30)).stuck, 0);
        assert!(setup.path("state/observations.json").is_file());
    }
    // A new daemon (a restart) continues from the persisted first sight at t(0).
    let mut d = setup.daemon(&sys, Capabilities::all());
    assert_eq!(
        d.observations()
            .first_seen((NS, Cookie(9), TcpState::SynRecv)),
        Some(t(0))
    );
    assert_eq!(d.pass(t(59)).stuck, 0);
    let s = d.pass(t(61));
    assert_eq!((s.stuck, s.acted), (1, 1), "{s}");
    let recs = setup.records();
    assert_eq!(recs[0]["target"]["age_secs"], 61);
    assert_eq!(recs[0]["target"]["age_source"], "observed");
}

#[test]
fn an_unwritable_audit_log_means_no_action_and_the_loop_goes_on() {
    let setup = Setup::new(DESTROY_CW);
    std::fs::write(setup.path("blocker"), b"").expect("write");
    let sys = fake(vec![sock(1, TcpState::CloseWait, Some(10_000))]);
    let mut sources = setup.sources();
    sources.flags.audit_log = Some(setup.path("blocker/audit.jsonl"));
    let (config, policies) = sources.load().expect("valid");
    let mut d = Daemon::new(
        &sys,
        sources,
        config,
        policies,
        Capabilities::all(),
        t(1_000_000),
    );
    let s = d.pass(t(0));
    assert!(
        s.error.as_deref().is_some_and(|e| e.contains("audit log")),
        "{s}"
    );
    assert!(
        sys.destroyed.borrow().is_empty(),
        "no action without an intent record"
    );
    let s = d.pass(t(1));
    assert_eq!(s.pass, 2);
}

#[test]
fn a_bad_reload_keeps_the_last_good_policy_and_is_recorded() {
    let setup = Setup::new(DESTROY_CW);
    let sys = fake(vec![sock(1, TcpState::CloseWait, Some(10_000))]);
    let mut d = setup.daemon(&sys, Capabilities::all());
    let digest = d.policies().digest().to_string();
    std::fs::write(
        setup.path("policy.toml"),
        "mode = \"enforce\"\n[[rule]]\nnme = 1\n",
    )
    .expect("write");
    let err = d.reload().expect_err("broken policy");
    let err = err.to_string();
    assert!(err.contains("policy.toml:3:1"), "{err}");
    assert_eq!(d.policies().digest(), digest);
    let s = d.pass(t(0));
    assert_eq!(s.acted, 1, "the old rule still acts: {s}");

    std::fs::write(setup.path("policy.toml"), DESTROY_CW.replace("3s", "1h")).expect("write");
    d.reload().expect("good policy");
    assert_ne!(d.policies().digest(), digest);
    let recs = setup.records();
    let notes: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "note").collect();
    assert_eq!(notes.len(), 2, "{recs:?}");
    assert_eq!(notes[0]["note"]["event"], "reload-failed");
    assert!(notes[0]["note"]["detail"]
        .as_str()
        .unwrap_or("")
        .contains("unknown key `nme`"));
    assert_eq!(notes[1]["note"]["event"], "reload");
}

#[test]
fn invalid_settings_are_load_errors() {
    let setup = Setup::new("mode = \"enforce\"\n");
    let mut sources = setup.sources();
    sources.flags.policy = Some(setup.path("missing-dir/"));
    assert!(matches!(sources.load(), Err(LoadError::Policy { .. })));
    std::fs::write(setup.path("c.toml"), "intervall = \"1s\"\n").expect("write");
    let sources = Sources {
        config: setup.path("c.toml"),
        explicit: true,
        flags: Settings::default(),
    };
    let err = sources.load().expect_err("unknown key");
    assert!(
        err.to_string()
            .contains("c.toml:1:1: error: unknown key `intervall`"),
        "{err}"
    );
}

#[test]
fn each_pass_feeds_the_metrics_and_the_textfile() {
    let setup = Setup::new(DESTROY_CW);
    let sys = fake(vec![sock(1, TcpState::CloseWait, Some(10_000))]);
    let mut sources = setup.sources();
    sources.flags.metrics_textfile = Some(setup.path("sockwarden.prom"));
    let (config, policies) = sources.load().expect("valid");
    let metrics = crate::metrics::Metrics::new();
    let mut d = Daemon::new(
        &sys,
        sources,
        config,
        policies,
        Capabilities::all(),
        t(1_000_000),
    )
    .with_metrics(std::sync::Arc::clone(&metrics));
    d.pass(t(0));
    let text = std::fs::read_to_string(setup.path("sockwarden.prom")).expect("textfile");
    assert_eq!(text, metrics.render());
    for series in [
        "sockwarden_passes_total 1",
        "sockwarden_stuck_sockets{state=\"close-wait\",netns=\"host\",pod_uid=\"\",container=\"\",unit=\"\"} 1",
        "sockwarden_actions_total{action=\"destroy\",rule=\"cw\",outcome=\"destroyed\"} 1",
        "sockwarden_capability{capability=\"sock_destroy\"} 1",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}

#[test]
fn an_age_never_goes_backwards_when_traffic_resets_tcp_info() {
    let setup = Setup::new(&DESTROY_CW.replace("enforce", "observe").replace("3s", "1h"));
    let mut sys = fake(vec![sock(1, TcpState::CloseWait, Some(7_200_000))]);
    {
        let mut d = setup.daemon(&sys, Capabilities::all());
        assert_eq!(d.pass(t(0)).stuck, 1, "2 h by tcp_info");
    }
    // A keepalive ACK reset last_ack_recv: tcp_info now says 5 s.
    sys.sockets = vec![sock(1, TcpState::CloseWait, Some(5_000))];
    let mut d = setup.daemon(&sys, Capabilities::all());
    let s = d.pass(t(10));
    assert_eq!(s.stuck, 1, "still 2 h (and 10 s) old: {s}");
    assert_eq!(
        d.observations()
            .first_seen((NS, Cookie(1), TcpState::CloseWait)),
        Some(t(0) - Duration::from_secs(7_200))
    );
}
