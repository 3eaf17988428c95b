//! `sockwarden scan` against the real kernel, through the built binary.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    half_closed, kill_child, leak_close_wait, root_or_skip, run, scan_json, spawn_inheriting,
    TestNetns,
};

fn with_port(lines: &[Value], port: u16) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| {
            let local = l["local"].as_str().unwrap_or_default();
            local.ends_with(&format!(":{port}"))
        })
        .collect()
}

fn owner_fds(line: &Value, pid: u32) -> Vec<i64> {
    line["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .filter(|o| o["pid"].as_u64() == Some(u64::from(pid)))
        .map(|o| o["fd"].as_i64().expect("fd"))
        .collect()
}

#[test]
fn leaking_server_close_wait_sockets_are_listed_with_owner_and_growing_age() {
    if !root_or_skip("close-wait scan") {
        return;
    }
    let ns = TestNetns::new();
    let server = leak_close_wait(&ns, "127.0.0.1:0", 3);
    let port = server.addr().port();
    let netns = ns.path();
    let netns = netns.to_str().expect("path");

    let first = scan_json(&["--netns", netns]);
    let mine = with_port(&first, port);
    assert_eq!(mine.len(), 3, "expected the 3 leaked sockets: {first:?}");
    let me = std::process::id();
    let mut fds: Vec<i64> = mine.iter().flat_map(|l| owner_fds(l, me)).collect();
    fds.sort();
    let mut expected: Vec<i64> = server.fds().into_iter().map(i64::from).collect();
    expected.sort();
    assert_eq!(
        fds, expected,
        "each socket owned by this process under its fd"
    );
    for line in &mine {
        assert_eq!(line["state"], "close-wait");
        assert_eq!(line["family"], "ipv4");
        assert_eq!(line["netns_inode"].as_u64(), Some(ns.inode()));
        assert!(line["remote"]
            .as_str()
            .expect("remote")
            .starts_with("127.0.0.1:"));
        assert_ne!(line["cookie"].as_u64(), Some(0));
        assert_ne!(line["inode"].as_u64(), Some(0));
        assert_eq!(line["age_source"], "tcp-info");
        let owner = &line["owners"][0];
        assert!(owner["start_time"].as_u64().expect("start_time") > 0);
        assert!(!owner["comm"].as_str().expect("comm").is_empty());
        assert_eq!(owner["uid"].as_u64(), Some(0));
    }

    std::thread::sleep(Duration::from_secs(3));
    let second = scan_json(&["--netns", netns]);
    for before in &mine {
        let cookie = before["cookie"].as_u64();
        let after = second
            .iter()
            .find(|l| l["cookie"].as_u64() == cookie)
            .expect("still there");
        let (a, b) = (
            before["age_secs"].as_u64().expect("age"),
            after["age_secs"].as_u64().expect("age"),
        );
        assert!(
            b >= a + 2,
            "age must grow across scans 3 s apart: {a} then {b}"
        );
    }
    drop(server);
}

#[test]
fn owned_fin_wait_2_is_listed() {
    if !root_or_skip("fin-wait-2 scan") {
        return;
    }
    let ns = TestNetns::new();
    let (half, _peer, _listener) = half_closed(&ns, "127.0.0.1:0");
    let port = half.local_addr().expect("addr").port();
    let lines = scan_json(&[
        "--netns",
        ns.path().to_str().expect("path"),
        "--state",
        "fin-wait-2",
    ]);
    let mine = with_port(&lines, port);
    assert_eq!(mine.len(), 1, "{lines:?}");
    assert_eq!(mine[0]["state"], "fin-wait-2");
    use std::os::fd::AsRawFd;
    assert_eq!(
        owner_fds(mine[0], std::process::id()),
        vec![i64::from(half.as_raw_fd())]
    );
}

#[test]
fn ipv6_close_wait_is_listed_with_bracketed_addresses() {
    if !root_or_skip("ipv6 scan") {
        return;
    }
    let ns = TestNetns::new();
    let server = leak_close_wait(&ns, "[::1]:0", 1);
    let lines = scan_json(&["--netns", ns.path().to_str().expect("path")]);
    let mine = with_port(&lines, server.addr().port());
    assert_eq!(mine.len(), 1, "{lines:?}");
    assert_eq!(mine[0]["family"], "ipv6");
    assert_eq!(mine[0]["local"], format!("[::1]:{}", server.addr().port()));
    assert!(mine[0]["remote"]
        .as_str()
        .expect("remote")
        .starts_with("[::1]:"));
    assert_eq!(
        owner_fds(mine[0], std::process::id()),
        server
            .fds()
            .iter()
            .map(|f| i64::from(*f))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_socket_shared_with_a_forked_child_has_two_owners() {
    if !root_or_skip("two owners") {
        return;
    }
    let ns = TestNetns::new();
    let server = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let fd = server.fds()[0];
    let child = spawn_inheriting(fd);
    let child_pid = child.id();
    let lines = scan_json(&["--netns", ns.path().to_str().expect("path")]);
    let mine = with_port(&lines, server.addr().port());
    kill_child(child);
    assert_eq!(mine.len(), 1, "{lines:?}");
    assert_eq!(owner_fds(mine[0], std::process::id()), vec![i64::from(fd)]);
    assert_eq!(
        owner_fds(mine[0], child_pid),
        vec![i64::from(fd)],
        "the child holds it under the same fd"
    );
}

#[test]
fn the_default_scan_finds_sockets_in_every_namespace() {
    if !root_or_skip("all-namespace scan") {
        return;
    }
    let (a, b) = (TestNetns::new(), TestNetns::new());
    let sa = leak_close_wait(&a, "127.0.0.1:0", 1);
    let sb = leak_close_wait(&b, "127.0.0.1:0", 1);
    let lines = scan_json(&[]);
    for (ns, server) in [(&a, &sa), (&b, &sb)] {
        let found: Vec<&Value> = with_port(&lines, server.addr().port())
            .into_iter()
            .filter(|l| l["netns_inode"].as_u64() == Some(ns.inode()))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "socket in namespace {} not found by the default scan",
            ns.inode()
        );
        assert_eq!(found[0]["netns"], format!("pid:{}(sleep)", ns.holder_pid()));
        assert_eq!(
            owner_fds(found[0], std::process::id()),
            server
                .fds()
                .iter()
                .map(|f| i64::from(*f))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_filter_selects_what_it_says() {
    if !root_or_skip("filters") {
        return;
    }
    let ns = TestNetns::new();
    let leaky = leak_close_wait(&ns, "127.0.0.1:0", 2);
    let (half, _peer, _l) = half_closed(&ns, "127.0.0.1:0");
    let netns = ns.path();
    let netns = netns.to_str().expect("path");
    let (cw, fw) = (leaky.addr().port(), half.local_addr().expect("addr").port());
    let ports = |args: &[&str]| -> (usize, usize) {
        let mut all = vec!["--netns", netns];
        all.extend_from_slice(args);
        let lines = scan_json(&all);
        (with_port(&lines, cw).len(), with_port(&lines, fw).len())
    };
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let comm = comm.trim();
    let glob = format!("{}*", &comm[..comm.len().min(4)]);

    assert_eq!(
        ports(&[]),
        (2, 1),
        "default states include close-wait and fin-wait-2"
    );
    assert_eq!(ports(&["--state", "close-wait"]), (2, 0));
    assert_eq!(
        ports(&["--state", "close-wait", "--state", "fin-wait-2"]),
        (2, 1)
    );
    assert_eq!(ports(&["--state", "all"]).0, 3, "`all` adds the listener");
    assert_eq!(ports(&["--port", &cw.to_string()]), (2, 0));
    assert_eq!(ports(&["--older-than", "1h"]), (0, 0));
    assert_eq!(ports(&["--older-than", "0s"]), (2, 1));
    assert_eq!(
        ports(&["--process", &glob]),
        (2, 1),
        "the test process owns them ({glob})"
    );
    assert_eq!(ports(&["--process", "no-such-command"]), (0, 0));
    assert_eq!(
        ports(&["--unit", "*.service"]),
        (0, 0),
        "the test runs in no systemd unit"
    );
    let host = scan_json(&["--netns", "host"]);
    assert!(
        with_port(&host, cw)
            .iter()
            .all(|l| l["netns_inode"].as_u64() != Some(ns.inode())),
        "--netns host excludes the test namespace"
    );
}

#[test]
fn summary_counts_per_state_and_owner() {
    if !root_or_skip("summary") {
        return;
    }
    let ns = TestNetns::new();
    let _leaky = leak_close_wait(&ns, "127.0.0.1:0", 4);
    let lines = scan_json(&["--netns", ns.path().to_str().expect("path"), "--summary"]);
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let row = lines
        .iter()
        .find(|l| l["state"] == "close-wait" && l["owner"] == comm.trim())
        .unwrap_or_else(|| panic!("no close-wait row for {comm}: {lines:?}"));
    assert_eq!(row["sockets"], 4);
}

#[test]
fn exit_codes_tell_found_from_nothing() {
    if !root_or_skip("exit codes") {
        return;
    }
    let ns = TestNetns::new();
    let netns = ns.path();
    let netns = netns.to_str().expect("path");
    let (code, out, _) = run(&["scan", "--netns", netns]);
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "nothing stuck: exit 0, empty stdout"
    );
    let _leaky = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let (code, out, err) = run(&["scan", "--netns", netns]);
    assert_eq!(code, 1, "stuck sockets found: exit 1");
    assert!(out.starts_with("NETNS"), "a table with a header: {out}");
    assert!(out.contains("close-wait"), "{out}");
    // Something is stuck: the next step is named, on stderr (stdout stays the table).
    assert!(
        err.contains("sockwarden policy explain")
            && err.contains("--state close-wait")
            && err.contains("--action destroy --dry-run"),
        "{err}"
    );
    let (_, json, err) = run(&["scan", "--netns", netns, "--json"]);
    assert!(!err.contains("next:") && !json.contains("next:"), "{err}");
}

#[test]
fn unknown_state_is_refused_with_the_valid_names() {
    let (code, _, err) = run(&["scan", "--state", "close_wiat"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown TCP state `close_wiat`"), "{err}");
    assert!(
        err.contains("close-wait") && err.contains("fin-wait-2"),
        "{err}"
    );
}

#[test]
fn unknown_namespace_is_an_error_naming_it() {
    let (code, _, err) = run(&["scan", "--netns", "no-such-netns"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-netns"), "{err}");
}

#[test]
fn bad_duration_is_refused_with_examples() {
    let (code, _, err) = run(&["scan", "--older-than", "10"]);
    assert_eq!(code, 2);
    assert!(err.contains("\"10m\""), "{err}");
}

#[test]
fn policy_explain_names_the_namespace_the_rule_and_the_evidence_against_the_threshold() {
    if !root_or_skip("policy explain") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"slow-leak\"\nstates = [\"close-wait\"]\nolder_than = \"1h\"\naction = \"log\"\n",
    )
    .expect("write policy");
    let ns = TestNetns::new();
    let server = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let netns = ns.path();
    let netns = netns.to_str().expect("path");
    let name = with_port(&scan_json(&["--netns", netns]), server.addr().port())[0]["netns"]
        .as_str()
        .expect("netns name")
        .to_string();
    let args = [
        "policy",
        "explain",
        "--policy",
        policy.to_str().expect("path"),
        "--netns",
        netns,
        "--audit-log",
        "/nonexistent/audit.jsonl",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("close-wait") && l.contains(&server.addr().to_string()))
        .unwrap_or_else(|| panic!("no row for the leaked socket:\n{out}"));
    assert!(out.starts_with("NETNS"), "{out}");
    assert!(row.starts_with(&name), "the namespace first: {row}");
    assert!(row.contains("slow-leak"), "the rule: {row}");
    assert!(
        row.contains("(tcp-info) < 1h"),
        "evidence vs threshold: {row}"
    );
    let (_, json, _) = run(&[&args[..], &["--json"]].concat());
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l["type"] == "explanation" && l["socket"]["netns"] == name.as_str()),
        "{json}"
    );
}

#[test]
fn log_lines_carry_their_journal_priority_and_a_bad_log_filter_is_refused() {
    let bin = env!("CARGO_BIN_EXE_sockwarden");
    let out = std::process::Command::new(bin)
        .args(["-v", "scan", "--netns", "host"])
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("SOCKWARDEN_LOG")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("<7>") && l.contains("dumped")),
        "debug lines are priority 7 under the journal:\n{err}"
    );

    let out = std::process::Command::new(bin)
        .args(["scan"])
        .env("SOCKWARDEN_LOG", "debgu")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`debgu` is neither a level"), "{err}");
    assert!(out.stdout.is_empty());
}

/// `--color` decides the logs' colours: `always` even into a pipe, `never` and `auto` into a
/// pipe not; `NO_COLOR` does not override an explicit `always`; a bad value is refused.
#[test]
fn color_flag_sets_the_logs_colours() {
    let stderr_of = |color: &str, no_color: bool| {
        let mut cmd = crate::support::sockwarden();
        cmd.args([
            "--color",
            color,
            "-v",
            "--log-format",
            "text",
            "scan",
            "--netns",
            "host",
        ]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().expect("run sockwarden");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("DEBUG"), "no debug lines to colour:\n{err}");
        err
    };
    let ansi = |s: &str| s.contains('\u{1b}');
    assert!(ansi(&stderr_of("always", false)));
    assert!(ansi(&stderr_of("always", true)));
    assert!(!ansi(&stderr_of("never", false)));
    assert!(!ansi(&stderr_of("auto", false)), "stderr is a pipe here");

    let out = crate::support::sockwarden()
        .args(["--color", "sometimes", "scan"])
        .output()
        .expect("run sockwarden");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("possible values: auto, always, never"),
        "{err}"
    );
}
