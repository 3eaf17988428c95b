//! `sockwarden clean --action restart` against a real systemd, booted isolated in its own
//! namespaces, running a service that leaks CLOSE_WAIT sockets.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::isolated_systemd::IsolatedSystemd;
use crate::support::{root_or_skip, sockwarden};

const UNIT: &str = "sw-leaky.service";

/// A service that accepts connections from itself, has the clients close, and never closes
/// the accepted side: 5 CLOSE_WAIT sockets on 127.0.0.1:7777, held by its main process.
const LEAKY: &str = r#"
import socket, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 7777)); l.listen(16)
kept = []
for _ in range(5):
    c = socket.create_connection(("127.0.0.1", 7777)); s, _ = l.accept()
    c.shutdown(socket.SHUT_WR); time.sleep(0.05); c.close(); kept.append(s)
time.sleep(100000)
"#;

fn close_wait_owned_by(sd: &IsolatedSystemd, host_pid: u32) -> usize {
    let out = sockwarden()
        .args(["scan", "--json", "--state", "close-wait", "--port", "7777"])
        .args(["--netns", &format!("/proc/{}/ns/net", sd.pid())])
        .output()
        .expect("scan");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["owners"].as_array().is_some_and(|o| {
                o.iter()
                    .any(|o| o["pid"].as_u64() == Some(u64::from(host_pid)))
            })
        })
        .count()
}

fn wait_for_leak(sd: &IsolatedSystemd) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = sd.main_pid_host(UNIT) {
            if close_wait_owned_by(sd, pid) == 5 {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service never leaked its 5 sockets\n{}",
            sd.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn clean_restart(sd: &IsolatedSystemd, log: &Path) -> (i32, String, String) {
    let out = sockwarden()
        .env("DBUS_SYSTEM_BUS_ADDRESS", sd.bus_address())
        .args([
            "clean",
            "--state",
            "close-wait",
            "--port",
            "7777",
            "--action",
            "restart",
            "--yes",
        ])
        .args(["--netns", &format!("/proc/{}/ns/net", sd.pid())])
        .args(["--audit-log", log.to_str().expect("path")])
        .output()
        .expect("clean");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clean_restarts_exactly_the_leaking_unit_and_the_budget_stops_a_second_restart() {
    if !root_or_skip("systemd restart") {
        return;
    }
    let sd = IsolatedSystemd::boot();
    sd.exec_ok([
        "systemd-run",
        &format!("--unit={UNIT}"),
        "/usr/bin/python3",
        "-c",
        LEAKY,
    ]);
    sd.exec_ok([
        "systemd-run",
        "--unit=sw-bystander.service",
        "/bin/sleep",
        "100000",
    ]);
    let bystander = sd
        .main_pid_host("sw-bystander.service")
        .expect("bystander pid");
    let old = wait_for_leak(&sd);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");

    let (code, out, err) = clean_restart(&sd, &log);
    assert_eq!(code, 0, "{out}\n{err}\n{}", sd.diagnostics());
    let new = wait_for_leak(&sd);
    assert_ne!(new, old, "the unit has a new main process: {out}\n{err}");
    assert!(
        !Path::new(&format!("/proc/{old}")).exists(),
        "the old main process is gone"
    );
    assert_eq!(
        sd.main_pid_host("sw-bystander.service"),
        Some(bystander),
        "only that unit was restarted"
    );

    let records: Vec<Value> = std::fs::read_to_string(&log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let intent = records
        .iter()
        .find(|r| r["kind"] == "intent")
        .expect("intent");
    let outcome = records
        .iter()
        .find(|r| r["kind"] == "outcome")
        .expect("outcome");
    assert_eq!(intent["action"]["kind"], "restart");
    assert_eq!(intent["unit"], UNIT);
    assert_eq!(outcome["outcome"]["result"], "restarted", "{outcome}");
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "intent").count(),
        1,
        "one restart for five sockets"
    );

    // The new process leaks again at once; the budget (1 restart per unit per hour) holds,
    // and exit 1 tells a script that the restart it asked for was not done.
    let (code, out, err) = clean_restart(&sd, &log);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("max_restarts_per_unit_per_hour"),
        "the plan says why: {out}"
    );
    assert_eq!(
        sd.main_pid_host(UNIT),
        Some(new),
        "not restarted a second time"
    );
    let intents = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .filter(|l| l.contains("\"kind\":\"intent\""))
        .count();
    assert_eq!(intents, 1, "no second restart was attempted");
}
