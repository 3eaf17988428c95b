//! Table tests of the engine: each case is a policy, a few fake sockets, some history, and
//! the plan it must produce, one line per item: `rule action target: decision`.

use crate::sys::fake;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::model::{Family, Inode, KernelSocket, NetnsId, Process};
use crate::policy::load_str;

const SELF_PID: i32 = 999;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

fn ago(d: &str) -> SystemTime {
    now() - humantime::parse_duration(d).expect("duration")
}

fn process(pid: i32, comm: &str, unit: Option<&str>, uid: u32) -> Arc<Process> {
    Arc::new(Process {
        id: ProcessId {
            pid: Pid(pid),
            start_time: 1000 + pid as u64,
        },
        comm: comm.to_string(),
        cmdline: format!("/usr/bin/{comm} --serve"),
        exe: Some(format!("/usr/bin/{comm}")),
        uid,
        unit: unit.map(str::to_string),
        container: None,
        handle: Default::default(),
    })
}

/// The cast: a leaking Java API in a unit, a Python script outside any unit, nginx, sshd,
/// PID 1 and sockwarden itself.
struct Cast {
    api: Arc<Process>,
    py: Arc<Process>,
    nginx: Arc<Process>,
    sshd: Arc<Process>,
    init: Arc<Process>,
    me: Arc<Process>,
}

fn cast() -> Cast {
    Cast {
        api: process(1234, "java", Some("api.service"), 1000),
        py: process(2000, "python3", None, 1001),
        nginx: process(3000, "nginx", Some("nginx.service"), 33),
        sshd: process(22, "sshd", Some("ssh.service"), 0),
        init: process(1, "systemd", None, 0),
        me: process(SELF_PID, "sockwarden", Some("sockwarden.service"), 0),
    }
}

const HOST: NetnsId = NetnsId {
    dev: 4,
    inode: 4026531840,
};
const OTHER_NS: NetnsId = NetnsId {
    dev: 4,
    inode: 4026532999,
};

/// A socket: cookie, state, `local -> remote`, age (tcp-info), owners.
fn sock(
    cookie: u64,
    state: TcpState,
    conn: &str,
    age: &str,
    owners: &[&Arc<Process>],
) -> StuckSocket {
    let (local, remote) = conn.split_once(" -> ").expect("`local -> remote`");
    let local: SocketAddr = local.parse().expect("local");
    let remote: SocketAddr = remote.parse().expect("remote");
    let socket = KernelSocket {
        family: if local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        },
        local,
        remote,
        inode: Inode(if owners.is_empty() { 0 } else { 5000 + cookie }),
        uid: owners.first().map_or(0, |p| p.uid),
        ..fake::socket(HOST, cookie, state)
    };
    let age = humantime::parse_duration(age).expect("age").as_secs();
    fake::stuck(socket, owners, age)
}

use TcpState::{CloseWait, FinWait2, Listen, SynSent};

fn past(
    when: &str,
    rule: &str,
    action: ActionKind,
    target: TargetKey,
    owner: Option<OwnerKey>,
) -> PastAction {
    PastAction {
        time: ago(when),
        rule: rule.into(),
        action,
        escalated: false,
        target,
        owner,
        outcome: PastOutcome::Done,
    }
}

fn unit(u: &str) -> OwnerKey {
    OwnerKey::Unit(u.to_string())
}

struct Case<'a> {
    what: &'a str,
    policy: &'a str,
    sockets: Vec<StuckSocket>,
    history: Vec<PastAction>,
    options: RunOptions,
    expect: &'a [&'a str],
}

fn opts() -> RunOptions {
    RunOptions::new(Pid(SELF_PID))
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            what: "",
            policy: "",
            sockets: Vec::new(),
            history: Vec::new(),
            options: opts(),
            expect: &[],
        }
    }
}

fn names() -> HashMap<NetnsId, String> {
    HashMap::from([
        (HOST, "host".to_string()),
        (OTHER_NS, "ci-runner".to_string()),
    ])
}

fn run(case: &Case<'_>) -> (Plan, Vec<SocketExplanation>) {
    let policies = match load_str(case.what, case.policy) {
        Ok(p) => p,
        Err(d) => panic!("{}: policy invalid:\n{d}", case.what),
    };
    run_with(case, &policies)
}

fn run_with(case: &Case<'_>, policies: &PolicySet) -> (Plan, Vec<SocketExplanation>) {
    let names = names();
    let history = History::new(case.history.clone());
    let input = EngineInput {
        sockets: &case.sockets,
        netns_names: &names,
        policies,
        history: &history,
        now: now(),
        options: case.options,
    };
    (plan(&input), explain(&input))
}

/// One line per item: `rule action target: decision`, held reasons by their guard only.
fn lines(plan: &Plan) -> Vec<String> {
    plan.items
        .iter()
        .map(|i| {
            let decision = match &i.decision {
                Decision::Act => "act".to_string(),
                Decision::Held(r) => match r {
                    HeldReason::Budget { budget, .. } => format!("held {budget}"),
                    HeldReason::Protected { what } => format!("protected ({what})"),
                    other => format!(
                        "held {}",
                        serde_json::to_value(other).expect("json")["guard"]
                            .as_str()
                            .unwrap_or("?")
                    ),
                },
            };
            let esc = if i.escalated { " (escalated)" } else { "" };
            format!("{} {}{esc} {}: {decision}", i.rule, i.action, i.target)
        })
        .collect()
}

fn table(cases: Vec<Case<'_>>) {
    let mut failures = Vec::new();
    for case in &cases {
        let (plan, _) = run(case);
        let got = lines(&plan);
        if got != case.expect {
            failures.push(format!(
                "{}\n  expected: {:#?}\n  got:      {:#?}",
                case.what, case.expect, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const DESTROY_CW_10M: &str = r#"
mode = "enforce"
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "10m"
action = "destroy"
"#;

#[test]
fn selectors_each_narrow_the_match() {
    let c = cast();
    let api = &c.api;
    let cw =
        |cookie, conn: &str, owners: &[&Arc<Process>]| sock(cookie, CloseWait, conn, "1h", owners);
    let with = |sel: &str| format!("{DESTROY_CW_10M}{sel}\n");
    let p: Vec<String> = [
        "",
        "ports = [8080]",
        "local_ports = [8080]",
        "remote_ports = [\"40000-50000\"]",
        "local_cidrs = [\"10.0.0.0/8\"]",
        "remote_cidrs = \"192.168.1.7\"",
        "process = \"pyth*\"",
        "exe = \"/usr/bin/java\"",
        "cmdline = \"*python3 --serve\"",
        "unit = \"api*.service\"",
        "uid = [1001]",
        "netns = \"ci-*\"",
    ]
    .iter()
    .map(|s| with(s))
    .collect();
    let sockets = || {
        let mut v = vec![
            cw(1, "10.0.0.1:8080 -> 192.168.1.7:45000", &[api]),
            cw(2, "127.0.0.1:9000 -> 127.0.0.1:8080", &[&c.py]),
            sock(
                3,
                FinWait2,
                "10.0.0.1:8080 -> 192.168.1.8:45001",
                "1h",
                &[api],
            ),
        ];
        v[1].socket.netns = OTHER_NS;
        v
    };
    let case = |what, policy, expect| Case {
        what,
        policy,
        sockets: sockets(),
        expect,
        ..Case::default()
    };
    table(vec![
        case(
            "states alone: both close-wait, not fin-wait-2",
            &p[0],
            &["cw destroy socket 0x1: act", "cw destroy socket 0x2: act"],
        ),
        case(
            "ports matches the local or the remote port",
            &p[1],
            &["cw destroy socket 0x1: act", "cw destroy socket 0x2: act"],
        ),
        case(
            "local_ports only the local one",
            &p[2],
            &["cw destroy socket 0x1: act"],
        ),
        case(
            "remote_ports takes ranges",
            &p[3],
            &["cw destroy socket 0x1: act"],
        ),
        case("local_cidrs", &p[4], &["cw destroy socket 0x1: act"]),
        case(
            "remote_cidrs: a bare address",
            &p[5],
            &["cw destroy socket 0x1: act"],
        ),
        case(
            "process globs the comm",
            &p[6],
            &["cw destroy socket 0x2: act"],
        ),
        case("exe", &p[7], &["cw destroy socket 0x1: act"]),
        case("cmdline", &p[8], &["cw destroy socket 0x2: act"]),
        case("unit", &p[9], &["cw destroy socket 0x1: act"]),
        case("uid", &p[10], &["cw destroy socket 0x2: act"]),
        case("netns by name", &p[11], &["cw destroy socket 0x2: act"]),
    ]);
}

#[test]
fn thresholds_min_sockets_and_first_rule_wins() {
    let c = cast();
    let (api, py) = (&c.api, &c.py);
    let leak = r#"
mode = "enforce"
[[rule]]
name = "leak"
states = ["close-wait"]
older_than = "10m"
min_sockets = 3
action = "destroy"
"#;
    let two_rules = r#"
mode = "enforce"
[[rule]]
name = "java-first"
states = ["close-wait"]
older_than = "30m"
process = "java"
action = "log"
[[rule]]
name = "any"
states = ["close-wait", "syn-sent"]
older_than = "10m"
action = "destroy"
"#;
    table(vec![
        Case {
            what: "age below the threshold: nothing; at it: fires",
            policy: DESTROY_CW_10M,
            sockets: vec![
                sock(
                    1,
                    CloseWait,
                    "10.0.0.1:80 -> 10.0.0.2:5000",
                    "9m59s",
                    &[api],
                ),
                sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "10m", &[api]),
            ],
            expect: &["cw destroy socket 0x2: act"],
            ..Case::default()
        },
        Case {
            what: "min_sockets: java holds 3 old ones (the young one does not count), python 1",
            policy: leak,
            sockets: vec![
                sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api]),
                sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "20m", &[api]),
                sock(3, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5002", "11m", &[api]),
                sock(4, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5003", "1m", &[api]),
                sock(5, CloseWait, "10.0.0.1:81 -> 10.0.0.2:5004", "2h", &[py]),
            ],
            expect: &[
                "leak destroy socket 0x1: act",
                "leak destroy socket 0x2: act",
                "leak destroy socket 0x3: act",
            ],
            ..Case::default()
        },
        Case {
            what:
                "first rule that fires wins; a younger java socket falls through to the next rule",
            policy: two_rules,
            sockets: vec![
                sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api]),
                sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "15m", &[api]),
                sock(3, SynSent, "10.0.0.1:5002 -> 10.0.0.9:80", "15m", &[py]),
            ],
            expect: &[
                "java-first log socket 0x1: act",
                "any destroy socket 0x2: act",
                "any destroy socket 0x3: act",
            ],
            ..Case::default()
        },
    ]);
}

const SIGNAL_AND_RESTART: &str = r#"
mode = "enforce"
[guards]
max_restarts_per_unit_per_hour = 5
[[rule]]
name = "hup-python"
states = ["close-wait"]
older_than = "10m"
process = "python3"
action = "signal"
signal = "SIGHUP"
[[rule]]
name = "restart-rest"
states = ["close-wait", "fin-wait-2"]
older_than = "10m"
action = "restart"
"#;

#[test]
fn signal_targets_a_process_and_restart_a_unit_once_each() {
    let c = cast();
    let (api, py, nginx) = (&c.api, &c.py, &c.nginx);
    let orphan: &[&Arc<Process>] = &[];
    table(vec![Case {
        what: "signal dedups per process, restart per unit; no unit or no owner is held",
        policy: SIGNAL_AND_RESTART,
        sockets: vec![
            sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[py]),
            sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "2h", &[py]),
            sock(3, CloseWait, "10.0.0.1:81 -> 10.0.0.2:5002", "1h", &[api]),
            sock(4, FinWait2, "10.0.0.1:81 -> 10.0.0.2:5003", "3h", &[api]),
            sock(5, CloseWait, "10.0.0.1:82 -> 10.0.0.2:5004", "1h", &[nginx]),
            sock(6, FinWait2, "10.0.0.1:83 -> 10.0.0.2:5005", "1h", orphan),
            sock(
                7,
                FinWait2,
                "10.0.0.1:84 -> 10.0.0.2:5006",
                "1h",
                &[&process(4000, "perl", None, 5)],
            ),
        ],
        expect: &[
            "hup-python signal SIGHUP python3(2000): act",
            "restart-rest restart api.service: act",
            "restart-rest restart nginx.service: act",
            "restart-rest restart socket 0x6: held no-owner",
            "restart-rest restart perl(4000): held no-unit",
        ],
        ..Case::default()
    }]);
    // The group carries every socket that justifies it, oldest first.
    let case = Case {
        policy: SIGNAL_AND_RESTART,
        sockets: vec![
            sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[py]),
            sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "2h", &[py]),
        ],
        ..Case::default()
    };
    let (plan, explanation) = run(&case);
    let cookies: Vec<Cookie> = plan.items[0]
        .socket_indices
        .iter()
        .map(|&i| case.sockets[i].socket.cookie)
        .collect();
    assert_eq!(cookies, vec![Cookie(2), Cookie(1)]);
    assert_eq!(plan.items[0].socket_indices, vec![1, 0]);
    assert_eq!(plan.items[0].owner, Some(OwnerKey::Process(c.py.id)));
    assert_eq!(
        plan.items[0].why(&case.sockets),
        "2 sockets, oldest close-wait for 2h (tcp-info) >= 10m, owner python3(2000) holds 2 matching sockets"
    );
    assert_eq!(
        explanation[0].summary,
        "rule `hup-python`: signal SIGHUP python3(2000): act"
    );
}

const ESCALATING: &str = r#"
mode = "enforce"
[[rule]]
name = "api-leak"
states = ["close-wait"]
older_than = "10m"
action = "destroy"
[rule.escalate]
action = "restart"
after = "15m"
"#;

#[test]
fn escalation_follows_the_owner_through_history() {
    let c = cast();
    let (api, py) = (&c.api, &c.py);
    let sockets = || {
        vec![
            sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api]),
            sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "1h", &[api]),
            sock(3, CloseWait, "10.0.0.1:81 -> 10.0.0.2:5002", "1h", &[py]),
        ]
    };
    let destroyed = |when: &str, owner: OwnerKey| {
        past(
            when,
            "api-leak",
            ActionKind::Destroy,
            TargetKey::Socket(Cookie(100)),
            Some(owner),
        )
    };
    let restarted = |when: &str| PastAction {
        escalated: true,
        ..past(
            when,
            "api-leak",
            ActionKind::Restart,
            TargetKey::Unit("api.service".into()),
            Some(unit("api.service")),
        )
    };
    let py_key = OwnerKey::Process(c.py.id);
    let case = |what, history, expect| Case {
        what,
        policy: ESCALATING,
        sockets: sockets(),
        history,
        expect,
        ..Case::default()
    };
    let first_step = &[
        "api-leak destroy socket 0x1: act",
        "api-leak destroy socket 0x2: act",
        "api-leak destroy socket 0x3: act",
    ][..];
    table(vec![
        case("no history: first step", vec![], first_step),
        case(
            "destroyed 10m ago: not yet",
            vec![destroyed("10m", unit("api.service"))],
            first_step,
        ),
        case(
            "destroyed 16m ago and still leaking: restart the unit, once",
            vec![
                destroyed("16m", unit("api.service")),
                destroyed("1m", unit("api.service")),
            ],
            &[
                "api-leak restart (escalated) api.service: act",
                "api-leak destroy socket 0x3: act",
            ],
        ),
        case(
            "python (no unit) escalates by process: restart held, no unit",
            vec![destroyed("20m", py_key.clone())],
            &[
                "api-leak destroy socket 0x1: act",
                "api-leak destroy socket 0x2: act",
                "api-leak restart (escalated) python3(2000): held no-unit",
            ],
        ),
        case(
            "the first step is too old (beyond after + within): start over",
            vec![destroyed("31m", unit("api.service"))],
            first_step,
        ),
        case(
            "a restart since the first step spends it",
            vec![destroyed("20m", unit("api.service")), restarted("18m")],
            first_step,
        ),
        case(
            "another rule's history does not count",
            vec![past(
                "20m",
                "other",
                ActionKind::Destroy,
                TargetKey::Socket(Cookie(9)),
                Some(unit("api.service")),
            )],
            first_step,
        ),
    ]);
    let (plan, _) = run(&Case {
        policy: ESCALATING,
        sockets: sockets(),
        history: vec![destroyed("16m", unit("api.service"))],
        ..Case::default()
    });
    assert!(
        plan.items[0]
            .why(&sockets())
            .starts_with("escalated: this rule did destroy on api.service 16m ago (>= 15m)"),
        "{}",
        plan.items[0].why(&sockets())
    );
}

#[test]
fn cooldowns_are_per_rule_and_target() {
    let c = cast();
    let policy = r#"
mode = "enforce"
[[rule]]
name = "hup"
states = ["close-wait"]
older_than = "10m"
action = "signal"
signal = "SIGHUP"
cooldown = "5m"
"#;
    let sockets = || {
        vec![sock(
            1,
            CloseWait,
            "10.0.0.1:80 -> 10.0.0.2:5000",
            "1h",
            &[&c.py],
        )]
    };
    let signalled = |when: &str, rule: &str, outcome| PastAction {
        outcome,
        ..past(
            when,
            rule,
            ActionKind::Signal,
            TargetKey::Process(c.py.id),
            None,
        )
    };
    let case = |what, history, expect| Case {
        what,
        policy,
        sockets: sockets(),
        history,
        expect,
        ..Case::default()
    };
    table(vec![
        case(
            "signalled 2m ago: cooldown",
            vec![signalled("2m", "hup", PastOutcome::Done)],
            &["hup signal SIGHUP python3(2000): held cooldown"],
        ),
        case(
            "a failed attempt counts too",
            vec![signalled("2m", "hup", PastOutcome::Failed)],
            &["hup signal SIGHUP python3(2000): held cooldown"],
        ),
        case(
            "signalled 6m ago: again",
            vec![signalled("6m", "hup", PastOutcome::Done)],
            &["hup signal SIGHUP python3(2000): act"],
        ),
        case(
            "by another rule: no cooldown",
            vec![signalled("2m", "other", PastOutcome::Done)],
            &["hup signal SIGHUP python3(2000): act"],
        ),
        case(
            "a dry run does not count",
            vec![signalled("2m", "hup", PastOutcome::DryRun)],
            &["hup signal SIGHUP python3(2000): act"],
        ),
        Case {
            what: "lift_budgets does not lift cooldowns",
            options: RunOptions {
                lift_budgets: true,
                ..opts()
            },
            ..case(
                "",
                vec![signalled("2m", "hup", PastOutcome::Done)],
                &["hup signal SIGHUP python3(2000): held cooldown"],
            )
        },
    ]);
}

#[test]
fn budgets_count_history_and_this_pass_and_can_be_lifted() {
    let c = cast();
    let (api, py) = (&c.api, &c.py);
    let destroy_budget = r#"
mode = "enforce"
[guards]
max_destroys_per_minute = 2
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "10m"
action = "destroy"
"#;
    let three = || {
        vec![
            sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api]),
            sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "3h", &[api]),
            sock(3, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5002", "2h", &[api]),
        ]
    };
    let destroyed = |when: &str| {
        past(
            when,
            "any",
            ActionKind::Destroy,
            TargetKey::Socket(Cookie(77)),
            None,
        )
    };
    let signal_budget = r#"
mode = "enforce"
[guards]
max_signals_per_minute = 1
[[rule]]
name = "term"
states = ["close-wait"]
older_than = "10m"
action = "signal"
signal = "SIGTERM"
"#;
    let restart_budget = r#"
mode = "enforce"
[[rule]]
name = "re"
states = ["close-wait"]
older_than = "10m"
action = "restart"
"#;
    let exec_budget = r#"
mode = "enforce"
[guards]
max_execs_per_minute = 1
[[rule]]
name = "notify"
states = ["close-wait"]
older_than = "10m"
action = "exec"
command = ["/usr/local/bin/notify", "{pid}"]
"#;
    let fraction = r#"
mode = "enforce"
[guards]
max_fraction_per_owner = 0.5
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "10m"
action = "destroy"
"#;
    let lifted = RunOptions {
        lift_budgets: true,
        ..opts()
    };
    table(vec![
        Case {
            what: "destroys per minute: the two oldest go, the third waits",
            policy: destroy_budget,
            sockets: three(),
            expect: &["cw destroy socket 0x2: act", "cw destroy socket 0x3: act", "cw destroy socket 0x1: held max_destroys_per_minute"],
            ..Case::default()
        },
        Case {
            what: "one destroy 30s ago (any rule) uses one of the two",
            policy: destroy_budget,
            sockets: three(),
            history: vec![destroyed("30s")],
            expect: &[
                "cw destroy socket 0x2: act",
                "cw destroy socket 0x3: held max_destroys_per_minute",
                "cw destroy socket 0x1: held max_destroys_per_minute",
            ],
            ..Case::default()
        },
        Case {
            what: "a destroy 2m ago is outside the window",
            policy: destroy_budget,
            sockets: three(),
            history: vec![destroyed("2m"), destroyed("61s")],
            expect: &["cw destroy socket 0x2: act", "cw destroy socket 0x3: act", "cw destroy socket 0x1: held max_destroys_per_minute"],
            ..Case::default()
        },
        Case {
            what: "lift_budgets: all three",
            policy: destroy_budget,
            sockets: three(),
            history: vec![destroyed("30s")],
            options: lifted,
            expect: &["cw destroy socket 0x2: act", "cw destroy socket 0x3: act", "cw destroy socket 0x1: act"],
        },
        Case {
            what: "signals per minute",
            policy: signal_budget,
            sockets: vec![
                sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api]),
                sock(2, CloseWait, "10.0.0.1:81 -> 10.0.0.2:5001", "1h", &[py]),
            ],
            expect: &["term signal SIGTERM java(1234): act", "term signal SIGTERM python3(2000): held max_signals_per_minute"],
            ..Case::default()
        },
        Case {
            what: "restarts per unit per hour: restarted 30m ago",
            policy: restart_budget,
            sockets: vec![sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api])],
            history: vec![past("30m", "re", ActionKind::Restart, TargetKey::Unit("api.service".into()), None)],
            expect: &["re restart api.service: held max_restarts_per_unit_per_hour"],
            ..Case::default()
        },
        Case {
            what: "restarts per unit per hour: 61m ago is fine, and another unit's restart does not count",
            policy: restart_budget,
            sockets: vec![sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api])],
            history: vec![
                past("61m", "re", ActionKind::Restart, TargetKey::Unit("api.service".into()), None),
                past("1m", "re", ActionKind::Restart, TargetKey::Unit("nginx.service".into()), None),
            ],
            expect: &["re restart api.service: act"],
            ..Case::default()
        },
        Case {
            what: "restart budget lifted",
            policy: restart_budget,
            sockets: vec![sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api])],
            history: vec![past("30m", "re", ActionKind::Restart, TargetKey::Unit("api.service".into()), None)],
            options: lifted,
            expect: &["re restart api.service: act"],
        },
        Case {
            what: "execs per minute",
            policy: exec_budget,
            sockets: vec![
                sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "2h", &[api]),
                sock(2, CloseWait, "10.0.0.1:81 -> 10.0.0.2:5001", "1h", &[py]),
            ],
            expect: &[
                "notify exec /usr/local/bin/notify {pid} socket 0x1: act",
                "notify exec /usr/local/bin/notify {pid} socket 0x2: held max_execs_per_minute",
            ],
            ..Case::default()
        },
        Case {
            what: "max_fraction_per_owner 0.5: half of java's 3 (rounded down, at least 1), python's only one",
            policy: fraction,
            sockets: vec![
                sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "1h", &[api]),
                sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "3h", &[api]),
                sock(3, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5002", "2h", &[api]),
                sock(4, CloseWait, "10.0.0.1:81 -> 10.0.0.2:5003", "1h", &[py]),
            ],
            expect: &[
                "cw destroy socket 0x2: act",
                "cw destroy socket 0x3: held owner-fraction",
                "cw destroy socket 0x1: held owner-fraction",
                "cw destroy socket 0x4: act",
            ],
            ..Case::default()
        },
    ]);
}

#[test]
fn protected_processes_units_ports_and_uids_are_never_touched() {
    let c = cast();
    let (api, py) = (&c.api, &c.py);
    let conn = |port: u16| format!("10.0.0.1:{port} -> 10.0.0.2:5000");
    let one = |owner: &Arc<Process>| vec![sock(1, CloseWait, &conn(80), "1h", &[owner])];
    let case = |what, policy, sockets, expect| Case {
        what,
        policy,
        sockets,
        expect,
        ..Case::default()
    };
    let guarded = r#"
mode = "enforce"
[guards]
never_touch_processes = ["pyth*"]
never_touch_units = ["api.service"]
never_touch_ports = ["8000-8100"]
never_touch_uids = [33]
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "10m"
action = "destroy"
"#;
    let no_ssh = DESTROY_CW_10M.replace("[[rule]]", "[guards]\nprotect_ssh = false\n[[rule]]");
    let signal_all = r#"
mode = "enforce"
[[rule]]
name = "hup"
states = ["close-wait"]
older_than = "10m"
action = "signal"
signal = "SIGHUP"
"#;
    table(vec![
        case("sockwarden itself", DESTROY_CW_10M, one(&c.me), &["cw destroy socket 0x1: protected (sockwarden(999) is sockwarden itself)"]),
        case("PID 1", DESTROY_CW_10M, one(&c.init), &["cw destroy socket 0x1: protected (systemd(1) is PID 1)"]),
        case("sshd by default", DESTROY_CW_10M, one(&c.sshd), &["cw destroy socket 0x1: protected (sshd(22) is sshd (protect_ssh))"]),
        case(
            "port 22 by default, local or remote",
            DESTROY_CW_10M,
            vec![sock(1, CloseWait, &conn(22), "1h", &[api]), sock(2, CloseWait, "10.0.0.1:5000 -> 10.0.0.2:22", "1h", &[api])],
            &["cw destroy socket 0x1: protected (port 22 is ssh (protect_ssh))", "cw destroy socket 0x2: protected (port 22 is ssh (protect_ssh))"],
        ),
        case("protect_ssh = false lets sshd's sockets go", no_ssh.as_str(), one(&c.sshd), &["cw destroy socket 0x1: act"]),
        case(
            "a socket shared with a protected process is protected",
            DESTROY_CW_10M,
            vec![sock(1, CloseWait, &conn(80), "1h", &[api, &c.init])],
            &["cw destroy socket 0x1: protected (systemd(1) is PID 1)"],
        ),
        case("never_touch_processes glob", guarded, one(py), &["cw destroy socket 0x1: protected (python3(2000) matches never_touch_processes `pyth*`)"]),
        case("never_touch_units", guarded, one(api), &["cw destroy socket 0x1: protected (unit api.service matches never_touch_units `api.service`)"]),
        case("never_touch_uids", guarded, one(&c.nginx), &["cw destroy socket 0x1: protected (socket uid 33 is in never_touch_uids)"]),
        case(
            "never_touch_ports range",
            guarded,
            vec![sock(1, CloseWait, "10.0.0.1:8080 -> 10.0.0.2:5000", "1h", &[&process(4000, "perl", None, 5)])],
            &["cw destroy socket 0x1: protected (port 8080 is in never_touch_ports)"],
        ),
        case(
            "a signal leaves a protected socket out, with its own held item",
            signal_all,
            vec![sock(1, CloseWait, &conn(80), "2h", &[py]), sock(2, CloseWait, "10.0.0.1:5000 -> 10.0.0.2:22", "1h", &[py])],
            &["hup signal SIGHUP python3(2000): act", "hup signal SIGHUP python3(2000): protected (port 22 is ssh (protect_ssh))"],
        ),
    ]);
    let pid1_unprotected = Case {
        what: "protect_pid1 = false (a test pid namespace)",
        policy: DESTROY_CW_10M,
        sockets: one(&c.init),
        options: RunOptions {
            protect_pid1: false,
            ..opts()
        },
        expect: &["cw destroy socket 0x1: act"],
        ..Case::default()
    };
    let lifted = Case {
        what: "lift_budgets does not lift protection",
        policy: DESTROY_CW_10M,
        sockets: one(&c.sshd),
        options: RunOptions {
            lift_budgets: true,
            ..opts()
        },
        expect: &["cw destroy socket 0x1: protected (sshd(22) is sshd (protect_ssh))"],
        ..Case::default()
    };
    table(vec![pid1_unprotected, lifted]);
}

#[test]
fn listen_sockets_are_never_targets() {
    let c = cast();
    // The loader refuses `listen` in a rule; the engine holds the line on its own too.
    let mut policies = load_str("p", DESTROY_CW_10M).expect("valid");
    policies.rules[0].states.insert(Listen);
    let case = Case {
        sockets: vec![
            sock(1, Listen, "0.0.0.0:80 -> 0.0.0.0:0", "1h", &[&c.api]),
            sock(
                2,
                CloseWait,
                "10.0.0.1:80 -> 10.0.0.2:5000",
                "1h",
                &[&c.api],
            ),
        ],
        ..Case::default()
    };
    let (plan, explanation) = run_with(&case, &policies);
    // Shown as held, so that the plan says why it was left alone.
    assert_eq!(
        lines(&plan),
        vec![
            "cw destroy socket 0x1: held listening",
            "cw destroy socket 0x2: act"
        ]
    );
    assert_eq!(
        explanation[0].summary,
        "rule `cw`: destroy socket 0x1: held: LISTEN sockets are never touched"
    );
    assert_eq!(
        explanation[0].rules[0].outcome,
        "LISTEN sockets are never touched"
    );
}

#[test]
fn observe_mode_plans_everything_and_acts_on_nothing() {
    let c = cast();
    let observe = DESTROY_CW_10M.replace("enforce", "observe").replace(
        "[[rule]]",
        "[guards]\nmax_destroys_per_minute = 2\n[[rule]]",
    );
    let sockets = || {
        vec![
            sock(
                1,
                CloseWait,
                "10.0.0.1:80 -> 10.0.0.2:5000",
                "3h",
                &[&c.api],
            ),
            sock(
                2,
                CloseWait,
                "10.0.0.1:80 -> 10.0.0.2:5001",
                "2h",
                &[&c.api],
            ),
            sock(
                3,
                CloseWait,
                "10.0.0.1:80 -> 10.0.0.2:5002",
                "1h",
                &[&c.api],
            ),
            sock(
                4,
                CloseWait,
                "10.0.0.1:22 -> 10.0.0.2:5003",
                "1h",
                &[&c.api],
            ),
        ]
    };
    table(vec![
        Case {
            what: "observe: the plan enforce would make, every act held as observe",
            policy: &observe,
            sockets: sockets(),
            expect: &[
                "cw destroy socket 0x1: held observe",
                "cw destroy socket 0x2: held observe",
                "cw destroy socket 0x3: held max_destroys_per_minute",
                "cw destroy socket 0x4: protected (port 22 is ssh (protect_ssh))",
            ],
            ..Case::default()
        },
        Case {
            what: "a mode override (clean --enforce) wins over the file",
            policy: &observe,
            sockets: sockets(),
            options: RunOptions { mode: Some(Mode::Enforce), ..opts() },
            history: vec![],
            expect: &[
                "cw destroy socket 0x1: act",
                "cw destroy socket 0x2: act",
                "cw destroy socket 0x3: held max_destroys_per_minute",
                "cw destroy socket 0x4: protected (port 22 is ssh (protect_ssh))",
            ],
        },
        Case {
            what: "the default mode is observe",
            policy: "[[rule]]\nname = \"cw\"\nstates = [\"close-wait\"]\nolder_than = \"1m\"\naction = \"destroy\"\n",
            sockets: sockets().into_iter().take(1).collect(),
            expect: &["cw destroy socket 0x1: held observe"],
            ..Case::default()
        },
    ]);
    let (plan, _) = run(&Case {
        policy: &observe,
        sockets: sockets(),
        ..Case::default()
    });
    assert_eq!(plan.mode, Mode::Observe);
    assert_eq!(plan.to_act().count(), 0);
}

#[test]
fn two_rules_never_restart_one_unit_twice_in_a_pass() {
    let c = cast();
    let policy = r#"
mode = "enforce"
[guards]
max_restarts_per_unit_per_hour = 10
[[rule]]
name = "a"
states = ["close-wait"]
older_than = "10m"
action = "restart"
[[rule]]
name = "b"
states = ["fin-wait-2"]
older_than = "10m"
action = "restart"
"#;
    table(vec![Case {
        what: "same unit from two rules",
        policy,
        sockets: vec![
            sock(
                1,
                CloseWait,
                "10.0.0.1:80 -> 10.0.0.2:5000",
                "1h",
                &[&c.api],
            ),
            sock(2, FinWait2, "10.0.0.1:80 -> 10.0.0.2:5001", "1h", &[&c.api]),
        ],
        expect: &[
            "a restart api.service: act",
            "b restart api.service: held already-planned",
        ],
        ..Case::default()
    }]);
}

#[test]
fn exec_fills_in_the_socket_and_why_reads_like_the_rule() {
    let c = cast();
    let policy = r#"
mode = "enforce"
[[rule]]
name = "notify"
states = ["close-wait"]
older_than = "10m"
min_sockets = 2
action = "exec"
command = ["/usr/local/bin/notify", "--rule={rule}", "{pid}", "{comm}", "{unit}", "{local}", "{remote}", "{state}", "{age}", "{netns}", "{cookie}", "{{x}}"]
"#;
    let case = Case {
        policy,
        sockets: vec![
            sock(
                26,
                CloseWait,
                "10.0.0.1:8080 -> 10.0.0.2:5000",
                "12m",
                &[&c.api],
            ),
            sock(
                27,
                CloseWait,
                "10.0.0.1:8080 -> 10.0.0.2:5001",
                "11m",
                &[&c.api],
            ),
        ],
        ..Case::default()
    };
    let (plan, _) = run(&case);
    let item = &plan.items[0];
    assert_eq!(
        item.exec.as_ref().expect("argv").argv,
        [
            "/usr/local/bin/notify",
            "--rule=notify",
            "1234",
            "java",
            "api.service",
            "10.0.0.1:8080",
            "10.0.0.2:5000",
            "close-wait",
            "720",
            "host",
            "0x1a",
            "{x}"
        ]
    );
    assert_eq!(item.why(&case.sockets), "close-wait for 12m (tcp-info) >= 10m, owner java(1234) holds 2 matching sockets (min_sockets 2)");
    let json = serde_json::to_value(&plan).expect("json");
    assert_eq!(json["mode"], "enforce");
    assert_eq!(json["items"][0]["decision"]["decision"], "act");
    assert_eq!(json["items"][0]["target"]["kind"], "socket");
    assert_eq!(json["items"][0]["action"]["kind"], "exec");
}

/// A process chooses its own name: in an argument it is escaped (a newline cannot forge a
/// second log line), in `SOCKWARDEN_COMM` it is exact.
#[test]
fn exec_escapes_process_chosen_values_in_arguments_and_passes_them_exactly_in_env() {
    let evil = process(
        4242,
        "x\n;id>/tmp/p\u{1b}[2J",
        Some("a\u{202e}b.service"),
        1000,
    );
    let policy = r#"
mode = "enforce"
[[rule]]
name = "notify"
states = ["close-wait"]
older_than = "1m"
action = "exec"
command = ["/usr/bin/logger", "--", "stuck {comm} in {unit}"]
"#;
    let case = Case {
        policy,
        sockets: vec![sock(
            7,
            CloseWait,
            "10.0.0.1:8080 -> 10.0.0.2:5000",
            "2m",
            &[&evil],
        )],
        ..Case::default()
    };
    let (plan, _) = run(&case);
    let item = &plan.items[0];
    let exec = item.exec.as_ref().expect("argv");
    assert_eq!(
        exec.argv[2],
        "stuck x\\n;id>/tmp/p\\x1b[2J in a\\u{202e}b.service"
    );
    let env: HashMap<&str, &str> = exec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env["SOCKWARDEN_COMM"], "x\n;id>/tmp/p\u{1b}[2J");
    assert_eq!(env["SOCKWARDEN_UNIT"], "a\u{202e}b.service");
    assert_eq!(env["SOCKWARDEN_PID"], "4242");
    assert_eq!(env["SOCKWARDEN_RULE"], "notify");
    assert_eq!(env.len(), crate::policy::EXEC_PLACEHOLDERS.len());
}

#[test]
fn explain_lists_every_matching_rule_and_why_not() {
    let c = cast();
    let policy = r#"
mode = "enforce"
[[rule]]
name = "slow-log"
states = ["close-wait"]
older_than = "2h"
action = "log"
[[rule]]
name = "leak"
states = ["close-wait"]
older_than = "10m"
min_sockets = 2
action = "destroy"
[[rule]]
name = "restart"
states = ["close-wait"]
older_than = "10m"
action = "restart"
[[rule]]
name = "restart-2"
states = ["close-wait"]
older_than = "10m"
action = "restart"
"#;
    let case = Case {
        policy,
        sockets: vec![
            sock(1, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5000", "3m", &[&c.py]),
            sock(2, CloseWait, "10.0.0.1:80 -> 10.0.0.2:5001", "1h", &[&c.py]),
            sock(3, FinWait2, "10.0.0.1:80 -> 10.0.0.2:5002", "1h", &[&c.py]),
        ],
        ..Case::default()
    };
    let (_, ex) = run(&case);
    let rules = |i: usize| {
        ex[i]
            .rules
            .iter()
            .map(|r| format!("{}: {}", r.rule, r.outcome))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rules(0),
        [
            "slow-log: not yet: 3m (tcp-info) < 2h",
            "leak: not yet: 3m (tcp-info) < 10m",
            "restart: not yet: 3m (tcp-info) < 10m",
            "restart-2: not yet: 3m (tcp-info) < 10m"
        ]
    );
    assert_eq!(ex[0].summary, "no rule fires yet (4 matching rules)");
    assert_eq!(
        rules(1),
        [
            "slow-log: not yet: 1h (tcp-info) < 2h",
            "leak: not a leak yet: python3(2000) holds 1 matching socket < 2",
            "restart: restart python3(2000): held: owner has no systemd unit",
            "restart-2: shadowed: rule `restart` comes first"
        ]
    );
    assert_eq!(
        ex[1].rules[2].decision,
        Some(Decision::Held(HeldReason::NoUnit))
    );
    assert_eq!(
        ex[1].rules[1].min_sockets.as_deref(),
        Some("python3(2000) holds 1 matching socket < 2")
    );
    assert_eq!(ex[2].summary, "no rule matches");
    assert!(ex[2].rules.is_empty());
    let json = serde_json::to_value(&ex).expect("json");
    assert_eq!(
        json[1]["rules"][2]["decision"]["reason"]["guard"],
        "no-unit"
    );
}
