//! Races between the plan and the act, set up deterministically and run many times: during
//! `clean`'s confirmation prompt (a terminal on a pty) the world changes, and the action
//! must go only where a fresh decision sends it. Each trial asserts that the wrong target
//! was untouched and that the audit log says why.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{
    audit_records, leak_close_wait, ports_in, root_or_skip, run_confirming, sockwarden,
    spawn_named_inheriting, with_inherited, TestNetns,
};

/// Trials per race (the trust issue asks for at least 20 in CI).
const TRIALS: usize = 20;

fn clean(netns: &Path, port: u16, log: &Path, action: &[&str]) -> Command {
    let mut cmd = sockwarden();
    cmd.args(["clean", "--netns"])
        .arg(netns)
        .args(["--state", "close-wait", "--port", &port.to_string()])
        .args(action)
        .arg("--audit-log")
        .arg(log);
    cmd
}

/// The outcome records of a trail.
fn outcomes(log: &Path) -> Vec<Value> {
    audit_records(log)
        .into_iter()
        .filter(|r| r["kind"] == "outcome")
        .collect()
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().expect("try_wait").is_none()
}

/// Reproduced before the fix: during the prompt the owner forks a child named `sshd` and
/// closes its own copy, so only "sshd" holds the socket; the destroy went ahead although a
/// fresh plan says `protected … (protect_ssh)`.
#[test]
fn a_socket_handed_to_a_process_named_sshd_during_the_prompt_is_not_destroyed() {
    if !root_or_skip("race: renamed fork") {
        return;
    }
    let ns = TestNetns::new();
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.jsonl");
        let mut server = leak_close_wait(&ns, "127.0.0.1:0", 1);
        let port = server.addr().port();
        let fd = server.fds()[0];
        let mut sshd: Option<Child> = None;
        let (code, out, err) = run_confirming(
            clean(&ns.path(), port, &log, &["--action", "destroy"]),
            || {
                sshd = Some(spawn_named_inheriting(fd, OsStr::new("sshd")));
                server.leaked.clear();
            },
        );
        let mut sshd = sshd.expect("the fork ran");
        assert_eq!(code, 1, "trial {trial}: nothing was done: {out}{err}");
        assert_eq!(
            ports_in(&ns, port),
            1,
            "trial {trial}: the socket is still there"
        );
        let outcome = &outcomes(&log)[0];
        assert_eq!(
            outcome["outcome"]["result"], "skipped",
            "trial {trial}: {outcome}"
        );
        let message = outcome["outcome"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("protect_ssh"), "trial {trial}: {message}");
        assert!(alive(&mut sshd));
        let _ = sshd.kill();
        let _ = sshd.wait();
    }
}

/// A holder that closes its socket on a line from stdin and lives on.
const CLOSER_PY: &str = r#"
import os, sys
fd = int(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
os.close(fd)
print("closed", flush=True)
sys.stdin.readline()
"#;

/// Reproduced before the fix: the owner closes the socket during the prompt and keeps
/// running; it was signalled anyway.
#[test]
fn an_owner_that_closes_the_socket_during_the_prompt_is_not_signalled() {
    if !root_or_skip("race: closed socket") {
        return;
    }
    let ns = TestNetns::new();
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.jsonl");
        let mut server = leak_close_wait(&ns, "127.0.0.1:0", 1);
        let port = server.addr().port();
        let fd = server.fds()[0];
        let mut owner = with_inherited(fd, || {
            Command::new("python3")
                .args(["-c", CLOSER_PY, &fd.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 (installed by .ci/run)")
        });
        server.leaked.clear(); // the python process is the only owner
        let mut lines = BufReader::new(owner.stdout.take().expect("stdout")).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
        let mut stdin = owner.stdin.take().expect("stdin");
        let (code, out, err) = run_confirming(
            clean(
                &ns.path(),
                port,
                &log,
                &["--action", "signal", "--signal", "SIGTERM"],
            ),
            || {
                stdin.write_all(b"close\n").expect("tell it to close");
                assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("closed"));
            },
        );
        assert!(code == 0 || code == 1, "trial {trial}: {out}{err}");
        assert!(
            alive(&mut owner),
            "trial {trial}: the owner was signalled: {out}{err}"
        );
        let outcome = &outcomes(&log)[0];
        let result = outcome["outcome"]["result"].as_str().unwrap_or_default();
        assert!(
            ["already-gone", "skipped", "no-longer-held"].contains(&result),
            "trial {trial}: {outcome}"
        );
        assert!(
            outcome["outcome"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("act time") || m.contains("no longer")),
            "trial {trial}: the audit says why: {outcome}"
        );
        drop(stdin);
        let _ = owner.kill();
        let _ = owner.wait();
    }
}

/// pid 1 of a fresh pid namespace: makes CLOSE_WAIT sockets and the processes that hold
/// them on command, and recycles pids by writing `ns_last_pid`.
const PIDNS_PY: &str = r#"
import os, sys, socket, time, signal
def out(*words): print(*words, flush=True)
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(64)
port = lst.getsockname()[1]
def close_wait():
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = lst.accept()
    c.shutdown(socket.SHUT_WR)
    for _ in range(1000):  # until our FIN is acknowledged (FIN_WAIT_2)
        if c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 5:
            break
        time.sleep(0.001)
    c.close()
    return s
def holder(sock):
    pid = os.fork()
    if pid == 0:
        lst.close()
        while True:
            time.sleep(3600)
    sock.close()
    return pid
def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]
out("port", port)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "hold":
        a = holder(close_wait())
        out("held", a, start_time(a))
    elif cmd[0] == "recycle":
        a = int(cmd[1])
        os.kill(a, signal.SIGKILL)
        os.waitpid(a, 0)
        s = close_wait()
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(a - 1))
        d = holder(s)
        out("recycled", d, start_time(d))
    elif cmd[0] == "state":
        try:
            with open(f"/proc/{cmd[1]}/stat") as f:
                out("state", f.read().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            out("state", "gone")
    elif cmd[0] == "kill":
        os.kill(int(cmd[1]), signal.SIGKILL)
        os.waitpid(int(cmd[1]), 0)
        out("killed")
"#;

/// Reproduced before the fix: with pid reuse forced (a fresh pid namespace, writing
/// `ns_last_pid`), a new process that got the planned process's pid was signalled and
/// killed whenever it started within the same clock tick (start times count 10 ms ticks).
/// Here sockwarden runs inside the pid namespace; during the prompt the planned holder is
/// killed and a new holder of a new CLOSE_WAIT socket gets its pid. The newcomer is never
/// signalled: the act-time plan aims at it only under its own identity, and a signal goes
/// through the pidfd taken when the planned process was scanned.
#[test]
fn a_recycled_pid_is_never_signalled() {
    if !root_or_skip("race: recycled pid") {
        return;
    }
    let ns = TestNetns::new();
    let orchestrator = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args([
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "python3",
            "-c",
            PIDNS_PY,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nsenter + unshare (util-linux) + python3");
    let mut orchestrator = KillOnDrop(orchestrator, None);
    let mut to = orchestrator.0.stdin.take().expect("stdin");
    let mut from = BufReader::new(orchestrator.0.stdout.take().expect("stdout")).lines();
    let first = from.next().and_then(Result::ok).expect("port line");
    let mut ask = |line: &str| -> Vec<String> {
        writeln!(to, "{line}").expect("to the orchestrator");
        from.next()
            .and_then(Result::ok)
            .expect("an answer")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let port: u16 = first
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("port");
    // The orchestrator's host pid: the child of `unshare` (nsenter exec'd it in place).
    let unshare = orchestrator.0.id();
    let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .expect("children of unshare");
    let pid1: u32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid 1");
    orchestrator.1 = Some(pid1);
    let mut same_tick = 0;
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.jsonl");
        let held = ask("hold");
        let (victim, victim_start) = (held[1].clone(), held[2].clone());
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid1.to_string(), "--pid", "--mount", "--net", "--"])
            .arg(env!("CARGO_BIN_EXE_sockwarden"))
            .args([
                "clean",
                "--netns",
                "host",
                "--state",
                "close-wait",
                "--port",
            ])
            .arg(port.to_string())
            .args(["--action", "signal", "--signal", "SIGKILL", "--audit-log"])
            .arg(&log);
        let mut newcomer = String::new();
        let (code, out, err) = run_confirming(cmd, || {
            let recycled = ask(&format!("recycle {victim}"));
            newcomer = recycled[1].clone();
            if recycled[2] == victim_start {
                same_tick += 1;
            }
        });
        assert_eq!(
            newcomer, victim,
            "trial {trial}: ns_last_pid recycled the pid"
        );
        assert!(
            out.contains(&format!("({victim})")),
            "trial {trial}: the plan aimed at {victim}: {out}{err}"
        );
        let state = ask(&format!("state {newcomer}"));
        assert!(
            state[1] != "Z" && state[1] != "gone",
            "trial {trial}: the process that got pid {newcomer} was killed: {out}{err}"
        );
        let outcome = &outcomes(&log)[0];
        let result = outcome["outcome"]["result"].as_str().unwrap_or_default();
        assert!(
            ["skipped", "exited"].contains(&result),
            "trial {trial} (exit {code}): {outcome}"
        );
        assert!(
            outcome["outcome"]["message"].as_str().is_some(),
            "trial {trial}: {outcome}"
        );
        ask(&format!("kill {newcomer}"));
    }
    eprintln!("{TRIALS} trials of pid reuse; {same_tick} within the same clock tick");
    drop(to);
}

/// The orchestrator, and pid 1 of its namespace (killing it ends every process there),
/// killed when the test ends, passed or failed.
struct KillOnDrop(Child, Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid1) = self.1 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid1 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
