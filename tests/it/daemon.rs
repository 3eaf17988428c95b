//! `sockwarden run` against the real kernel, as a child process watching a namespace the
//! test created: it destroys leaked CLOSE_WAIT sockets on time, records dry runs in observe
//! mode, keeps observed ages across a restart, survives a broken reload, stops cleanly on
//! SIGTERM, and talks to a NOTIFY_SOCKET the test listens on.

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{half_closed, leak_close_wait, root_or_skip, run, sockwarden, TestNetns};

const DESTROY_CW: &str = r#"
mode = "enforce"
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "3s"
action = "destroy"
"#;

/// A daemon started by the test, killed if the test fails before stopping it.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

/// The files one test's daemons share.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new(policy: &str) -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), policy).expect("write policy");
        // An empty (valid) config file, so the host's /etc/sockwarden never leaks in.
        std::fs::write(dir.path().join("sockwarden.toml"), "").expect("write config");
        Workdir { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn audit(&self) -> Vec<Value> {
        records(&self.path("audit.jsonl"))
    }

    /// Start `sockwarden run` on `ns` with a 1 s interval; `extra` adds flags, `env` sets
    /// variables (NOTIFY_SOCKET, WATCHDOG_USEC).
    fn start(&self, ns: &TestNetns, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let n = std::fs::read_dir(self.dir.path()).map_or(0, |d| d.count());
        let log = self.path(&format!("daemon-{n}.log"));
        let stderr = File::create(&log).expect("create daemon log");
        let mut cmd = sockwarden();
        cmd.args(["run", "--config"])
            .arg(self.path("sockwarden.toml"))
            .arg("--policy")
            .arg(self.path("policy.toml"))
            .args(["--interval", "1s", "--netns"])
            .arg(ns.path())
            .arg("--audit-log")
            .arg(self.path("audit.jsonl"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(extra)
            .args(["--log-format", "text"])
            .env("SOCKWARDEN_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().expect("spawn sockwarden run");
        Agent {
            child: Some(child),
            log,
        }
    }
}

impl Agent {
    fn pid(&self) -> Pid {
        let id = self.child.as_ref().map_or(0, Child::id);
        Pid::from_raw(i32::try_from(id).expect("pid"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal the daemon");
    }

    /// SIGTERM, then the exit code (bounded wait).
    fn stop(mut self) -> i32 {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not stop within 15 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll `check` until it gives a value; fail with `what` and the daemon's log.
    fn wait_for<T>(&self, secs: u64, what: &str, check: impl FnMut() -> Option<T>) -> T {
        crate::support::poll(secs, Duration::from_millis(50), what, || self.log(), check)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Complete lines of the audit log (a line being written is skipped).
/// The trail's entries as `audit show --json` gives them.
fn records(path: &Path) -> Vec<Value> {
    crate::support::audit_records(path)
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

fn note<'a>(records: &'a [Value], event: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["kind"] == "note" && r["note"]["event"] == event)
}

/// `time` of a record as a SystemTime.
fn time_of(record: &Value) -> SystemTime {
    let text = record["time"].as_str().expect("time");
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("bad time {text}: {e}"))
}

#[test]
fn run_destroys_leaked_close_wait_sockets_within_interval_plus_threshold() {
    if !root_or_skip("daemon destroy") {
        return;
    }
    let work = Workdir::new(DESTROY_CW);
    let ns = TestNetns::new();
    let mut leak = leak_close_wait(&ns, "127.0.0.1:0", 3);
    let leaked_at = Instant::now();
    let prom = work.path("sockwarden.prom");
    let agent = work.start(
        &ns,
        &["--metrics-textfile", prom.to_str().expect("utf-8")],
        &[],
    );

    let outcomes = agent.wait_for(15, "3 destroy outcomes", || {
        let recs = work.audit();
        let done: Vec<Value> = of_kind(&recs, "outcome").into_iter().cloned().collect();
        (done.len() >= 3).then_some(done)
    });
    let took = leaked_at.elapsed();
    // Threshold 3 s + interval 1 s, plus start-up (the SOCK_DESTROY probe) and slack for
    // a loaded machine.
    assert!(
        took < Duration::from_secs(3 + 1 + 4),
        "took {took:?}; log:\n{}",
        agent.log()
    );
    for stream in &mut leak.leaked {
        let err = stream
            .write_all(b"x")
            .expect_err("the owner sees the abort");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
    }
    let recs = work.audit();
    let start = note(&recs, "start").expect("a start note");
    let detail = start["note"]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("mode enforce") && detail.contains("interval 1s"),
        "{detail}"
    );
    assert!(start["policy_digest"]
        .as_str()
        .is_some_and(|d| d.len() == 64));
    let intents = of_kind(&recs, "intent");
    assert_eq!(intents.len(), 3, "{recs:#?}");
    for outcome in &outcomes {
        assert_eq!(outcome["outcome"]["result"], "destroyed", "{outcome}");
        assert_eq!(outcome["actor"]["kind"], "daemon");
        let intent = intents
            .iter()
            .find(|i| i["seq"] == outcome["intent_seq"])
            .expect("its intent");
        assert_eq!(intent["rule"], "cw");
        assert_eq!(intent["target"]["state"], "close-wait");
        assert!(intent["target"]["age_secs"].as_u64() >= Some(3), "{intent}");
    }

    // The textfile is written after the pass that acted.
    agent.wait_for(5, "the metrics textfile counting 3 destroys", || {
        let text = std::fs::read_to_string(&prom).ok()?;
        text.contains(
            "sockwarden_actions_total{action=\"destroy\",rule=\"cw\",outcome=\"destroyed\"} 3",
        )
        .then_some(())
    });

    assert_eq!(agent.stop(), 0);
    let recs = work.audit();
    assert!(
        note(&recs, "shutdown").is_some(),
        "a shutdown note: {recs:#?}"
    );
    let (code, out, err) = run(&[
        "audit",
        "verify",
        "--audit-log",
        work.path("audit.jsonl").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "the daemon's trail verifies: {out}{err}");
}

/// The sample of `family` whose labels include every one of `labels`, as its value.
fn sample_with(text: &str, family: &str, labels: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn every_teardown_state_is_exported_under_a_close_wait_policy_with_stable_labels() {
    if !root_or_skip("daemon watched states") {
        return;
    }
    // The only rule is about CLOSE_WAIT; a FIN_WAIT_2 must show all the same.
    let work = Workdir::new(
        "[[rule]]\nname = \"cw\"\nstates = [\"close-wait\"]\nolder_than = \"1s\"\naction = \"log\"\n",
    );
    let ns = TestNetns::new();
    let (_fin_wait_2, _peer, _listener) = half_closed(&ns, "127.0.0.1:0");
    let prom = work.path("sockwarden.prom");
    let agent = work.start(
        &ns,
        &["--metrics-textfile", prom.to_str().expect("utf-8")],
        &[],
    );
    let text = agent.wait_for(15, "a stuck FIN_WAIT_2 in the metrics", || {
        let text = std::fs::read_to_string(&prom).ok()?;
        sample_with(&text, "sockwarden_stuck_sockets", &["state=\"fin-wait-2\""])
            .filter(|&n| n == 1)
            .map(|_| text)
    });
    assert_eq!(
        sample_with(
            &text,
            "sockwarden_watched_sockets",
            &["state=\"fin-wait-2\""]
        ),
        Some(1),
        "{text}"
    );
    // The namespace is named by what outlives its holder (its pod, container, unit, or
    // `other`), never by a pid.
    let holder = ns.holder_pid().to_string();
    for line in text.lines().filter(|l| l.contains("netns=")) {
        let label = line
            .split("netns=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a netns label");
        assert!(
            !label.contains(&holder) && !label.contains("pid:") && !label.contains("/proc"),
            "{line}"
        );
        assert!(
            label == "other"
                || ["pod:", "container:", "unit:"]
                    .iter()
                    .any(|p| label.starts_with(p)),
            "{line}"
        );
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn run_in_observe_mode_destroys_nothing_and_records_each_dry_run_once() {
    if !root_or_skip("daemon observe") {
        return;
    }
    let work = Workdir::new(DESTROY_CW);
    let ns = TestNetns::new();
    let leak = leak_close_wait(&ns, "127.0.0.1:0", 2);
    let agent = work.start(&ns, &["--mode", "observe"], &[]);
    agent.wait_for(15, "2 dry-run records", || {
        (of_kind(&work.audit(), "dry-run").len() >= 2).then_some(())
    });
    // Two more passes: still nothing done, and no record repeated.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(agent.stop(), 0);
    let recs = work.audit();
    let dry = of_kind(&recs, "dry-run");
    assert_eq!(dry.len(), 2, "one dry-run per socket: {recs:#?}");
    assert!(dry
        .iter()
        .all(|r| r["mode"] == "observe" && r["action"]["kind"] == "destroy"));
    assert!(of_kind(&recs, "intent").is_empty());
    for stream in &leak.leaked {
        assert!(
            stream.take_error().expect("SO_ERROR").is_none(),
            "untouched"
        );
    }
}

/// A SYN_RECV request socket that lasts: the listener defers accept until data arrives,
/// and the client never sends any. No kernel figure ages it (no tcp_info, no timewait
/// timer), so only the daemon's observation can: what this test needs.
fn lasting_syn_recv(ns: &TestNetns) -> (TcpListener, TcpStream) {
    ns.enter(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let secs: libc::c_int = 60;
        // SAFETY: setsockopt reads `secs` (a c_int that lives for the call) on our own fd.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "TCP_DEFER_ACCEPT: {}",
            std::io::Error::last_os_error()
        );
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        (listener, client)
    })
}

/// The first-seen time (ms since the epoch) of the one syn-recv socket in the state file.
fn syn_recv_first_seen(work: &Workdir) -> Option<u64> {
    let text = std::fs::read_to_string(work.path("state/observations.json")).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    state["sockets"]
        .as_array()?
        .iter()
        .find(|s| s["state"] == "syn-recv")?["first_seen_ms"]
        .as_u64()
}

#[test]
fn observed_ages_survive_a_restart_and_the_action_fires_on_time() {
    if !root_or_skip("daemon age persistence") {
        return;
    }
    const THRESHOLD: u64 = 5;
    let work = Workdir::new(&format!(
        "mode = \"enforce\"\n[[rule]]\nname = \"sr\"\nstates = [\"syn-recv\"]\nolder_than = \"{THRESHOLD}s\"\naction = \"log\"\n"
    ));
    let ns = TestNetns::new();
    let _fixture = lasting_syn_recv(&ns);

    let first = work.start(&ns, &[], &[]);
    let first_seen = first.wait_for(15, "the socket in observations.json", || {
        syn_recv_first_seen(&work)
    });
    let seen_at = SystemTime::UNIX_EPOCH + Duration::from_millis(first_seen);
    // Let it watch for about 3 s of the 5 s threshold, then restart the agent.
    let until = seen_at + Duration::from_secs(3);
    if let Ok(wait) = until.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    assert_eq!(first.stop(), 0);
    assert!(
        of_kind(&work.audit(), "intent").is_empty(),
        "fired before the threshold"
    );
    assert_eq!(syn_recv_first_seen(&work), Some(first_seen));

    let second = work.start(&ns, &[], &[]);
    let intent = second.wait_for(15, "the log action after the restart", || {
        of_kind(&work.audit(), "intent")
            .first()
            .map(|r| (*r).clone())
    });
    assert_eq!(second.stop(), 0);
    let recs = work.audit();
    let starts: Vec<&Value> = recs
        .iter()
        .filter(|r| r["kind"] == "note" && r["note"]["event"] == "start")
        .collect();
    assert_eq!(starts.len(), 2, "{recs:#?}");
    let started = time_of(starts[1]);
    let fired = time_of(&intent);
    // Without persistence the second agent would first see the socket after its start and
    // could not fire before running THRESHOLD seconds itself.
    let ran = fired.duration_since(started).unwrap_or_default();
    assert!(
        ran < Duration::from_secs(THRESHOLD),
        "fired {ran:?} after the restart: the age was reset"
    );
    let since_first_seen = fired.duration_since(seen_at).unwrap_or_default();
    assert!(
        since_first_seen >= Duration::from_secs(THRESHOLD),
        "fired {since_first_seen:?} after first sight"
    );
    assert_eq!(intent["target"]["age_source"], "observed", "{intent}");
    assert!(
        intent["target"]["age_secs"].as_u64() >= Some(THRESHOLD),
        "{intent}"
    );
    assert_eq!(intent["target"]["state"], "syn-recv");
}

/// A NOTIFY_SOCKET as systemd holds it: a datagram socket read all the time.
struct NotifyListener {
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl NotifyListener {
    fn bind(path: &Path) -> NotifyListener {
        let socket = UnixDatagram::bind(path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (Arc::clone(&messages), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().expect("lock").push(text);
                }
            }
        });
        NotifyListener { messages, stop }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("lock").clone()
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn sighup_with_a_broken_policy_keeps_the_old_one_and_systemd_hears_everything() {
    if !root_or_skip("daemon reload and notify") {
        return;
    }
    let work = Workdir::new(DESTROY_CW);
    let ns = TestNetns::new();
    let notify_path = work.path("notify");
    let heard = NotifyListener::bind(&notify_path);
    let notify = notify_path.to_str().expect("utf-8");
    let agent = work.start(
        &ns,
        &[],
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
    );
    agent.wait_for(15, "READY=1 and watchdog pings", || {
        let messages = heard.messages();
        let ready = messages
            .iter()
            .any(|m| m.starts_with("READY=1\nSTATUS=pass 1:"));
        let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
        (ready && pings >= 3).then_some(())
    });

    std::fs::write(
        work.path("policy.toml"),
        "mode = \"enforce\"\n[[rule]]\nnme = \"x\"\n",
    )
    .expect("break the policy");
    agent.signal(Signal::SIGHUP);
    let failed = agent.wait_for(10, "a reload-failed note", || {
        note(&work.audit(), "reload-failed").cloned()
    });
    let detail = failed["note"]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("policy.toml:3:1") && detail.contains("nme"),
        "{detail}"
    );

    // The old rule still acts.
    let mut leak = leak_close_wait(&ns, "127.0.0.1:0", 1);
    agent.wait_for(15, "the old rule destroying a new leak", || {
        let recs = work.audit();
        of_kind(&recs, "outcome")
            .iter()
            .any(|o| o["outcome"]["result"] == "destroyed")
            .then_some(())
    });
    let err = leak.leaked[0].write_all(b"x").expect_err("aborted");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED));

    assert_eq!(agent.stop(), 0, "SIGTERM exits 0");
    std::thread::sleep(Duration::from_millis(200));
    let messages = heard.messages();
    assert!(
        messages.iter().any(|m| m.starts_with("STATUS=pass ")),
        "STATUS= after passes: {messages:?}"
    );
    assert!(
        messages.last().is_some_and(|m| m.starts_with("STOPPING=1")),
        "STOPPING=1 last: {messages:?}"
    );
    let recs = work.audit();
    assert!(note(&recs, "shutdown").is_some(), "{recs:#?}");
    assert!(
        note(&recs, "reload").is_none(),
        "no successful reload happened"
    );
}

#[test]
fn bad_configuration_exits_78_with_its_location() {
    let work = Workdir::new(DESTROY_CW);
    std::fs::write(
        work.path("bad.toml"),
        "interval = \"1s\"\nintreval = \"2s\"\n",
    )
    .expect("write");
    let bad = work.path("bad.toml");
    let (code, _, err) = run(&["run", "--config", bad.to_str().expect("utf-8")]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("bad.toml:2:1: error: unknown key `intreval`"),
        "{err}"
    );

    let missing = work.path("missing.toml");
    let (code, _, err) = run(&["run", "--config", missing.to_str().expect("utf-8")]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("cannot read the configuration"), "{err}");

    std::fs::write(work.path("policy.toml"), "mode = \"enforcing\"\n").expect("write");
    let empty = work.path("sockwarden.toml");
    let policy = work.path("policy.toml");
    let (code, _, err) = run(&[
        "run",
        "--config",
        empty.to_str().expect("utf-8"),
        "--policy",
        policy.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("policy.toml:1:8"), "{err}");
}

/// GET /metrics from inside `ns` (the daemon listens on that namespace's loopback).
fn scrape(ns: &TestNetns, port: u16) -> Option<String> {
    ns.enter(move || {
        use std::io::Read;
        let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        Some(reply)
    })
}

#[test]
fn run_serves_its_metrics_on_the_listen_address() {
    if !root_or_skip("daemon metrics") {
        return;
    }
    let work = Workdir::new(DESTROY_CW);
    let ns = TestNetns::new();
    let _leak = leak_close_wait(&ns, "127.0.0.1:0", 2);
    // The daemon runs inside the test namespace, so its listener is on that loopback only.
    let port: u16 = 19_477;
    let stderr = File::create(work.path("daemon.log")).expect("log");
    let child = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(env!("CARGO_BIN_EXE_sockwarden"))
        .env("SOCKWARDEN_BPF_PIN_DIR", "") // never on the host's bpffs
        .arg("run")
        .arg("--config")
        .arg(work.path("sockwarden.toml"))
        .arg("--policy")
        .arg(work.path("policy.toml"))
        .args(["--interval", "1s", "--netns", "host"])
        .arg("--audit-log")
        .arg(work.path("audit.jsonl"))
        .arg("--state-dir")
        .arg(work.path("state"))
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn sockwarden run in the test namespace");
    let agent = Agent {
        child: Some(child),
        log: work.path("daemon.log"),
    };
    let body = agent.wait_for(15, "metrics counting 2 destroys", || {
        let reply = scrape(&ns, port)?;
        reply
            .contains(
                "sockwarden_actions_total{action=\"destroy\",rule=\"cw\",outcome=\"destroyed\"} 2",
            )
            .then_some(reply)
    });
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    for family in [
        "# TYPE sockwarden_stuck_sockets gauge",
        "# TYPE sockwarden_stuck_oldest_age_seconds gauge",
        "# TYPE sockwarden_destroyed_socket_age_seconds histogram",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE sockwarden_scan_duration_seconds histogram",
        "# TYPE sockwarden_passes_total counter",
        "# TYPE sockwarden_capability gauge",
    ] {
        assert!(body.contains(family), "missing `{family}`:\n{body}");
    }
    assert!(
        body.contains("sockwarden_capability{capability=\"sock_destroy\"} 1"),
        "{body}"
    );
    assert_eq!(agent.stop(), 0);
}
