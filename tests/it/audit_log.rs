//! The audit trail end to end: fail-closed on a full disk (a tiny tmpfs in a private mount
//! namespace), separate writer processes, and `sockwarden audit verify|show|summary`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sockwarden::audit::{
    read_trail, verify, Action, ActionKind, Actor, ActorKind, AuditLog, Mode, NewRecord, NoteEvent,
    Outcome, VerifyFailure,
};

const BIN: &str = env!("CARGO_BIN_EXE_sockwarden");

fn actor() -> Actor {
    Actor::current(ActorKind::Cli)
}

fn intent(why: &str) -> NewRecord {
    NewRecord::intent(
        actor(),
        Mode::Enforce,
        Action::new(ActionKind::Destroy),
        why,
    )
    .rule("api-leak", "sha256:0")
}

fn sample_trail(path: &Path) {
    let mut log = AuditLog::open(path).expect("open");
    log.append(NewRecord::note(
        actor(),
        Mode::Enforce,
        NoteEvent::Start,
        "test",
    ))
    .expect("append");
    for (i, result) in ["destroyed", "already-gone", "failed"]
        .into_iter()
        .enumerate()
    {
        let mut new = intent(&format!("leak {i}"));
        if result == "failed" {
            new.action = Some(Action {
                unit: Some("api.service".into()),
                ..Action::new(ActionKind::Restart)
            });
            new.unit = Some("api.service".into());
        }
        let i = log.append(new).expect("append");
        let outcome = Outcome {
            result: result.into(),
            errno: None,
            message: None,
        };
        log.append(NewRecord::outcome_of(&i, actor(), outcome))
            .expect("append");
    }
}

fn sockwarden(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SOCKWARDEN_AUDIT_LOG")
        .output()
        .expect("run sockwarden");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mount_ns() -> String {
    fs::read_link("/proc/self/ns/mnt")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Run one `#[ignore]`d test of this binary in a child process, with `env` set.
fn run_child(prefix: &[&str], test: &str, env: &[(&str, String)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(
        prefix
            .first()
            .copied()
            .unwrap_or_else(|| exe.to_str().expect("utf-8 path")),
    );
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(&exe);
    }
    cmd.args([
        test,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn child test")
}

// ---- fail-closed on ENOSPC ----

#[test]
fn enospc_fails_closed() {
    if !crate::support::root_or_skip("enospc_fails_closed (a tmpfs in a private mount namespace)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The tmpfs is mounted only inside the child's own mount namespace, never on the host's tree.
    let out = run_child(
        &["unshare", "--mount", "--propagation", "private", "--"],
        "audit_log::enospc_child",
        &[
            ("SOCKWARDEN_ENOSPC_DIR", dir.path().display().to_string()),
            ("SOCKWARDEN_PARENT_MNT_NS", mount_ns()),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("enospc_child ... ok"),
        "the child test did not run:\n{text}"
    );
    assert_eq!(
        fs::read_dir(dir.path()).expect("list").count(),
        0,
        "nothing leaked onto the host's dir"
    );
}

#[test]
#[ignore = "run by enospc_fails_closed inside a private mount namespace"]
fn enospc_child() {
    let (Ok(dir), Ok(parent_ns)) = (
        std::env::var("SOCKWARDEN_ENOSPC_DIR"),
        std::env::var("SOCKWARDEN_PARENT_MNT_NS"),
    ) else {
        eprintln!("not started by enospc_fails_closed: nothing to do");
        return;
    };
    assert_ne!(
        mount_ns(),
        parent_ns,
        "refusing to mount: not in a private mount namespace"
    );
    let dir = PathBuf::from(dir);
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k,mode=0755"),
    )
    .expect("mount tmpfs");
    let path = dir.join("audit").join("audit.jsonl");
    std::fs::create_dir(dir.join("audit")).expect("mkdir");
    let mut log = AuditLog::open(&path).expect("open");
    log.append(NewRecord::note(
        actor(),
        Mode::Enforce,
        NoteEvent::Start,
        "before the disk filled",
    ))
    .expect("append");

    // Fill the filesystem.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).expect("filler");
        let chunk = vec![b'x'; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    break;
                }
            }
        }
    }
    let mut written = 1u64;
    let err = loop {
        match log.append(intent("destroy while the disk is full")) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 200, "a full 64 KiB tmpfs kept accepting records");
    };
    let msg = err.to_string();
    eprintln!("append on a full disk: {msg}");
    assert_eq!(err.errno(), Some(libc::ENOSPC), "{msg}");
    // The record itself, or the anchor that must vouch for it: either way nothing stays.
    assert!(
        msg.starts_with(&format!("audit log {}: write", path.display()))
            && msg.contains("failed: No space left on device"),
        "{msg}"
    );
    assert!(
        msg.contains("no action was taken")
            && msg.contains("free space or point --audit-log elsewhere"),
        "{msg}"
    );
    let report = verify(&path);
    assert!(report.is_intact() && report.torn_tail.is_none(), "{report}");
    assert_eq!(report.records, written);

    // A record bigger than the space left: the short write is undone, no torn line remains.
    let len = fs::metadata(&filler).expect("meta").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .expect("open")
        .set_len(len - 8192)
        .expect("free 8 KiB");
    let err = log
        .append(intent(&"x".repeat(20_000)))
        .expect_err("does not fit");
    assert_eq!(err.errno(), Some(libc::ENOSPC), "{err}");
    let report = verify(&path);
    assert!(report.is_intact() && report.torn_tail.is_none(), "{report}");
    assert_eq!(report.records, written);

    // A batch bigger than the space left: its first part reaches the file, the rest does
    // not; the part is cut away and none of the batch counts.
    let before = fs::metadata(&path).expect("meta").len();
    let err = log
        .append_batch((0..100).map(|i| intent(&format!("batch {i}"))).collect())
        .expect_err("a 100-record batch does not fit in 8 KiB");
    assert_eq!(err.errno(), Some(libc::ENOSPC), "{err}");
    assert!(err.to_string().contains("no action was taken"), "{err}");
    assert_eq!(fs::metadata(&path).expect("meta").len(), before);
    let report = verify(&path);
    assert!(report.is_intact() && report.torn_tail.is_none(), "{report}");
    assert_eq!(report.records, written);

    // Space back: the chain continues, singly and in batches.
    fs::remove_file(&filler).expect("rm filler");
    log.append(intent("after space was freed")).expect("append");
    log.append_batch((0..10).map(|i| intent(&format!("batch {i}"))).collect())
        .expect("batch");
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, written + 11);
    drop(log); // it holds the directory open
    nix::mount::umount(&dir).expect("umount");
}

// ---- separate writer processes ----

#[test]
fn two_writer_processes_append_400_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let children: Vec<_> = (0..2)
        .map(|w| {
            let exe = std::env::current_exe().expect("exe");
            Command::new(exe)
                .args([
                    "audit_log::writer_child",
                    "--exact",
                    "--include-ignored",
                    "--nocapture",
                ])
                .env("SOCKWARDEN_WRITER_LOG", &path)
                .env("SOCKWARDEN_WRITER_ID", w.to_string())
                // The child harness's own "test result" line must not reach our output,
                // where CI counts this harness's tests.
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a writer failed");
    }
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 400);
    let trail = read_trail(&path).expect("read");
    for w in 0..2 {
        let mine = trail
            .records
            .iter()
            .filter(|r| {
                r.why
                    .as_deref()
                    .is_some_and(|y| y.starts_with(&format!("w{w} ")))
            })
            .count();
        assert_eq!(mine, 200, "writer {w}");
    }
    let pids: std::collections::HashSet<i32> = trail.records.iter().map(|r| r.actor.pid).collect();
    assert_eq!(pids.len(), 2, "two processes wrote");
}

#[test]
#[ignore = "run by two_writer_processes_append_400_records"]
fn writer_child() {
    let (Ok(path), Ok(id)) = (
        std::env::var("SOCKWARDEN_WRITER_LOG"),
        std::env::var("SOCKWARDEN_WRITER_ID"),
    ) else {
        return;
    };
    let mut log = AuditLog::open(Path::new(&path))
        .expect("open")
        .with_max_size(32 * 1024);
    for i in 0..200 {
        log.append(intent(&format!("w{id} {i}"))).expect("append");
    }
}

// ---- the CLI ----

#[test]
fn cli_verify_reports_intact_tampered_torn_and_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    sample_trail(&path);
    let p = path.to_str().expect("utf-8");

    let (code, out, err) = sockwarden(&["audit", "verify", "--audit-log", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("intact: 7 records (seq 1..7) in 1 file"),
        "{out}"
    );

    let (code, out, _) = sockwarden(&["audit", "verify", "--audit-log", p, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["records"], 7);

    let original = fs::read_to_string(&path).expect("read");
    fs::write(&path, original.replacen("leak 1", "leak 9", 1)).expect("tamper");
    let (code, out, err) = sockwarden(&["audit", "verify", "--audit-log", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "first bad record: {p}:4 (seq 4): content does not match its own hash"
        )),
        "{out}"
    );

    fs::write(&path, format!("{original}{{\"seq\":8,\"ti")).expect("torn tail");
    let (code, out, _) = sockwarden(&["audit", "verify", "--audit-log", p]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("torn final line {p}:8"))
            && out.contains("7 records before it verify"),
        "{out}"
    );

    let missing = dir.path().join("nope.jsonl");
    let (code, out, err) = sockwarden(&[
        "audit",
        "verify",
        "--audit-log",
        missing.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("does not exist"), "{err}");

    let (code, out, err) = sockwarden(&["audit", "verify", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("--audit-log") && out.contains("Exit codes"),
        "{out}"
    );
}

#[test]
fn cli_show_and_summary_filter_the_trail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    sample_trail(&path);
    let p = path.to_str().expect("utf-8");

    let (code, out, err) = sockwarden(&["audit", "show", "--audit-log", p]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "header + 7 records:\n{out}");
    assert!(
        lines[0].starts_with("TIME (UTC)") && lines[0].contains("OUTCOME"),
        "{out}"
    );
    assert!(
        out.contains("→ destroyed") && out.contains("already-gone"),
        "{out}"
    );

    let (code, out, _) = sockwarden(&[
        "audit",
        "show",
        "--audit-log",
        p,
        "--outcome",
        "failed",
        "--json",
    ]);
    assert_eq!(code, 0);
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json line")["kind"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["intent", "outcome"]);

    // A result that does not exist would silently match nothing: it is refused, naming
    // the ones that do.
    let (code, out, err) = sockwarden(&["audit", "show", "--audit-log", p, "--outcome", "bogus"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(
        err.contains("unknown result `bogus`") && err.contains("already-gone"),
        "{err}"
    );

    let (code, out, _) = sockwarden(&[
        "audit",
        "show",
        "--audit-log",
        p,
        "--action",
        "destroy",
        "--since",
        "1h",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().count(),
        4,
        "two destroys and their outcomes:\n{out}"
    );
    let (_, out, _) = sockwarden(&["audit", "show", "--audit-log", p, "--until", "2h", "--json"]);
    assert_eq!(out.lines().count(), 0, "{out}");
    let (_, out, _) = sockwarden(&[
        "audit",
        "show",
        "--audit-log",
        p,
        "--unit",
        "api*",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");

    let (code, out, err) = sockwarden(&["audit", "summary", "--audit-log", p, "--json"]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(s["intents"], 3);
    assert_eq!(s["per_outcome"]["failed"], 1);
    assert_eq!(s["per_rule"][0]["key"], "api-leak");
    assert_eq!(s["timeline"].as_array().map(Vec::len), Some(1));

    let (code, out, _) = sockwarden(&["audit", "summary", "--audit-log", p]);
    assert_eq!(code, 0);
    assert!(
        out.contains("3 interventions")
            && out.contains("HOUR (UTC)")
            && out.contains("api.service"),
        "{out}"
    );

    let (code, _, err) =
        sockwarden(&["audit", "show", "--audit-log", p, "--since", "last tuesday"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--since") && err.contains("2026-11-23 14:00"),
        "{err}"
    );
}

#[test]
fn library_verify_names_the_file_of_a_broken_rotated_trail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::open(&path).expect("open").with_max_size(1500);
    for i in 0..20 {
        log.append(intent(&format!("r{i}"))).expect("append");
    }
    let rotated = sockwarden::audit::rotated_files(&path).expect("list");
    assert!(rotated.len() > 2);
    let mut bytes = fs::read(&rotated[0]).expect("read");
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    fs::write(&rotated[0], bytes).expect("write");
    let report = verify(&path);
    match &report.failure {
        Some(VerifyFailure::Broken(bad)) => assert_eq!(bad.file, rotated[0]),
        other => panic!("{other:?}"),
    }
}
