//! `sys::systemd` against a real systemd booted in its own namespaces (needs root): unit
//! state, restarts and their outcomes, unit lookup by pid, and the errors people read.

use std::path::Path;
use std::time::Duration;

use sockwarden::sys::systemd::{RestartOutcome, Systemd, SystemdError};

use crate::isolated_systemd::IsolatedSystemd;

const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

fn connect(sd: &IsolatedSystemd) -> Systemd {
    Systemd::connect_address(&sd.bus_address())
        .unwrap_or_else(|e| panic!("{e}\n{}", sd.diagnostics()))
}

fn cmdline(host_pid: u32) -> String {
    std::fs::read(format!("/proc/{host_pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn restart_gives_the_unit_a_new_main_process() {
    let sd = IsolatedSystemd::boot();
    eprintln!("isolated systemd booted in {:?}", sd.boot_time);
    sd.exec_ok([
        "systemd-run",
        "--unit=sw-test-leaky.service",
        "/bin/sleep",
        "1000",
    ]);
    let systemd = connect(&sd);

    let state = systemd
        .unit_state("sw-test-leaky.service")
        .expect("unit_state");
    assert_eq!(
        (state.active_state.as_str(), state.sub_state.as_str()),
        ("active", "running")
    );
    assert_eq!(state.load_state, "loaded");
    assert_eq!(state.job, None);
    let old = state.main_pid.expect("a running service has a MainPID");
    let old_host = sd.main_pid_host("sw-test-leaky.service").expect("host pid");
    assert_eq!(sd.ns_pid(old_host), Some(old));
    assert!(
        cmdline(old_host).starts_with("/bin/sleep 1000"),
        "{}",
        cmdline(old_host)
    );
    // GetUnitByPID agrees with the unit the service runs as (pids are systemd's own).
    assert_eq!(
        systemd.unit_of_pid(old).expect("unit_of_pid").as_deref(),
        Some("sw-test-leaky.service")
    );

    let outcome = systemd
        .restart_unit("sw-test-leaky.service", RESTART_TIMEOUT)
        .expect("restart_unit");
    let RestartOutcome::Restarted {
        old_main_pid,
        new_main_pid,
        job_result,
    } = outcome
    else {
        panic!("expected Restarted, got {outcome:?}\n{}", sd.diagnostics());
    };
    assert_eq!(job_result, "done");
    assert_eq!(old_main_pid, Some(old));
    let new = new_main_pid.expect("the restarted service has a MainPID");
    assert_ne!(new, old);

    // The old process is gone from the host's /proc, the new one is a real process there.
    assert!(
        !Path::new(&format!("/proc/{old_host}")).exists(),
        "old main pid still alive"
    );
    let new_host = sd
        .host_pid(new)
        .expect("the new main pid is a live process");
    assert_eq!(sd.main_pid_host("sw-test-leaky.service"), Some(new_host));
    assert!(
        cmdline(new_host).starts_with("/bin/sleep 1000"),
        "{}",
        cmdline(new_host)
    );

    let state = systemd
        .unit_state("sw-test-leaky.service")
        .expect("unit_state");
    assert_eq!(
        (state.active_state.as_str(), state.sub_state.as_str()),
        ("active", "running")
    );
    assert_eq!(state.main_pid, Some(new));
}

#[test]
fn unknown_units_and_pids_are_named() {
    let sd = IsolatedSystemd::boot();
    let systemd = connect(&sd);

    let err = systemd
        .restart_unit("sw-no-such-unit.service", RESTART_TIMEOUT)
        .expect_err("restarting an unknown unit must fail");
    assert!(matches!(err, SystemdError::NoSuchUnit { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no unit named \"sw-no-such-unit.service\""),
        "{msg}"
    );

    let err = systemd
        .unit_state("sw-no-such-unit.service")
        .expect_err("unknown unit");
    assert!(matches!(err, SystemdError::NoSuchUnit { .. }), "{err:?}");

    // A pid systemd has never seen (beyond the default pid_max) belongs to no unit.
    assert_eq!(systemd.unit_of_pid(4_000_000).expect("unit_of_pid"), None);
    // systemd's own pid is in init.scope.
    assert_eq!(
        systemd.unit_of_pid(1).expect("unit_of_pid").as_deref(),
        Some("init.scope")
    );
}

#[test]
fn a_unit_already_starting_is_not_restarted() {
    let sd = IsolatedSystemd::boot();
    // Type=notify without a READY=1: the start job stays running, the unit `activating`.
    sd.exec_ok([
        "systemd-run",
        "--no-block",
        "--unit=sw-test-starting.service",
        "--property=Type=notify",
        "/bin/sleep",
        "1000",
    ]);
    let systemd = connect(&sd);
    let before = sd.main_pid("sw-test-starting.service");

    let outcome = systemd
        .restart_unit("sw-test-starting.service", RESTART_TIMEOUT)
        .expect("restart_unit");
    let RestartOutcome::AlreadyInProgress { state } = outcome else {
        panic!("expected AlreadyInProgress, got {outcome:?}");
    };
    assert_eq!(state.active_state, "activating");
    assert!(state.job.is_some(), "{state:?}");
    // Nothing was asked of systemd: the same process is still starting.
    assert_eq!(sd.main_pid("sw-test-starting.service"), before);
}

#[test]
fn a_failed_or_slow_restart_is_reported_as_such() {
    let sd = IsolatedSystemd::boot();
    // Starts only while /run/sw-ok exists: the restart's start fails once it is gone.
    sd.exec_ok(["touch", "/run/sw-ok"]);
    sd.exec_ok([
        "systemd-run",
        "--unit=sw-test-flaky.service",
        "--property=ExecStartPre=/usr/bin/test -e /run/sw-ok",
        "/bin/sleep",
        "1000",
    ]);
    // Its restart takes 5 s.
    sd.exec_ok([
        "systemd-run",
        "--unit=sw-test-slow.service",
        "--property=ExecStartPre=/bin/sh -c 'test ! -e /run/sw-slow || sleep 5'",
        "/bin/sleep",
        "1000",
    ]);
    let systemd = connect(&sd);

    sd.exec_ok(["rm", "/run/sw-ok"]);
    let outcome = systemd
        .restart_unit("sw-test-flaky.service", RESTART_TIMEOUT)
        .expect("restart_unit");
    assert_eq!(
        outcome,
        RestartOutcome::Failed {
            result: "failed".into()
        }
    );
    assert_eq!(
        systemd
            .unit_state("sw-test-flaky.service")
            .expect("state")
            .active_state,
        "failed"
    );

    sd.exec_ok(["touch", "/run/sw-slow"]);
    let outcome = systemd
        .restart_unit("sw-test-slow.service", Duration::from_millis(500))
        .expect("restart_unit");
    assert_eq!(outcome, RestartOutcome::TimedOut);
    // The job was left running: a second restart now is refused.
    let outcome = systemd
        .restart_unit("sw-test-slow.service", RESTART_TIMEOUT)
        .expect("restart_unit");
    assert!(
        matches!(outcome, RestartOutcome::AlreadyInProgress { .. }),
        "{outcome:?}"
    );
}

#[test]
fn nothing_listening_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("unix:path={}/no_bus_here", dir.path().display());
    let err = Systemd::connect_address(&address).expect_err("nothing listens there");
    assert!(matches!(err, SystemdError::NotRunning { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "systemd's D-Bus API did not answer at {address}: "
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("is systemd running as PID 1 / is dbus up? (restart actions need it)"),
        "{msg}"
    );
}
