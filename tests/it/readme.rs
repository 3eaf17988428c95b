//! The README's quick start is what the commands really print: this test runs them on a
//! fixture (three CLOSE_WAIT sockets held by processes named `api-server`) and compares
//! with the README's block, numbers and column widths aside. `SOCKWARDEN_UPDATE_README=1
//! cargo test readme` writes the block afresh.

use std::os::fd::AsRawFd;

use crate::support::{
    kill_child, leak_close_wait, root_or_skip, run, spawn_named_inheriting, TestNetns,
};

const BEGIN: &str =
    "<!-- quick start: written by tests/it/readme.rs (SOCKWARDEN_UPDATE_README=1 cargo test readme) -->";
const END: &str = "<!-- end of quick start -->";

fn readme_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// What a reader compares: no numbers (pids, ports, cookies, ages, times, hashes' digits),
/// no column padding, and rows in any order (sockets of the same age come in cookie order,
/// and the kernel hands out cookies lazily).
fn normalized(text: &str) -> String {
    let mut sections: Vec<Vec<String>> = Vec::new();
    for line in flattened(text).lines() {
        if line.starts_with("$ ") || sections.is_empty() {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line.to_string());
        }
    }
    for section in &mut sections {
        section.sort();
    }
    sections
        .into_iter()
        .map(|s| s.join("\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn flattened(text: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    let mut last_space = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (last_digit && c.is_ascii_hexdigit()) {
            if !last_digit {
                out.push('0');
            }
            last_digit = true;
            last_space = false;
            continue;
        }
        last_digit = false;
        if c == ' ' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = false;
        out.push(c);
    }
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_quick_start_is_what_the_commands_print() {
    if !root_or_skip("the README's quick start") {
        return;
    }
    let ns = TestNetns::new();
    let mut server = leak_close_wait(&ns, "127.0.0.1:0", 3);
    // The sockets belong to `api-server` processes only (the test lets go of its copies).
    let holders: Vec<_> = server
        .leaked
        .iter()
        .map(|s| spawn_named_inheriting(s.as_raw_fd(), std::ffi::OsStr::new("api-server")))
        .collect();
    server.leaked.clear();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let (netns, log) = (ns.path(), log.to_str().expect("path").to_string());
    let netns = netns.to_str().expect("path").to_string();
    let extra = ["--netns", &netns];
    let steps: [&[&str]; 4] = [
        &["scan"],
        &["scan", "--summary"],
        &[
            "clean",
            "--state",
            "close-wait",
            "--action",
            "destroy",
            "--dry-run",
        ],
        &["audit", "show"],
    ];
    let mut block = String::new();
    for step in steps {
        let mut args: Vec<&str> = step.to_vec();
        if step[0] != "audit" {
            args.extend_from_slice(&extra);
        }
        if step[0] != "scan" {
            args.extend_from_slice(&["--audit-log", &log]);
        }
        let (_, out, err) = run(&args);
        block.push_str(&format!("$ sockwarden {}\n{out}{err}", step.join(" ")));
        if !block.ends_with('\n') {
            block.push('\n');
        }
    }
    for child in holders {
        kill_child(child);
    }
    let block = block
        .replace(&netns, "NETNS")
        .replace(&log, "/var/lib/sockwarden/audit.jsonl");
    let fenced = format!("{BEGIN}\n```console\n{block}```\n{END}");

    let readme = std::fs::read_to_string(readme_path()).expect("read README");
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no quick-start block ({BEGIN} … {END})");
    };
    let current = &readme[start..end + END.len()];
    if std::env::var_os("SOCKWARDEN_UPDATE_README").is_some() {
        let updated = readme.replace(current, &fenced);
        std::fs::write(readme_path(), updated).expect("write README");
        return;
    }
    let (want, got) = (normalized(current), normalized(&fenced));
    let first_difference = want
        .lines()
        .zip(got.lines())
        .find(|(w, g)| w != g)
        .map(|(w, g)| format!("README: {w}\nnow:    {g}"))
        .unwrap_or_else(|| "(one is longer)".into());
    assert!(
        want == got,
        "the README's quick start no longer matches what the commands print; \
         run SOCKWARDEN_UPDATE_README=1 cargo test readme and review the diff\n{first_difference}"
    );
}
