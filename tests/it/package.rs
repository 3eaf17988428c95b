//! The Debian package: `packaging/build-deb.sh` builds it from this test's dev binary; dpkg
//! installs it into a scratch root (every file checked) and into an isolated systemd, where
//! the hardened unit must run the daemon. Also: the DaemonSet matches the packaged files.

use std::fs;
use std::ops::Not;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use sockwarden::cli::Cli;

use crate::isolated_systemd::IsolatedSystemd;
use crate::support::{in_ci, repo_root, run_ok, stdout_of, tool_works};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn assert_same_file(installed: &Path, source: &str) {
    assert_eq!(
        read(installed),
        read(&repo_root().join(source)),
        "{} differs from {source}",
        installed.display()
    );
}

/// A man page's text (pages are installed gzipped).
fn gunzip(path: &Path) -> String {
    stdout_of(&run_ok(Command::new("gzip").arg("-dc").arg(path)))
}

/// `sockwarden-policy-check` for `policy check`: clap_mangen's name for each page.
fn man_page_names(cmd: &clap::Command, prefix: &str, names: &mut Vec<String>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{prefix}-{}", sub.get_name());
        man_page_names(sub, &name, names);
        names.push(name);
    }
}

/// One test, because building the package is the slow part (about 15 s: man pages and
/// completions, strip, xz). Needs cargo-deb and dpkg: under CI (`CI` set) their absence is a
/// failure (`.ci/run` installs cargo-deb), elsewhere the test skips with a note.
///
/// The scratch-root install is `dpkg --root --unpack` (files, conffiles and the dpkg
/// database; no script runs) and, on a host where systemd is not running, `dpkg --root
/// --configure --force-script-chrootless`: the postinst then runs on the host with
/// `DPKG_ROOT` set, and every branch of it that would touch the host's systemd is guarded by
/// `[ -d /run/systemd/system ]`, so all it does is enable the unit inside the scratch root.
/// On a host running systemd that step is left out (it would `systemctl daemon-reload` and
/// try to start the unit on the host) and the conffiles stay as `*.dpkg-new`.
#[test]
fn the_debian_package_builds_and_installs_into_a_scratch_root() {
    let missing: Vec<&str> = [
        ("cargo-deb", tool_works("cargo-deb", &["--version"])),
        ("dpkg", tool_works("dpkg", &["--version"])),
        ("dpkg-deb", tool_works("dpkg-deb", &["--version"])),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        assert!(
            !in_ci(),
            "{missing:?} missing: .ci/run installs cargo-deb (cargo install cargo-deb --locked); \
             dpkg comes with Debian"
        );
        eprintln!(
            "skipping the package test: {missing:?} missing (cargo install cargo-deb --locked)"
        );
        return;
    }

    let work = tempfile::tempdir().expect("tempdir");
    let out_dir = work.path().join("out");

    // Build: this test's dev binary, packaged as is (no second, optimized compile).
    let built = run_ok(
        Command::new(repo_root().join("packaging/build-deb.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_sockwarden"))
            .arg("--output")
            .arg(&out_dir)
            .current_dir(repo_root()),
    );
    let deb = PathBuf::from(
        stdout_of(&built)
            .lines()
            .last()
            .expect("build-deb.sh prints the .deb"),
    );
    assert!(deb.is_file(), "{} is not a file", deb.display());

    // Control fields.
    let field = |name: &str| {
        stdout_of(&run_ok(
            Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name),
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(field("Package"), "sockwarden");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    // Depends computed from the binary: a glibc at least as new as the one it links against
    // (an unversioned libc6 would install where it cannot start).
    let depends = field("Depends");
    let glibc_minor = depends
        .split(',')
        .find_map(|d| {
            d.trim()
                .strip_prefix("libc6 (>= 2.")?
                .strip_suffix(')')?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("Depends has no versioned libc6: {depends}"));
    assert!(glibc_minor >= 17, "Depends: {depends}");
    let maintainer = field("Maintainer");
    assert!(
        maintainer.contains('<') && maintainer.contains('@') && maintainer.ends_with('>'),
        "Maintainer has no email address: {maintainer}"
    );
    assert_eq!(field("Section"), "admin");

    // Control archive: conffiles and the maintainer scripts made from systemd-units.
    let control = work.path().join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles: Vec<String> = read(&control.join("conffiles"))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        conffiles,
        [
            "/etc/sockwarden/sockwarden.toml",
            "/etc/sockwarden/policies/default.toml"
        ]
    );
    let postinst = read(&control.join("postinst"));
    for needle in [
        "systemd-tmpfiles --create sockwarden.conf",
        "deb-systemd-helper enable sockwarden.service",
        "deb-systemd-invoke $_dh_action sockwarden.service",
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks `{needle}`:\n{postinst}"
        );
    }
    assert!(read(&control.join("prerm")).contains("deb-systemd-invoke stop sockwarden.service"));
    assert!(read(&control.join("postrm")).contains("deb-systemd-helper purge sockwarden.service"));

    // Install into a scratch root with its own, empty dpkg database.
    let sysroot = work.path().join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
        fs::create_dir_all(sysroot.join(dir)).expect("create the scratch dpkg database");
    }
    fs::write(sysroot.join("var/lib/dpkg/status"), "").expect("empty dpkg status");
    let dpkg = || {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", sysroot.display()))
            .arg("--log=/dev/null")
            .arg("--force-not-root");
        cmd
    };
    run_ok(dpkg().arg("--unpack").arg(&deb));
    let configured = !Path::new("/run/systemd/system").exists();
    if configured {
        // libc6 is not in the scratch database: --force-depends.
        run_ok(
            dpkg()
                .args([
                    "--force-script-chrootless",
                    "--force-depends",
                    "--configure",
                ])
                .arg("sockwarden"),
        );
    } else {
        eprintln!(
            "note: systemd runs on this host: not running the postinst (it would act on the \
             host's systemd); checking the unpacked package only"
        );
    }
    let status = stdout_of(&run_ok(dpkg().args(["--status", "sockwarden"])));
    let expected_status = if configured {
        "Status: install ok installed"
    } else {
        "Status: install ok unpacked"
    };
    assert!(status.contains(expected_status), "dpkg --status:\n{status}");
    for conffile in &conffiles {
        assert!(
            status.contains(&format!(" {conffile} ")),
            "{conffile} not a conffile:\n{status}"
        );
    }
    let at = |path: &str| sysroot.join(path.trim_start_matches('/'));
    // Conffiles keep their .dpkg-new name until the package is configured.
    let etc = |path: &str| {
        if configured {
            at(path)
        } else {
            at(&format!("{path}.dpkg-new"))
        }
    };

    // The binary runs and knows its version; the shipped default policy is valid.
    let bin = at("/usr/bin/sockwarden");
    let mode = fs::metadata(&bin)
        .expect("/usr/bin/sockwarden")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "/usr/bin/sockwarden mode {mode:o}");
    let version = stdout_of(&run_ok(Command::new(&bin).arg("--version")));
    assert_eq!(
        version.trim(),
        format!("sockwarden {}", env!("CARGO_PKG_VERSION"))
    );
    if configured {
        run_ok(
            Command::new(&bin)
                .args(["policy", "check"])
                .arg(at("/etc/sockwarden/policies")),
        );
    }

    // Unit, tmpfiles, config, policies, docs.
    assert_same_file(
        &at("/usr/lib/systemd/system/sockwarden.service"),
        "packaging/sockwarden.service",
    );
    assert_same_file(
        &at("/usr/lib/tmpfiles.d/sockwarden.conf"),
        "packaging/sockwarden.tmpfile",
    );
    assert_same_file(
        &etc("/etc/sockwarden/sockwarden.toml"),
        "packaging/sockwarden.toml",
    );
    assert_same_file(
        &etc("/etc/sockwarden/policies/default.toml"),
        "policies/default.toml",
    );
    for example in fs::read_dir(repo_root().join("policies/examples")).expect("policies/examples") {
        let name = example.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert_same_file(
            &at(&format!("/usr/share/doc/sockwarden/examples/{name}")),
            &format!("policies/examples/{name}"),
        );
    }
    assert_same_file(&at("/usr/share/doc/sockwarden/README.md"), "README.md");
    // The license and the changelog ship in the package (Debian policy 12.5, 12.7).
    let copyright = read(&at("/usr/share/doc/sockwarden/copyright"));
    assert!(
        copyright.contains("Apache License"),
        "copyright:\n{copyright}"
    );
    assert!(copyright.contains("Version 2.0, January 2004"));
    assert!(at("/usr/share/doc/sockwarden/changelog.Debian.gz").is_file());
    // Stripped: no debug sections (the unstripped dev binary has them).
    let sections = |path: &Path| stdout_of(&run_ok(Command::new("readelf").arg("-S").arg(path)));
    assert!(
        sections(Path::new(env!("CARGO_BIN_EXE_sockwarden"))).contains(".debug_info"),
        "the test's own binary should carry debug info (else this check proves nothing)"
    );
    assert!(
        !sections(&bin).contains(".debug_info"),
        "/usr/bin/sockwarden is not stripped"
    );
    if configured {
        // deb-systemd-helper enabled the unit inside the scratch root.
        let wants = at("/etc/systemd/system/multi-user.target.wants/sockwarden.service");
        let link = fs::read_link(&wants).unwrap_or_else(|e| panic!("{}: {e}", wants.display()));
        assert_eq!(
            link,
            Path::new("/usr/lib/systemd/system/sockwarden.service")
        );
    }

    // Man pages: the top page (with the package's FILES section) and one per subcommand,
    // named from the clap definitions.
    let top = gunzip(&at("/usr/share/man/man1/sockwarden.1.gz"));
    assert!(top.contains(".TH sockwarden 1"), "sockwarden.1:\n{top}");
    assert!(
        top.contains("/var/lib/sockwarden/audit.jsonl"),
        "FILES section missing"
    );
    for section in [
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
        ".SH FILES",
    ] {
        assert!(top.contains(section), "sockwarden.1 has no {section}");
    }
    let policy = gunzip(&at("/usr/share/man/man5/sockwarden-policy.5.gz"));
    assert!(
        policy.contains(".TH SOCKWARDEN\\-POLICY 5") && policy.contains("never_touch_units"),
        "sockwarden-policy.5:\n{policy}"
    );
    let mut pages = Vec::new();
    man_page_names(&Cli::command(), "sockwarden", &mut pages);
    assert!(pages.iter().any(|p| p == "sockwarden-scan"), "{pages:?}");
    assert!(
        pages.iter().any(|p| p == "sockwarden-policy-check"),
        "{pages:?}"
    );
    for page in &pages {
        let text = gunzip(&at(&format!("/usr/share/man/man1/{page}.1.gz")));
        assert!(text.contains(&format!(".TH {page} 1")), "{page}.1:\n{text}");
    }

    // Shell completions, where each shell looks for them.
    for (path, needle) in [
        (
            "/usr/share/bash-completion/completions/sockwarden",
            "complete -F _sockwarden",
        ),
        (
            "/usr/share/zsh/vendor-completions/_sockwarden",
            "#compdef sockwarden",
        ),
        (
            "/usr/share/fish/vendor_completions.d/sockwarden.fish",
            "complete -c sockwarden",
        ),
    ] {
        let text = read(&at(path));
        assert!(text.contains(needle), "{path} lacks `{needle}`");
        assert!(
            text.contains("policy"),
            "{path} does not complete subcommands"
        );
    }

    // Nothing shipped that this test does not know about.
    let listed = stdout_of(&run_ok(dpkg().args(["--listfiles", "sockwarden"])));
    let unexpected: Vec<&str> = listed
        .lines()
        .filter(|p| Path::new(p) != Path::new("/.") && !at(p).is_dir())
        .filter(|p| {
            ![
                "/usr/bin/sockwarden",
                "/usr/lib/systemd/system/sockwarden.service",
                "/usr/lib/tmpfiles.d/sockwarden.conf",
                "/etc/sockwarden/",
                "/usr/share/doc/sockwarden/",
                "/usr/share/man/man1/sockwarden",
                "/usr/share/man/man5/sockwarden-policy.5.gz",
                "/usr/share/bash-completion/completions/sockwarden",
                "/usr/share/zsh/vendor-completions/_sockwarden",
                "/usr/share/fish/vendor_completions.d/sockwarden.fish",
            ]
            .iter()
            .any(|known| p.starts_with(known))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected files in the package: {unexpected:?}"
    );

    // tmpfiles creates the state directory with the intended mode.
    if tool_works("systemd-tmpfiles", &["--version"]) {
        run_ok(
            Command::new("systemd-tmpfiles")
                .arg(format!("--root={}", sysroot.display()))
                .arg("--create")
                .arg(at("/usr/lib/tmpfiles.d/sockwarden.conf")),
        );
        let state = fs::metadata(at("/var/lib/sockwarden")).expect("/var/lib/sockwarden");
        assert!(state.is_dir());
        assert_eq!(state.permissions().mode() & 0o7777, 0o750);
    } else {
        assert!(
            !in_ci(),
            "systemd-tmpfiles missing: .ci/run installs systemd"
        );
    }

    verify_unit(&sysroot);
    install_and_run_under_systemd(&deb);
}

/// `dpkg -i` on a machine running systemd, for real: inside an isolated systemd (an overlay
/// of this host's root, its own pid/mount/net/cgroup namespaces), the postinst creates the
/// directory, enables and starts the service; the hardened unit must then let the daemon
/// come up (READY=1), ping the watchdog, reload on SIGHUP and stop cleanly, with exactly
/// the five capabilities it keeps.
fn install_and_run_under_systemd(deb: &Path) {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            !in_ci(),
            "the systemd install check needs root, and CI must run it"
        );
        eprintln!("note: not root: the package is not installed under a real systemd");
        return;
    }
    let systemd = match IsolatedSystemd::try_boot() {
        Ok(s) => s,
        Err(e) => {
            assert!(!in_ci(), "isolated systemd did not boot: {e}");
            eprintln!("note: no isolated systemd ({e}): the package is not installed under one");
            return;
        }
    };
    let journal = || {
        let out = systemd.exec(["journalctl", "-u", "sockwarden", "--no-pager", "-n", "60"]);
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            systemd.diagnostics()
        )
    };
    let show = |property: &str| {
        systemd
            .exec_ok(["systemctl", "show", "--value", "-p", property, "sockwarden"])
            .trim()
            .to_owned()
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "sockwarden under systemd: {what} within 30 s\n{}",
                journal()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // The overlay's upper layer is a tmpfs: nothing written here reaches the host.
    fs::copy(
        deb,
        format!("/proc/{}/root/root/sockwarden.deb", systemd.pid()),
    )
    .expect("copy the .deb into the isolated systemd");
    // This host image forbids starting services from maintainer scripts (a Docker habit);
    // a real server does not.
    systemd.exec_ok(["rm", "-f", "/usr/sbin/policy-rc.d"]);
    systemd.exec_ok(["dpkg", "-i", "/root/sockwarden.deb"]);

    assert_eq!(show("UnitFileState"), "enabled");
    // Type=notify: active only once the daemon said READY=1.
    wait_for("active", &|| show("ActiveState") == "active");
    assert_eq!(
        systemd
            .exec_ok(["stat", "-c", "%a %U", "/var/lib/sockwarden"])
            .trim(),
        "750 root"
    );
    wait_for("a STATUS= line", &|| !show("StatusText").is_empty());
    wait_for("a watchdog ping", &|| {
        show("WatchdogTimestampMonotonic")
            .parse::<u64>()
            .is_ok_and(|t| t > 0)
    });
    let main_pid = show("MainPID");
    let status = systemd.exec_ok(["cat", &format!("/proc/{main_pid}/status")]);
    // CAP_DAC_READ_SEARCH (2), CAP_KILL (5), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19),
    // CAP_SYS_ADMIN (21), and nothing else.
    let caps = 1u64 << 2 | 1 << 5 | 1 << 12 | 1 << 19 | 1 << 21;
    for field in ["CapEff:", "CapBnd:"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in /proc/{main_pid}/status"));
        assert_eq!(
            u64::from_str_radix(value.trim(), 16).expect("hex capability set"),
            caps,
            "{field} of the running daemon"
        );
    }
    assert!(
        status.contains("NoNewPrivs:\t1"),
        "NoNewPrivileges not in force:\n{status}"
    );

    systemd.exec_ok(["systemctl", "reload", "sockwarden"]);
    let events = || {
        let log = systemd.exec_ok(["cat", "/var/lib/sockwarden/audit.jsonl"]);
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| r["note"]["event"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    wait_for("a reload record", &|| {
        events().iter().any(|e| e == "reload")
    });
    assert_eq!(show("ActiveState"), "active", "{}", journal());

    systemd.exec_ok(["systemctl", "stop", "sockwarden"]);
    assert_eq!(show("Result"), "success", "{}", journal());
    assert_eq!(show("ExecMainStatus"), "0", "{}", journal());
    assert_eq!(show("NRestarts"), "0", "{}", journal());
    let events = events();
    assert_eq!(
        events.first().map(String::as_str),
        Some("start"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("shutdown"),
        "{events:?}"
    );
    systemd.exec_ok(["sockwarden", "audit", "verify"]);

    // Enforce mode inside the sandbox: the start-up SOCK_DESTROY probe (unshare of a
    // throwaway netns) works, and a CLOSE_WAIT socket in another network namespace is
    // destroyed (/proc/<pid>/ns/net, setns, SOCK_DESTROY), all through the unit's
    // capabilities, RestrictNamespaces=net and SystemCallFilter=@system-service.
    let inside = |path: &str, text: &str| {
        let path = PathBuf::from(format!("/proc/{}/root{path}", systemd.pid()));
        fs::create_dir_all(path.parent().expect("a parent")).expect("create a directory inside");
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    inside(
        "/etc/sockwarden/policies/10-test.toml",
        "[[rule]]\nname = \"test-destroy\"\nstates = [\"close-wait\"]\nolder_than = \"2s\"\n\
         action = \"destroy\"\n",
    );
    inside(
        "/etc/systemd/system/sockwarden.service.d/enforce.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/sockwarden run --config \
         /etc/sockwarden/sockwarden.toml --mode enforce --interval 1s\n",
    );
    systemd.exec_ok(["systemctl", "daemon-reload"]);
    // Accepts one connection whose client then closes: the accepted socket sits in
    // CLOSE_WAIT, owned by python3, until someone destroys it. Started first: the daemon
    // lists namespaces at start and then once a minute.
    systemd.exec_ok([
        "systemd-run",
        "--unit=sw-leak",
        "--property=PrivateNetwork=yes",
        "/usr/bin/python3",
        "-c",
        "import socket, time\n\
         s = socket.create_server(('127.0.0.1', 7777))\n\
         c = socket.create_connection(('127.0.0.1', 7777))\n\
         a, _ = s.accept()\n\
         c.close()\n\
         time.sleep(600)\n",
    ]);
    wait_for("the leaking server's CLOSE_WAIT socket", &|| {
        let out = systemd.exec(["systemctl", "show", "--value", "-p", "MainPID", "sw-leak"]);
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        pid != "0"
            && systemd
                .exec([
                    "nsenter",
                    "-t",
                    &pid,
                    "-n",
                    "ss",
                    "-Htn",
                    "state",
                    "close-wait",
                ])
                .stdout
                .is_empty()
                .not()
    });
    systemd.exec_ok(["systemctl", "start", "sockwarden"]);
    // The trail as `audit show --json` gives it: one entry per socket (a destroy's records
    // are batches on disk).
    let destroyed = || {
        let log = systemd.exec_ok(["sockwarden", "audit", "show", "--json"]);
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|r| r["kind"] == "outcome" && r["outcome"]["result"] == "destroyed")
    };
    wait_for("an outcome record `destroyed`", &|| destroyed());
    let log = systemd.exec_ok(["sockwarden", "audit", "show", "--json"]);
    let start = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|r| r["note"]["event"] == "start")
        .expect("a start record");
    let detail = start["note"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("mode enforce"), "{detail}");
    assert!(detail.contains("destroy works"), "{detail}");
    systemd.exec(["systemctl", "stop", "sw-leak"]);

    // Priorities reach the journal (`<N>` prefixes under JOURNAL_STREAM): a broken reload is
    // an error that `journalctl -p warning` shows, the start-up line is info that it hides.
    inside("/etc/sockwarden/policies/20-broken.toml", "[[rule]\n");
    systemd.exec_ok(["systemctl", "reload", "sockwarden"]);
    let at_priority = |priority: &str| {
        let out = systemd.exec([
            "journalctl",
            "-u",
            "sockwarden",
            "-p",
            priority,
            "--no-pager",
            "-o",
            "cat",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("the failed reload in `journalctl -p warning`", &|| {
        at_priority("warning").contains("reload failed")
    });
    let warnings = at_priority("warning");
    assert!(
        !warnings.contains("started: mode"),
        "info lines pass `-p warning`:\n{warnings}"
    );
    assert!(
        !warnings.contains("<3>") && !warnings.contains("<6>"),
        "the priority prefix shows in the journal text:\n{warnings}"
    );
    assert!(
        at_priority("info").contains("started: mode"),
        "{}",
        journal()
    );
    fs::remove_file(format!(
        "/proc/{}/root/etc/sockwarden/policies/20-broken.toml",
        systemd.pid()
    ))
    .expect("remove the broken policy");

    systemd.exec_ok(["systemctl", "stop", "sockwarden"]);
    assert_eq!(show("Result"), "success", "{}", journal());
    systemd.exec_ok(["sockwarden", "audit", "verify"]);
}

/// `systemd-analyze verify` of the installed unit, inside the scratch root: every directive
/// known to this systemd, every command present. It needs the targets the unit is ordered
/// against and `/bin/kill` (ExecReload) inside the root; without `--root` it would look for
/// /usr/bin/sockwarden on the host. Unknown directives are only warnings to systemd-analyze,
/// so any output at all is a failure.
fn verify_unit(sysroot: &Path) {
    let host_units = Path::new("/lib/systemd/system");
    if !tool_works("systemd-analyze", &["--version"]) || !host_units.is_dir() {
        assert!(
            !in_ci(),
            "systemd-analyze missing: .ci/run installs systemd"
        );
        eprintln!("note: systemd-analyze or /lib/systemd/system missing: unit not verified");
        return;
    }
    let units = sysroot.join("usr/lib/systemd/system");
    for target in [
        "sysinit.target",
        "shutdown.target",
        "multi-user.target",
        "network.target",
    ] {
        fs::copy(host_units.join(target), units.join(target))
            .unwrap_or_else(|e| panic!("copy {target} into the scratch root: {e}"));
    }
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("a kill binary (procps)");
    fs::create_dir_all(sysroot.join("bin")).expect("create bin/");
    fs::copy(kill, sysroot.join("bin/kill")).expect("copy kill into the scratch root");

    let out = run_ok(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", sysroot.display()))
            .arg("--man=no")
            .arg("sockwarden.service"),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

/// The text of the block scalar `  <key>: |` in a YAML file (4-space content indent).
fn yaml_block(yaml: &str, key: &str) -> String {
    let header = format!("  {key}: |");
    let mut lines = yaml.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "no `{header}` in packaging/daemonset.yaml"
    );
    let mut block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    while block.last().is_some_and(|l| l.is_empty()) {
        block.pop();
    }
    block.join("\n") + "\n"
}

#[test]
fn the_daemonset_ships_the_packaged_config_policy_and_capabilities() {
    let yaml = read(&repo_root().join("packaging/daemonset.yaml"));
    for (key, source) in [
        ("sockwarden.toml", "packaging/sockwarden.toml"),
        ("default.toml", "policies/default.toml"),
    ] {
        assert_eq!(
            yaml_block(&yaml, key),
            read(&repo_root().join(source)),
            "the ConfigMap's {key} in packaging/daemonset.yaml differs from {source}: copy it \
             there (indented by 4 spaces)"
        );
    }
    // The pod gets exactly the capabilities the systemd unit keeps.
    let unit = read(&repo_root().join("packaging/sockwarden.service"));
    let mut unit_caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    let add = yaml
        .lines()
        .skip_while(|l| l.trim() != "add:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- ") || l.trim_start().starts_with('#'));
    let mut pod_caps: Vec<String> = add
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    unit_caps.sort();
    pod_caps.sort();
    assert_eq!(
        pod_caps, unit_caps,
        "DaemonSet capabilities vs the unit's bounding set"
    );
    assert!(yaml.contains("drop: [ALL]"));
    // Probes that tell a stuck loop from a live one, and a node agent's priority.
    for (probe, path) in [
        ("startupProbe:", "/readyz"),
        ("readinessProbe:", "/readyz"),
        ("livenessProbe:", "/healthz"),
    ] {
        let block: String = yaml
            .lines()
            .skip_while(|l| l.trim() != probe)
            .take(4)
            .collect();
        assert!(block.contains(&format!("path: {path}")), "{probe} {block}");
    }
    assert!(yaml.contains("priorityClassName: system-node-critical"));
    assert!(yaml.contains("--metrics-listen=:9477"));
}

/// The README's from-source steps put the binary, the config and the policies where the
/// unit (and so the package) looks for them.
#[test]
fn the_from_source_steps_install_where_the_unit_looks() {
    let readme = read(&repo_root().join("README.md"));
    let unit = read(&repo_root().join("packaging/sockwarden.service"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").filter(|v| !v.is_empty()))
        .expect("the unit's ExecStart");
    let mut words = exec.split_whitespace();
    let binary = Path::new(words.next().expect("ExecStart's program"));
    let config = words
        .skip_while(|w| *w != "--config")
        .nth(1)
        .expect("ExecStart's --config");
    let installs: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("install "))
        .collect();
    let dir = binary.parent().expect("a directory").display().to_string();
    assert!(
        installs
            .iter()
            .any(|l| l.contains("target/release/sockwarden")
                && l.trim_end().ends_with(&format!("{dir}/"))),
        "README installs the binary elsewhere than {dir}: {installs:#?}"
    );
    assert!(
        installs.iter().any(|l| l.ends_with(&format!(" {config}"))),
        "README does not install {config}: {installs:#?}"
    );
    assert!(
        installs
            .iter()
            .any(|l| l.contains("/etc/sockwarden/policies/")),
        "{installs:#?}"
    );
}
