//! The eBPF watcher on the real kernel: the committed object matches its source, and with the
//! programs loaded sockwarden sees the same sockets, states and owners as through sock_diag
//! and `/proc`, with exact ages from the index a daemon pinned, which outlive the daemon.
//!
//! The index is pinned in a bpffs of the test's own, mounted in a private mount namespace
//! held by a `sleep`: when the test ends, the namespace and every pin in it go away, and
//! with them the tracepoint program.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::states::EveryState;
use crate::support::{
    half_closed, in_ci, leak_close_wait, poll, repo_root, root_or_skip, TestNetns,
};

#[test]
fn the_committed_bpf_object_is_built_from_its_source() {
    let have = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new("/usr/include/bpf/bpf_helpers.h").exists();
    if !have {
        assert!(!in_ci(), "CI must install clang and libbpf-dev (.ci/run)");
        eprintln!("skipping: needs clang and libbpf-dev to rebuild the BPF object");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rebuilt = dir.path().join("sockwarden.bpf.o");
    let dir_of = repo_root().join("src/sys/bpf");
    let out = Command::new(dir_of.join("build.sh"))
        .arg(&rebuilt)
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read(dir_of.join("sockwarden.bpf.o")).expect("committed object");
    let fresh = std::fs::read(&rebuilt).expect("rebuilt object");
    assert!(
        committed == fresh,
        "src/sys/bpf/sockwarden.bpf.o differs from what its source builds: run src/sys/bpf/build.sh and commit the object"
    );
}

/// A private mount namespace with a fresh bpffs on /sys/fs/bpf, held by a `sleep`.
struct BpfMountNs {
    holder: Child,
}

impl BpfMountNs {
    fn new() -> BpfMountNs {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t bpf bpf /sys/fs/bpf && exec sleep 600")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare --mount");
        let ns = BpfMountNs { holder };
        let mountinfo = format!("/proc/{}/mountinfo", ns.holder.id());
        poll(
            10,
            Duration::from_millis(20),
            "a bpffs in the test's mount namespace",
            String::new,
            || {
                std::fs::read_to_string(&mountinfo)
                    .ok()
                    .filter(|m| m.contains(" /sys/fs/bpf ") && m.contains(" - bpf "))
            },
        );
        ns
    }

    /// `sockwarden ARGS` inside this mount namespace, pinning at the default place.
    fn sockwarden(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--"])
            .arg(env!("CARGO_BIN_EXE_sockwarden"))
            .args(args)
            .env_remove("SOCKWARDEN_LOG")
            .env_remove("SOCKWARDEN_BPF_PIN_DIR")
            .env_remove("SOCKWARDEN_WATCHER");
        cmd
    }

    fn scan(&self, ns: &TestNetns, env: &[(&str, &str)]) -> Vec<Value> {
        self.scan_logged(ns, env).0
    }

    /// `scan --json` of `ns`: its sockets, and what it logged (at debug level, how the
    /// eBPF watcher served the namespace).
    fn scan_logged(&self, ns: &TestNetns, env: &[(&str, &str)]) -> (Vec<Value>, String) {
        let path = ns.path().display().to_string();
        let out = self
            .sockwarden(&["scan", "--json", "--netns", &path])
            .env("SOCKWARDEN_LOG", "sockwarden::sys=debug")
            .envs(env.iter().copied())
            .output()
            .expect("run scan");
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "scan exited {code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sockets = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
            .filter(|v| v["type"] == "socket")
            .collect();
        (sockets, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The daemon, observing (every namespace, unless `args` say otherwise) with a policy
    /// that never acts, its log in `work`: it creates and pins the index.
    fn daemon(&self, work: &Path, args: &[&str]) -> (KillOnDrop, PathBuf) {
        std::fs::write(work.join("policy.toml"), QUIET_POLICY).expect("policy");
        std::fs::write(work.join("sockwarden.toml"), "").expect("config");
        let log = work.join("daemon.log");
        let path = |name: &str| work.join(name).display().to_string();
        let daemon = KillOnDrop(Some(
            self.sockwarden(&[
                "run",
                "--config",
                &path("sockwarden.toml"),
                "--policy",
                &path("policy.toml"),
                "--interval",
                "1s",
                "--audit-log",
                &path("audit.jsonl"),
                "--state-dir",
                &path("state"),
                "--log-format",
                "text",
            ])
            .args(args)
            .env("SOCKWARDEN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log"))
            .spawn()
            .expect("spawn the daemon"),
        ));
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        poll(
            20,
            Duration::from_millis(50),
            "the daemon to say it runs the eBPF watcher with a pinned index",
            read_log,
            || {
                let pinned = "watcher bpf: exact ages from the eBPF index at /sys/fs/bpf/sockwarden/v2 (pinned now)";
                read_log().contains(pinned).then_some(())
            },
        );
        (daemon, log)
    }
}

/// A daemon the test started: killed if the test fails before stopping it (it would keep
/// the mount namespace, and the programs pinned in it, alive).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BpfMountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// What both watchers must agree on: the socket, its state and its holders (pid, fd).
fn facts(sockets: &[Value]) -> BTreeSet<String> {
    sockets
        .iter()
        .map(|s| {
            let owners: Vec<String> = s["owners"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .map(|o| format!("{}/{}/{}", o["pid"], o["start_time"], o["fd"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{} {} {} {} {} [{}]",
                s["cookie"],
                s["state"],
                s["local"],
                s["remote"],
                s["inode"],
                owners.join(",")
            )
        })
        .collect()
}

/// The socket `stream` is (its local and remote address) in `state`.
fn find<'a>(sockets: &'a [Value], stream: &TcpStream, state: &str) -> &'a Value {
    let (local, remote) = tuple(stream);
    sockets
        .iter()
        .find(|s| {
            s["local"] == local.as_str() && s["remote"] == remote.as_str() && s["state"] == state
        })
        .unwrap_or_else(|| panic!("no {state} socket {local} -> {remote} in {sockets:#?}"))
}

fn tuple(stream: &TcpStream) -> (String, String) {
    let local = stream.local_addr().expect("local addr").to_string();
    let remote = stream.peer_addr().expect("peer addr").to_string();
    (local, remote)
}

const QUIET_POLICY: &str = r#"
[[rule]]
name = "never-soon"
states = ["close-wait"]
older_than = "1d"
action = "log"
"#;

#[test]
fn with_ebpf_the_same_sockets_and_owners_are_seen_and_ages_are_exact_and_survive_a_restart() {
    if !root_or_skip("with_ebpf_the_same_sockets_and_owners_are_seen") {
        return;
    }
    let mounts = BpfMountNs::new();
    let ns = TestNetns::new();
    // Older than the index: keeps today's evidence.
    let before = leak_close_wait(&ns, "127.0.0.1:0", 1);

    let work = tempfile::tempdir().expect("tempdir");
    let netns = ns.path().display().to_string();
    let (mut daemon, log) = mounts.daemon(work.path(), &["--netns", &netns]);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Entered their states while the index was kept: IPv4 and IPv6 CLOSE_WAIT, an owned
    // FIN_WAIT_2, and a CLOSE_WAIT in a namespace created after the daemon started.
    let v4 = leak_close_wait(&ns, "127.0.0.1:0", 2);
    let v6 = leak_close_wait(&ns, "[::1]:0", 1);
    let (fin_wait_2, peer, _listener) = half_closed(&ns, "127.0.0.1:0");
    let late_ns = TestNetns::new();
    let late = leak_close_wait(&late_ns, "127.0.0.1:0", 1);
    std::thread::sleep(Duration::from_millis(1_100));

    let (bpf, log) = mounts.scan_logged(&ns, &[]);
    let plain = mounts.scan(&ns, &[("SOCKWARDEN_WATCHER", "sock-diag")]);
    assert_eq!(facts(&bpf), facts(&plain), "both watchers see the same");
    // The owners came from the iterator asked for the scan's states, their details read
    // while the namespace was dumped: none had to be looked for again.
    let logged = |message: &str, key: &str| -> Option<u64> {
        let line = log.lines().find(|l| l.contains(message))?;
        let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
        line[at..].split([',', '}']).next()?.trim().parse().ok()
    };
    let holders = logged("read while dumping", "holders").unwrap_or_else(|| panic!("{log}"));
    assert!(holders >= 6, "{log}");
    assert_eq!(logged("read again", "missing"), Some(0), "{log}");
    let owned = bpf
        .iter()
        .filter(|s| s["owners"].as_array().is_some_and(|o| !o.is_empty()));
    // The CLOSE_WAIT from before, 2 + 1 new ones, the FIN_WAIT_2 and its peer (CLOSE_WAIT).
    assert_eq!(owned.count(), 1 + 2 + 1 + 1 + 1, "{bpf:#?}");
    let late_bpf = mounts.scan(&late_ns, &[]);
    let late_plain = mounts.scan(&late_ns, &[("SOCKWARDEN_WATCHER", "sock-diag")]);
    assert_eq!(facts(&late_bpf), facts(&late_plain));

    // Exact ages for what entered its state under the index; the older one keeps its
    // tcp_info evidence.
    let exact = |s: &Value| {
        assert_eq!(s["age_source"], "kernel-transition", "{s:#}");
        assert_eq!(s["age_is_lower_bound"], false, "{s:#}");
        s["age_secs"].as_u64().expect("age")
    };
    for server in v4.leaked.iter().chain(&v6.leaked) {
        assert!(exact(find(&bpf, server, "close-wait")) >= 1);
    }
    exact(find(&bpf, &fin_wait_2, "fin-wait-2"));
    exact(find(&bpf, &peer, "close-wait"));
    exact(find(&late_bpf, &late.leaked[0], "close-wait"));
    assert_ne!(
        find(&bpf, &before.leaked[0], "close-wait")["age_source"],
        "kernel-transition",
        "a socket that entered its state before the index existed has no entry time"
    );
    for s in &bpf {
        for o in s["owners"].as_array().expect("owners") {
            assert_eq!(
                o["pid"],
                std::process::id(),
                "the test holds every socket: {s:#}"
            );
        }
    }

    // Sockets leave and enter states during the run: one CLOSE_WAIT closed (it goes
    // through LAST_ACK and away), the FIN_WAIT_2's peer closes (it leaves for TIME_WAIT).
    let mut v4 = v4;
    let gone = v4.leaked.pop().expect("a leaked socket");
    let (gone_local, gone_remote) = tuple(&gone);
    drop(gone);
    peer.shutdown(Shutdown::Both).expect("peer shutdown");
    drop(peer);
    std::thread::sleep(Duration::from_millis(300));
    let bpf = mounts.scan(&ns, &[]);
    let plain = mounts.scan(&ns, &[("SOCKWARDEN_WATCHER", "sock-diag")]);
    assert_eq!(
        facts(&bpf),
        facts(&plain),
        "both watchers see the same after the changes"
    );
    assert!(
        !bpf.iter()
            .any(|s| s["local"] == gone_local.as_str() && s["remote"] == gone_remote.as_str()),
        "a closed socket is gone from both"
    );

    // The daemon stops; the pinned index stays, and a one-shot scan a while later still
    // has each socket's entry time: its age has grown with the clock.
    let kept = [&v4.leaked[0], &v6.leaked[0]];
    let ages_then: Vec<u64> = kept
        .iter()
        .map(|s| exact(find(&bpf, s, "close-wait")))
        .collect();
    let mut child = daemon.0.take().expect("the daemon");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop the daemon");
    let status = child.wait().expect("wait for the daemon");
    assert!(
        status.success(),
        "the daemon stopped with {status}:\n{}",
        read_log()
    );
    std::thread::sleep(Duration::from_millis(2_100));
    let after = mounts.scan(&ns, &[]);
    for (stream, then) in kept.iter().zip(ages_then) {
        let now = exact(find(&after, stream, "close-wait"));
        assert!(now >= then + 2, "{then} s then, {now} s two seconds later");
    }
    drop(v6);
    drop(late);
    drop(before);
}

/// How the eBPF watcher served `ns` in a scan, from its debug log: the "served" line's
/// `looked_up` and `dumped` fields, or `None` when it swept the namespace (or dumped it
/// plainly).
fn served(log: &str, ns: &TestNetns) -> Option<(usize, String)> {
    // Named after its first process, as the listing names it.
    let name = format!("\"netns\":\"pid:{}(", ns.holder_pid());
    let line = log
        .lines()
        .find(|l| l.contains("served from the eBPF index") && l.contains(&name))?;
    let field = |key: &str| -> Option<String> {
        let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = &line[at..];
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted[..quoted.find('"')?].to_string(),
            None => rest[..rest.find([',', '}'])?].to_string(),
        })
    };
    let field = |key: &str| field(key).unwrap_or_else(|| panic!("no {key} in {line}"));
    Some((
        field("looked_up").parse().expect("looked_up"),
        field("dumped"),
    ))
}

/// Both watchers scan `ns`: the same sockets, states, holders; and the fixture's held
/// sockets are there, each in its state.
fn agree(
    mounts: &BpfMountNs,
    ns: &TestNetns,
    held: &EveryState,
    what: &str,
) -> (Vec<Value>, String) {
    let (bpf, log) = mounts.scan_logged(ns, &[]);
    let plain = mounts.scan(ns, &[("SOCKWARDEN_WATCHER", "sock-diag")]);
    assert_eq!(
        facts(&bpf),
        facts(&plain),
        "{what}: both watchers see the same\n{log}"
    );
    for h in &held.held {
        let found = bpf.iter().any(|s| {
            s["local"] == h.local.to_string().as_str()
                && s["remote"] == h.remote.to_string().as_str()
                && s["state"] == h.state
        });
        assert!(
            found,
            "{what}: no {} {} -> {} in {bpf:#?}",
            h.state, h.local, h.remote
        );
    }
    (bpf, log)
}

/// Scan `ns` until the eBPF watcher serves it from the index (the daemon, or the first
/// scan, sweeps a namespace the index does not hold yet).
fn wait_served(mounts: &BpfMountNs, ns: &TestNetns) {
    poll(
        40,
        Duration::from_millis(100),
        "the namespace to be served from the index",
        || mounts.scan_logged(ns, &[]).1,
        || served(&mounts.scan_logged(ns, &[]).1, ns),
    );
}

#[test]
fn both_watchers_agree_on_every_state_in_every_namespace_while_sockets_change() {
    if !root_or_skip("both_watchers_agree_on_every_state") {
        return;
    }
    let mounts = BpfMountNs::new();
    // Sockets older than the index: the first pass that sees them sweeps them in.
    let old_ns = TestNetns::new();
    let mut old = EveryState::new(&old_ns, true, false);
    let work = tempfile::tempdir().expect("tempdir");
    let (_daemon, _log) = mounts.daemon(work.path(), &[]);
    // Sockets that entered their states under the index, and a SYN_RECV request.
    let born_ns = TestNetns::new();
    let mut born = EveryState::new(&born_ns, true, true);
    wait_served(&mounts, &old_ns);
    wait_served(&mounts, &born_ns);

    // 7 sockets per family (SYN_SENT twice); v4 and v6.
    let (_, log) = agree(&mounts, &old_ns, &old, "older namespace");
    let (looked_up, dumped) = served(&log, &old_ns).expect("served");
    assert!(looked_up >= 14, "{log}");
    assert!(
        !dumped.contains("close-wait") && !dumped.contains("syn-recv"),
        "{log}"
    );
    // The request's SYN-ACK is retransmitted after a second: from then on SYN_RECV is
    // dumped there, and only there. Before it, the eBPF watcher does not look for the
    // request (it is not a second old) while sock_diag lists it: the watchers are
    // compared once it has been retransmitted, not across that moment.
    poll(
        30,
        Duration::from_millis(100),
        "SYN_RECV dumped where a SYN-ACK was retransmitted",
        || mounts.scan_logged(&born_ns, &[]).1,
        || {
            let (_, dumped) = served(&mounts.scan_logged(&born_ns, &[]).1, &born_ns)?;
            dumped.contains("syn-recv").then_some(())
        },
    );
    let (_, quiet) = served(&mounts.scan_logged(&old_ns, &[]).1, &old_ns).expect("served");
    assert!(!quiet.contains("syn-recv"), "no request there: {quiet}");
    let (bpf, log) = agree(&mounts, &born_ns, &born, "namespace born under the index");
    let (looked_up, dumped) = served(&log, &born_ns).expect("served");
    // The unbound SYN_SENT was stamped before it had a port: its state is dumped.
    assert!(looked_up >= 12 && dumped.contains("syn-sent"), "{log}");
    for s in bpf
        .iter()
        .filter(|s| s["owners"].as_array().is_some_and(|o| !o.is_empty()))
    {
        assert_eq!(
            s["age_source"], "kernel-transition",
            "exact under the index: {s:#}"
        );
    }

    // Sockets leave their states (CLOSE_WAIT, FIN_WAIT_1 and FIN_WAIT_2 shut down) and
    // enter others (new CLOSE_WAITs); a namespace is created mid-run.
    born.shut_down("close-wait");
    born.shut_down("fin-wait-2");
    old.shut_down("fin-wait-1");
    let fresh = leak_close_wait(&born_ns, "[::1]:0", 2);
    let late_ns = TestNetns::new();
    let late = EveryState::new(&late_ns, false, false);
    std::thread::sleep(Duration::from_millis(200));
    agree(&mounts, &old_ns, &old, "older namespace, after changes");
    let (bpf, log) = agree(&mounts, &born_ns, &born, "born namespace, after changes");
    assert!(served(&log, &born_ns).is_some(), "{log}");
    for server in &fresh.leaked {
        find(&bpf, server, "close-wait");
    }
    agree(
        &mounts,
        &late_ns,
        &late,
        "namespace created mid-run, when first seen",
    );
    wait_served(&mounts, &late_ns);
    agree(
        &mounts,
        &late_ns,
        &late,
        "namespace created mid-run, served",
    );
}
