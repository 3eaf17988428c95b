//! Generates the man pages and shell completions from the clap definitions, for the Debian
//! package (`packaging/build-deb.sh`): `cargo run --example gen-assets -- target/assets`.
//!
//! Writes `<out>/man/sockwarden.1` plus one page per subcommand (`sockwarden-scan.1`,
//! `sockwarden-policy-check.1`, …), `sockwarden-policy.5` (policy files and
//! sockwarden.toml), and `<out>/completions/{sockwarden.bash,_sockwarden,
//! sockwarden.fish}`. cargo-deb gzips the man pages when it packages them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;
use sockwarden::cli::Cli;

/// Appended to the top-level page: exit status, environment, examples, and where the
/// packaged daemon keeps its files. Kept here rather than in cli.rs because it describes
/// the package, not a flag (the README says the same).
const FILES_SECTION: &str = r#".SH EXIT STATUS
.TP
.B 0
ok; \fBscan\fR: nothing matched; \fBclean\fR: every action succeeded or nothing to do;
\fBdoctor\fR: everything works.
.TP
.B 1
\fBscan\fR: stuck sockets found; \fBclean\fR: some action did not succeed or was skipped at
act time; \fBdoctor\fR: some remediation cannot work here; \fBaudit verify\fR: the chain is
broken, cut short or rewritten.
.TP
.B 2
error: bad flag value, missing permission, kernel or I/O failure, audit log unwritable (no
action taken); \fBaudit verify\fR: the trail cannot be read.
.TP
.B 3
\fBscan\fR, \fBclean\fR: some network namespace could not be read: not an all-clear.
.TP
.B 78
invalid policy or configuration.
.SH ENVIRONMENT
.TP
.B SOCKWARDEN_LOG
Log filter for stderr, in tracing-subscriber's syntax (\fIinfo\fR, \fIsockwarden=debug\fR).
.TP
.B SOCKWARDEN_AUDIT_LOG
The audit log, as \fB\-\-audit\-log\fR.
.TP
.B SOCKWARDEN_AUDIT_KEY
The key file of a keyed audit log, as \fB\-\-audit\-key\fR.
.TP
.B SOCKWARDEN_NODE_NAME
The \fBhost\fR written in audit records, instead of the hostname (the DaemonSet sets it to
the node's name: a pod's hostname is the pod's).
.TP
.B SOCKWARDEN_WATCHER
\fBsock\-diag\fR: do not load the eBPF programs; sock_diag and /proc only.
.TP
.B SOCKWARDEN_BPF_PIN_DIR
Where the daemon pins the eBPF index (default /sys/fs/bpf/sockwarden/v2); empty: never pin.
.TP
.B JOURNAL_STREAM
Set by systemd: logs are text for the journal.
.SH EXAMPLES
.nf
sockwarden scan                              # every stuck socket, owners, ages
sockwarden scan \-\-summary                    # counts per state and owner
sockwarden policy explain                    # what the policies would do to each
sockwarden clean \-\-state close\-wait \-\-older\-than 10m \-\-process java \e
    \-\-action destroy \-\-dry\-run             # the plan, nothing touched
sockwarden audit show \-\-since 1h \-\-outcome failed
sockwarden audit verify
.fi
.SH FILES
.TP
\fI/etc/sockwarden/sockwarden.toml\fR
Configuration of \fBsockwarden run\fR (every setting also has a flag).
.TP
\fI/etc/sockwarden/policies/\fR
Policy files, loaded sorted by name; \fBsockwarden policy check\fR validates them.
.TP
\fI/var/lib/sockwarden/audit.jsonl\fR
The hash-chained audit log; rotated files are \fIaudit.jsonl.<first seq>\fR.
\fBsockwarden audit verify\fR checks the chain.
.TP
\fI/var/lib/sockwarden/observations.json\fR
First-seen times of the sockets the daemon watches, so a restart does not reset ages.
.TP
\fI/usr/share/doc/sockwarden/examples/\fR
Commented example policies.
.SH SEE ALSO
\fBsockwarden\-policy\fR(5), \fBss\fR(8), \fBsystemd.service\fR(5), \fBsystemd.exec\fR(5)
"#;

/// `sockwarden-policy(5)`: the policy files and `sockwarden.toml`.
const POLICY_PAGE: &str = concat!(
    r#".TH SOCKWARDEN\-POLICY 5 "" "sockwarden "#,
    env!("CARGO_PKG_VERSION"),
    r#"" "sockwarden manual"
.SH NAME
sockwarden\-policy \- rules, guards and mode of sockwarden, and the daemon's configuration
.SH SYNOPSIS
\fI/etc/sockwarden/policies/*.toml\fR, \fI/etc/sockwarden/sockwarden.toml\fR
.SH DESCRIPTION
Policy files are TOML, loaded sorted by name. For each stuck socket the first rule that
fires wins. Unknown keys are errors; \fBsockwarden policy check\fR reports every error at once
and exits 78 on any.
.SH TOP LEVEL
.TP
.B mode
\fIobserve\fR (plan and record, act on nothing; the default) or \fIenforce\fR.
.SH [guards]
Every key is optional.
.TP
.B max_destroys_per_minute, max_signals_per_minute, max_execs_per_minute
Rate budgets over any 60 s (defaults 200, 10, 10).
.TP
.B max_restarts_per_unit_per_hour
Default 1.
.TP
.B max_fraction_per_owner
The share of one owner's matching sockets taken per pass (default 1.0).
.TP
.B protect_ssh
sshd, ssh(d).service and port 22 are never touched (default true).
.TP
.B never_touch_processes, never_touch_units, never_touch_ports, never_touch_uids
Globs, port numbers or ranges ("first\-last"), uids. sockwarden itself and PID 1 are always
protected.
.SH [[rule]]
.TP
.B name
Unique; recorded with every action.
.TP
.B states
TCP states, kebab\-case: close\-wait, fin\-wait\-1, fin\-wait\-2, last\-ack, closing, syn\-sent,
syn\-recv, established.
.TP
.B older_than
A duration (30s, 10m, 1h30m): the socket's age in its state, by its evidence.
.TP
.B action
\fIlog\fR, \fIdestroy\fR (SOCK_DESTROY by cookie), \fIsignal\fR (with \fBsignal\fR, through a
pidfd), \fIrestart\fR (the owner's systemd unit) or \fIexec\fR (with \fBcommand\fR: an argv,
never a shell; placeholders rule cookie state local remote local_port remote_port netns age
uid pid comm unit, also as SOCKWARDEN_<NAME> environment variables).
.TP
.B min_sockets, cooldown
One owner must hold at least this many matching sockets; the same rule does not act on
the same target again within the cooldown.
.TP
.B process, exe, cmdline, unit, uid, ports, local_ports, remote_ports, local_cidrs, remote_cidrs, netns
Selectors: all given must match.
.TP
.B [rule.escalate]
\fBaction\fR and \fBafter\fR: the next step when the same owner still matches that long after
the first.
.SH sockwarden.toml
The daemon's settings; every one also has a flag of \fBsockwarden run\fR:
\fBpolicy\fR, \fBinterval\fR, \fBmode\fR, \fBaudit_log\fR, \fBaudit_key\fR,
\fBaudit_retention\fR, \fBstate_dir\fR, \fBmetrics_listen\fR, \fBmetrics_textfile\fR,
\fBnetns\fR, \fBnamespace_refresh\fR (the packaged file documents each). Unknown keys are
errors (exit 78).
.SH EXAMPLE
.nf
mode = "enforce"
[guards]
max_destroys_per_minute = 200
[[rule]]
name = "api\-close\-wait\-leak"
states = ["close\-wait"]
older_than = "10m"
action = "destroy"
min_sockets = 20
process = ["java"]
.fi
.SH SEE ALSO
\fBsockwarden\fR(1), \fBsockwarden\-policy\-check\fR(1), \fBsockwarden\-policy\-explain\fR(1)
"#
);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gen-assets: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        bail!("usage: gen-assets OUT_DIR (e.g. target/assets)");
    };
    if args.next().is_some() {
        bail!("usage: gen-assets OUT_DIR: one argument only");
    }
    let man_dir = out.join("man");
    let completions_dir = out.join("completions");
    for dir in [&man_dir, &completions_dir] {
        // Start clean so a removed subcommand does not leave a stale page behind.
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    write_man_pages(&man_dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "sockwarden", &completions_dir)
            .with_context(|| {
                format!("write {shell} completions to {}", completions_dir.display())
            })?;
        println!("{}", path.display());
    }
    Ok(())
}

fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    // The subcommand pages first, named after their path (`sockwarden-policy-check.1`, the
    // display name clap gives a built subcommand).
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_subcommand_pages(sub, dir)?;
    }
    let path = dir.join("sockwarden.1");
    let mut page = Vec::new();
    man_page(root)
        .render(&mut page)
        .context("render the sockwarden.1 man page")?;
    page.write_all(FILES_SECTION.as_bytes())?;
    fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    println!("{}", path.display());
    let path = dir.join("sockwarden-policy.5");
    fs::write(&path, POLICY_PAGE).with_context(|| format!("write {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// One page's header: clap_mangen's default source is the subcommand's own name and version
/// ("check "), so name the package instead.
fn man_page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .source(concat!("sockwarden ", env!("CARGO_PKG_VERSION")))
        .manual("sockwarden manual")
}

fn write_subcommand_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_subcommand_pages(sub, dir)?;
    }
    let path = man_page(cmd.clone())
        .generate_to(dir)
        .with_context(|| format!("write the man page of `{}`", cmd.get_name()))?;
    println!("{}", path.display());
    Ok(())
}
