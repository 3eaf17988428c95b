//! Process data is data, never code: names chosen by whoever runs a process (here the
//! test's own children) cannot drive the operator's terminal or become shell code run by
//! root.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use crate::support::{
    kill_child, leak_close_wait, root_or_skip, scan_json, sockwarden, spawn_named_inheriting,
    with_inherited, TestNetns,
};

/// Clears the screen, homes the cursor and starts a forged row (14 bytes: fits in comm).
const HOSTILE: &[u8] = b"\x1b[2J\x1b[H fake\nX";

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run sockwarden");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regression (trust issue): such a name cleared the operator's screen and forged table
/// rows in `scan`, `scan --summary`, `policy explain`, the `clean` plan and `audit show`.
#[test]
fn a_hostile_process_name_is_escaped_in_every_table_and_exact_in_json() {
    if !root_or_skip("hostile names") {
        return;
    }
    let ns = TestNetns::new();
    let mut server = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let port = server.addr().port().to_string();
    let child = spawn_named_inheriting(server.fds()[0], OsStr::from_bytes(HOSTILE));
    server.leaked.clear();
    let netns = ns.path();
    let netns = netns.to_str().expect("path");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let log = log.to_str().expect("path");
    let policy = dir.path().join("log.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[[rule]]\nname = \"see\"\nstates = [\"close-wait\"]\nolder_than = \"0s\"\naction = \"log\"\n",
    )
    .expect("policy");
    let policy = policy.to_str().expect("path");

    let json = scan_json(&["--netns", netns, "--port", &port, "--state", "close-wait"]);
    let owner = json[0]["owners"]
        .as_array()
        .and_then(|os| {
            os.iter()
                .find(|o| o["pid"].as_u64() == Some(u64::from(child.id())))
        })
        .unwrap_or_else(|| panic!("the child owns the socket: {json:?}"));
    assert_eq!(
        owner["comm"].as_str().map(str::as_bytes),
        Some(HOSTILE),
        "JSON keeps the exact name"
    );

    let select = ["--netns", netns, "--port", &port, "--state", "close-wait"];
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("scan", vec!["scan"]),
        ("scan --summary", vec!["scan", "--summary"]),
        (
            "policy explain",
            vec!["policy", "explain", "--policy", policy],
        ),
        (
            "clean plan",
            vec!["clean", "--action", "log", "--dry-run", "--audit-log", log],
        ),
    ];
    for (what, args) in runs {
        let mut cmd = sockwarden();
        cmd.args(&args).args(select);
        let (code, out, err) = output(&mut cmd);
        assert!(code == 0 || code == 1, "{what}: exit {code}: {err}");
        for (stream, text) in [("stdout", &out), ("stderr", &err)] {
            assert!(
                !text.contains('\u{1b}'),
                "{what} {stream}: raw ESC in {text:?}"
            );
            assert!(
                !text.lines().any(|l| l.starts_with('X')),
                "{what} {stream}: a forged row in {text:?}"
            );
        }
        assert!(
            out.contains(r"\x1b[2J\x1b[H fake\nX"),
            "{what}: the name is shown escaped: {out}"
        );
    }
    let mut cmd = sockwarden();
    cmd.args(["audit", "show", "--audit-log", log]);
    let (code, out, err) = output(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains('\u{1b}') && !out.lines().any(|l| l.starts_with('X')),
        "{out:?}"
    );
    kill_child(child);
}

/// Holds an inherited fd under a name set with prctl (it may hold `/`, `;`, `>`).
const NAMED_PY: &str = r#"
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
print("ready", flush=True)
time.sleep(3600)
"#;

/// Regression (trust issue): a process named `;id>/tmp/p` holding a CLOSE_WAIT socket, and
/// `--action exec --command /bin/sh --command=-c --command='logger stuck {comm}'`, ran `id`
/// as root. Now the shell form is refused with the safe form shown, and the safe form
/// passes the name as data.
#[test]
fn a_process_name_never_becomes_shell_code() {
    if !root_or_skip("exec injection") {
        return;
    }
    let ns = TestNetns::new();
    let mut server = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let port = server.addr().port().to_string();
    let fd = server.fds()[0];
    let name = ";touch pwned";
    let mut holder = with_inherited(fd, || {
        Command::new("python3")
            .args(["-c", NAMED_PY, name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3")
    });
    server.leaked.clear();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(holder.stdout.take().expect("stdout")).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let clean = |command: &[&str]| {
        let mut cmd = sockwarden();
        cmd.current_dir(dir.path())
            .args(["clean", "--netns"])
            .arg(ns.path())
            .args([
                "--port",
                &port,
                "--state",
                "close-wait",
                "--action",
                "exec",
                "--yes",
            ])
            .args(command.iter().map(|c| format!("--command={c}")))
            .arg("--audit-log")
            .arg(&log);
        output(&mut cmd)
    };

    let (code, _out, err) = clean(&["/bin/sh", "-c", "logger stuck {comm}"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("placeholder inside code"), "{err}");
    assert!(
        err.contains("SOCKWARDEN_COMM"),
        "the safe form is shown: {err}"
    );

    let out_file = dir.path().join("seen");
    let script = format!("printf %s \"$SOCKWARDEN_COMM\" > {}", out_file.display());
    let (code, out, err) = clean(&["/bin/sh", "-c", &script]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&out_file).expect("written"), name);
    assert!(!dir.path().join("pwned").exists(), "the name ran as code");
    let _ = holder.kill();
    let _ = holder.wait();
}
