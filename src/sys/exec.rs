//! Running an `exec` action's command: argv without a shell, a cleared environment, its
//! own process group (killed whole at the time limit), output drained while it runs.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::CommandOutcome;

/// The only inherited-looking variable a command gets, besides the `SOCKWARDEN_*` values.
pub const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of the command's stderr is kept for the audit record.
const STDERR_KEPT: usize = 4096;

/// Run `argv` (no shell) with exactly `env` plus `PATH`, stdin from /dev/null. stdout is
/// drained and discarded, stderr drained and its first 4 KiB kept: a chatty command never
/// blocks on a full pipe. At `timeout` the command's whole process group is killed.
pub fn run_command(argv: &[String], env: &[(String, String)], timeout: Duration) -> CommandOutcome {
    let Some((program, args)) = argv.split_first() else {
        return CommandOutcome::NotStarted {
            error: "empty command".into(),
        };
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that the time limit reaches whatever it started.
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return CommandOutcome::NotStarted {
                error: format!("{program}: {e}"),
            }
        }
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        0,
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        STDERR_KEPT,
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => break None,
        }
    };
    let Some(status) = status else {
        kill_group(&mut child);
        return CommandOutcome::TimedOut;
    };
    // The command has exited; what it left behind may still hold its output open. Wait
    // for the pipes to close until the deadline, then end the group.
    let left = deadline.saturating_duration_since(Instant::now());
    let out_done = stdout
        .as_ref()
        .map_or(true, |rx| rx.recv_timeout(left).is_ok());
    let text = stderr.as_ref().and_then(|rx| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    });
    let mut stderr_text = text.clone().unwrap_or_default();
    if !out_done || (stderr.is_some() && text.is_none()) {
        kill_group(&mut child);
        stderr_text.push_str(
            "\n(the command left processes behind holding its output; its process group was killed)",
        );
    }
    CommandOutcome::Exited {
        code: status.code(),
        stderr: stderr_text,
    }
}

/// Read `pipe` to its end on a thread; the receiver gets the first `keep` bytes as text.
fn drain(pipe: Option<Box<dyn Read + Send>>, keep: usize) -> Option<mpsc::Receiver<String>> {
    let mut pipe = pipe?;
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("exec-output".into())
        .spawn(move || {
            let mut kept = Vec::with_capacity(keep.min(4096));
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = keep.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
        });
    spawned.ok().map(|_| rx)
}

/// SIGKILL the child's whole process group (it leads it), then reap the child.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn a_command_writing_megabytes_does_not_hang() {
        // Regression: stderr was read only after the child exited, so more than a pipe's
        // worth (64 KiB) of output blocked the child until the time limit.
        let started = Instant::now();
        let outcome = run_command(
            &sh("head -c 2000000 /dev/zero >&2; head -c 2000000 /dev/zero; exit 3"),
            &[],
            Duration::from_secs(20),
        );
        match outcome {
            CommandOutcome::Exited { code, stderr } => {
                assert_eq!(code, Some(3));
                assert_eq!(stderr.len(), STDERR_KEPT);
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[test]
    fn the_environment_is_only_path_and_the_given_values() {
        std::env::set_var("SOCKWARDEN_TEST_SECRET", "leaked");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("env");
        let outcome = run_command(
            &sh(&format!("env > {}", out.display())),
            &[("SOCKWARDEN_COMM".into(), "a\nb".into())],
            Duration::from_secs(10),
        );
        assert!(
            matches!(outcome, CommandOutcome::Exited { code: Some(0), .. }),
            "{outcome:?}"
        );
        let env = std::fs::read_to_string(&out).expect("env output");
        assert!(!env.contains("leaked"), "{env}");
        assert!(env.contains("SOCKWARDEN_COMM=a\nb"), "{env}");
        assert!(env.contains(&format!("PATH={COMMAND_PATH}")), "{env}");
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        for name in names {
            assert!(
                ["PATH", "SOCKWARDEN_COMM", "PWD", "SHLVL", "_"].contains(&name),
                "unexpected variable {name} in {env}"
            );
        }
    }

    #[test]
    fn the_time_limit_kills_grandchildren_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let outcome = run_command(
            &sh(&format!(
                "sleep 300 & echo $! > {}; wait",
                pidfile.display()
            )),
            &[],
            Duration::from_millis(500),
        );
        assert_eq!(outcome, CommandOutcome::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        // The grandchild was killed with its group: gone, or a zombie of init.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
                .flatten();
            if matches!(state, None | Some('Z')) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} still {state:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_missing_program_is_not_started() {
        let outcome = run_command(&["/nonexistent/x".into()], &[], Duration::from_secs(1));
        assert!(
            matches!(outcome, CommandOutcome::NotStarted { .. }),
            "{outcome:?}"
        );
    }
}
