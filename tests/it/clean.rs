//! `sockwarden clean` against the real kernel: exactly the matching sockets are destroyed,
//! signals reach the right process, every action is in the audit log, and no action is
//! taken that cannot be recorded.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;

use serde_json::Value;

use crate::support::{
    audit_records, leak_close_wait, ports_in, root_or_skip, run, spawn_inheriting, TestNetns,
};

#[test]
fn clean_destroys_exactly_the_matching_close_wait_sockets_and_records_it() {
    if !root_or_skip("clean destroy") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let ns = TestNetns::new();
    let mut target = leak_close_wait(&ns, "127.0.0.1:0", 3);
    let mut bystander = leak_close_wait(&ns, "127.0.0.1:0", 2);
    let port = target.addr().port().to_string();
    let netns = ns.path();

    let (code, out, err) = run(&[
        "clean",
        "--netns",
        netns.to_str().expect("path"),
        "--state",
        "close-wait",
        "--port",
        &port,
        "--action",
        "destroy",
        "--yes",
        "--audit-log",
        log.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "clean failed: {out}\n{err}");
    assert!(out.contains("destroyed"), "{out}");

    assert_eq!(
        ports_in(&ns, target.addr().port()),
        0,
        "the matching sockets are gone"
    );
    assert_eq!(ports_in(&ns, bystander.addr().port()), 2, "the others stay");
    for stream in &mut target.leaked {
        let err = stream
            .write_all(b"x")
            .expect_err("the owner sees the abort");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
    }
    for stream in &mut bystander.leaked {
        assert!(
            stream.take_error().expect("SO_ERROR").is_none(),
            "bystander untouched"
        );
    }

    let records = audit_records(&log);
    let intents: Vec<&Value> = records.iter().filter(|r| r["kind"] == "intent").collect();
    let outcomes: Vec<&Value> = records.iter().filter(|r| r["kind"] == "outcome").collect();
    assert_eq!((intents.len(), outcomes.len()), (3, 3), "{records:?}");
    for outcome in &outcomes {
        assert_eq!(outcome["outcome"]["result"], "destroyed");
        let intent = intents
            .iter()
            .find(|i| i["seq"] == outcome["intent_seq"] && i["entry"] == outcome["entry"])
            .expect("its intent");
        assert!(
            intent["seq"].as_u64() < outcome["seq"].as_u64(),
            "intent first"
        );
        assert_eq!(intent["target"]["cookie"], outcome["target"]["cookie"]);
        assert_eq!(intent["target"]["state"], "close-wait");
        assert_eq!(intent["actor"]["kind"], "cli");
        assert_eq!(intent["action"]["kind"], "destroy");
        assert_eq!(intent["target"]["age_source"], "tcp-info");
    }
    let (code, out, err) = run(&[
        "audit",
        "verify",
        "--audit-log",
        log.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "the chain verifies: {out}{err}");
}

#[test]
fn clean_without_an_action_or_a_policy_says_which_to_give() {
    let (code, out, err) = run(&["clean", "--state", "close-wait", "--dry-run"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(
        err.contains("--action ACTION") && err.contains("--policy FILE"),
        "{err}"
    );
}

#[test]
fn dry_run_records_the_plan_and_touches_nothing() {
    if !root_or_skip("clean dry-run") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let ns = TestNetns::new();
    let target = leak_close_wait(&ns, "127.0.0.1:0", 2);
    let port = target.addr().port().to_string();
    let (code, out, err) = run(&[
        "clean",
        "--netns",
        ns.path().to_str().expect("path"),
        "--port",
        &port,
        "--state",
        "close-wait",
        "--action",
        "destroy",
        "--dry-run",
        "--audit-log",
        log.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ports_in(&ns, target.addr().port()), 2, "nothing destroyed");
    let records = audit_records(&log);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records.iter().all(|r| r["kind"] == "dry-run"),
        "{records:?}"
    );
    // The operator asked for a dry run; the plan says so, not "observe mode".
    assert!(out.contains("dry run: would act"), "{out}");
    assert!(!out.contains("observe mode"), "{out}");
    assert!(out.contains("2 dry-run"), "the results line:\n{out}");
}

/// A plan of more than 50 items is summarized on a terminal: its groups (one here: every
/// socket has the same owner) and the first rows; `-v` lists every item.
#[test]
fn a_large_plan_is_summarized_and_listed_whole_with_verbose() {
    if !root_or_skip("clean plan summary") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let ns = TestNetns::new();
    let target = leak_close_wait(&ns, "127.0.0.1:0", 60);
    let port = target.addr().port().to_string();
    let netns = ns.path();
    let args = [
        "clean",
        "--netns",
        netns.to_str().expect("path"),
        "--port",
        &port,
        "--state",
        "close-wait",
        "--action",
        "destroy",
        "--dry-run",
        "--audit-log",
        log.to_str().expect("path"),
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    // The plan, before the results' table.
    let plan_of = |out: &str| out.split(" RESULT ").next().unwrap_or_default().to_string();
    let row = format!(":{port}\u{2192}");
    let plan = plan_of(&out);
    let group = plan
        .lines()
        .find(|l| l.trim_start().starts_with("60 "))
        .unwrap_or_else(|| panic!("one group of the 60 items:\n{out}"));
    for word in ["clean", "destroy", "close-wait", "would act"] {
        assert!(group.contains(word), "{word} in the group row: {group}");
    }
    assert!(out.contains("First 10 of 60"), "{out}");
    assert_eq!(
        plan.matches(&row).count(),
        10,
        "the first rows only:\n{out}"
    );

    let mut verbose = vec!["-v"];
    verbose.extend(args);
    let (code, out, err) = run(&verbose);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("First 10"), "{out}");
    assert_eq!(plan_of(&out).matches(&row).count(), 60, "every row:\n{out}");
    assert_eq!(ports_in(&ns, target.addr().port()), 60, "nothing destroyed");
}

#[test]
fn clean_refuses_to_act_without_yes_when_not_on_a_terminal() {
    if !root_or_skip("clean confirmation") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let ns = TestNetns::new();
    let target = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let port = target.addr().port().to_string();
    let (code, _, err) = run(&[
        "clean",
        "--netns",
        ns.path().to_str().expect("path"),
        "--port",
        &port,
        "--state",
        "close-wait",
        "--action",
        "destroy",
        "--audit-log",
        log.to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(ports_in(&ns, target.addr().port()), 1);
    assert!(audit_records(&log).is_empty());
}

#[test]
fn signal_reaches_the_process_that_holds_the_socket() {
    if !root_or_skip("clean signal") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let ns = TestNetns::new();
    let mut server = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let port = server.addr().port().to_string();
    // Hand the socket to a child and close our copy: the child is its only owner.
    let mut child = spawn_inheriting(server.fds()[0]);
    server.leaked.clear();

    let (code, out, err) = run(&[
        "clean",
        "--netns",
        ns.path().to_str().expect("path"),
        "--port",
        &port,
        "--state",
        "close-wait",
        "--action",
        "signal",
        "--signal",
        "SIGTERM",
        "--yes",
        "--audit-log",
        log.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "the owner got SIGTERM"
    );
    let outcome = audit_records(&log)
        .into_iter()
        .find(|r| r["kind"] == "outcome")
        .expect("outcome record");
    assert_eq!(outcome["outcome"]["result"], "delivered");
    assert_eq!(
        outcome["process"]["pid"].as_u64(),
        Some(u64::from(child.id()))
    );
}

#[test]
fn a_full_disk_under_the_audit_log_means_no_action() {
    if !root_or_skip("ENOSPC") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = TestNetns::new();
    let target = leak_close_wait(&ns, "127.0.0.1:0", 2);
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).expect("mkdir");
    let log = mnt.join("audit.jsonl");
    // A 16 KiB tmpfs, filled, mounted in a private mount namespace of the child only.
    let script = format!(
        "mount -t tmpfs -o size=16k,mode=0750 tmpfs {mnt} && touch {log} && (dd if=/dev/zero of={mnt}/fill bs=1k 2>/dev/null; true) && exec \"$0\" \"$@\"",
        mnt = mnt.display(),
        log = log.display()
    );
    let output = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            env!("CARGO_BIN_EXE_sockwarden"),
        ])
        .args([
            "clean",
            "--netns",
            ns.path().to_str().expect("path"),
            "--port",
            &target.addr().port().to_string(),
            "--state",
            "close-wait",
        ])
        .args([
            "--action",
            "destroy",
            "--yes",
            "--audit-log",
            log.to_str().expect("path"),
        ])
        .output()
        .expect("run clean in a private mount namespace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("no action was taken"), "{stderr}");
    assert_eq!(ports_in(&ns, target.addr().port()), 2, "nothing destroyed");
}
