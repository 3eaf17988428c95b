//! `doctor`, and `scan` run without root: what works, and what it says about what does not.

use std::process::Command;

use serde_json::Value;

use crate::support::{leak_close_wait, root_or_skip, run, TestNetns};

#[test]
fn doctor_reports_every_check_and_destroy_works_here() {
    if !root_or_skip("doctor") {
        return;
    }
    let (code, out, err) = run(&["doctor", "--json"]);
    assert!(code == 0 || code == 1, "doctor exit {code}: {err}");
    let checks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no `{name}` check in {checks:?}"))
    };
    for name in [
        "sock_diag",
        "namespaces",
        "capabilities",
        "pidfd",
        "cgroups",
        "systemd",
        "kernel",
    ] {
        status(name);
    }
    assert_eq!(status("sock_diag"), "ok");
    assert_eq!(
        status("sock-destroy"),
        "ok",
        "the project's machines have CONFIG_INET_DIAG_DESTROY"
    );
    assert_eq!(status("pidfd"), "ok");
    let all_ok = checks.iter().all(|c| c["status"] == "ok");
    assert_eq!(
        code,
        if all_ok { 0 } else { 1 },
        "exit code follows the checks"
    );
}

#[test]
fn scan_without_root_lists_sockets_and_says_which_owners_it_could_not_see() {
    if !root_or_skip("unprivileged scan") {
        return;
    }
    let ns = TestNetns::new();
    let server = leak_close_wait(&ns, "127.0.0.1:0", 2);
    // As nobody, inside the test namespace (where it is "host" to the scan).
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args([
            env!("CARGO_BIN_EXE_sockwarden"),
            "scan",
            "--json",
            "--netns",
            "host",
            "--state",
            "close-wait",
        ])
        .output()
        .expect("run scan as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sockets found: {stdout}{stderr}"
    );
    let mine: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|l| {
            l["local"]
                .as_str()
                .is_some_and(|a| a.ends_with(&format!(":{}", server.addr().port())))
        })
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "the kernel shows the sockets to anyone: {stdout}"
    );
    assert!(
        mine.iter()
            .all(|l| l["owners"].as_array().is_some_and(Vec::is_empty)),
        "root's fds are hidden from nobody"
    );
    assert!(
        stderr.contains("permission denied") && stderr.contains("Run as root"),
        "says why owners are missing: {stderr}"
    );
}

/// Regression (trust issue): as root without CAP_SYS_ADMIN every setns failed with a
/// warning, and `scan` still said `no stuck sockets in 1 network namespace(s)` and exited
/// 0. Namespaces it could not read make it exit 3 (incomplete) and say what it did not see.
#[test]
fn a_scan_that_could_not_enter_a_namespace_is_not_an_all_clear() {
    if !root_or_skip("scan without CAP_SYS_ADMIN") {
        return;
    }
    // At least one namespace other than ours, with a socket in it: an empty one is known to
    // be empty from its sockstat without entering it (and rightly counts as seen).
    let ns = TestNetns::new();
    let _listener = ns.enter(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-sys_admin",
            "--bounding-set=-sys_admin",
            "--",
            env!("CARGO_BIN_EXE_sockwarden"),
            "scan",
            "--port",
            "1", // nothing matches where it can look
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("NOT seen"), "{err}");
    assert!(err.contains("not an all-clear"), "{err}");
}
