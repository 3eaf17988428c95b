//! eBPF watcher benchmark (issue 11): what the index of state transitions saves, on fixtures
//! built as `common` describes, in three scenarios.
//!
//! - spread: 100,000 CLOSE_WAIT sockets held by 1,000 processes, in 1 namespace and then in
//!   100. A daemon pins the index before each fixture is built (every socket is stamped as it
//!   enters CLOSE_WAIT), a warm-up `scan` sweeps the namespaces the index does not hold yet,
//!   the daemon stops (its pins stay), then `sockwarden scan --json` from the index, the same
//!   with `SOCKWARDEN_WATCHER=sock-diag`, and `ss -tan` once per namespace, alternating.
//! - rest: 20,000 ESTABLISHED sockets (both ends of 10,000 connections) in 100 namespaces,
//!   nothing in a teardown state: the daemon's CPU per pass and resident memory, with and
//!   without eBPF.
//! - scale: 100,000 CLOSE_WAIT sockets in 200 namespaces (5 holders each), the daemon in
//!   observe mode with a rule that matches them all: its first and later passes.
//!
//! Run as root: `cargo bench --bench watcher` (defaults: `-- --sockets 100000 --processes
//! 1000 --runs 5 --scenario all`). It unshares its own mount namespace and mounts a bpf
//! filesystem of its own for the pins (`SOCKWARDEN_BPF_PIN_DIR`), so nothing outlives it;
//! the host's `/sys/fs/bpf` is never touched. Needs `ss` and `nsenter`. Prints figures and
//! PASS/MISS per target and exits 0 even when a target is missed; 1 when a fixture could not
//! be built or a run did not do its job (wrong output, a failed pass, a daemon that died).
//! A smoke run: `-- --sockets 2000 --processes 20 --runs 1` (a namespace needs a holder, so
//! small runs get fewer namespaces; `--namespaces`, `--rest-namespaces`, `--scale-namespaces`
//! and `--established` (default: a fifth of `--sockets`) set them).

mod common;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    cpu_of, ensure_single_threaded, last_line, load_average, proc_line, reset_own_peak_rss,
    run_lines, run_once, wait4, wrapped, Context, Fixture, Kind, Layout, Res, Run, Stats,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, Pid};

/// Targets of issue 11.
const TARGET_SPREAD_RATIO: f64 = 1.5;
const TARGET_REST_CPU_MS: f64 = 5.0;
const TARGET_REST_RSS_MIB: f64 = 30.0;
const TARGET_SCALE_PASS_MS: f64 = 1000.0;

/// The daemon at rest runs this many passes; its CPU is sampled when the log shows the end
/// of pass `REST_FROM` and of pass `REST_TO`.
const REST_PASSES: u64 = 20;
const REST_FROM: u64 = 5;
const REST_TO: u64 = 15;
/// The daemon at scale runs this many passes (the first, then the later ones).
const SCALE_PASSES: u64 = 6;
/// How long one daemon pass may take before the run counts as hung.
const PASS_LIMIT: Duration = Duration::from_secs(600);

const PIN_DIR_ENV: &str = "SOCKWARDEN_BPF_PIN_DIR";
const WATCHER_ENV: &str = "SOCKWARDEN_WATCHER";
const LOG_ENV: &str = "SOCKWARDEN_LOG";

/// Observe mode, and a rule that never fires: the daemon watches and plans nothing.
const QUIET_POLICY: &str = "mode = \"observe\"\n\n[[rule]]\nname = \"never-soon\"\n\
    states = [\"close-wait\"]\nolder_than = \"1d\"\naction = \"log\"\n";
/// Observe mode, and a rule every CLOSE_WAIT socket of the fixture matches at once.
const MATCHING_POLICY: &str = "mode = \"observe\"\n\n[[rule]]\nname = \"bench-close-wait\"\n\
    states = [\"close-wait\"]\nolder_than = \"0s\"\naction = \"log\"\n";

const USAGE: &str = "usage: cargo bench --bench watcher [-- --sockets N] [--processes P] \
    [--runs R] [--scenario spread|rest|scale|all] [--namespaces K] [--rest-namespaces K] \
    [--established E] [--scale-namespaces K] (as root)";

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("watcher bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let work = match Work::set_up() {
        Ok(work) => work,
        Err(e) => {
            eprintln!("watcher bench: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "work directory (each run's stderr, the daemons' logs): {}",
        work.dir.display()
    );
    println!(
        "\nwatcher benchmark (issue 11): kernel {}, {} CPUs, load average {}; pins on a private \
         bpffs at {}; each run's stderr and each daemon's log in {}",
        proc_line("/proc/sys/kernel/osrelease"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        work.pins.display(),
        work.dir.display(),
    );
    for (scenario, note) in &args.notes {
        if args.scenarios.contains(scenario) {
            println!("note: {note}");
        }
    }
    let mut failed = false;
    for scenario in &args.scenarios {
        let outcome = match scenario {
            Scenario::Spread => spread(&args, &work),
            Scenario::Rest => rest(&args, &work),
            Scenario::Scale => scale(&args, &work),
        };
        match outcome {
            Ok(outcome) => {
                print!("{}", outcome.report);
                if !outcome.failures.is_empty() {
                    failed = true;
                    println!("{}: some runs did not do their job:", scenario.name());
                    for f in &outcome.failures {
                        println!("  - {f}");
                    }
                }
            }
            Err(e) => {
                failed = true;
                println!("\n{}: FAILED: {e}", scenario.name());
                eprintln!("watcher bench: {}: {e}", scenario.name());
            }
        }
    }
    work.tear_down();
    std::process::exit(i32::from(failed));
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Spread,
    Rest,
    Scale,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Spread => "spread",
            Scenario::Rest => "rest",
            Scenario::Scale => "scale",
        }
    }
}

struct Args {
    runs: usize,
    scenarios: Vec<Scenario>,
    /// Spread's fixtures: the same sockets in one namespace, then in `many`.
    spread_one: Layout,
    spread_many: Layout,
    rest: Layout,
    scale: Layout,
    /// What the defaults were adjusted to, said in the report.
    notes: Vec<(Scenario, String)>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Res<Args> {
    let mut sockets = 100_000;
    let mut processes = 1_000;
    let mut runs = 5;
    let mut scenario = "all".to_string();
    let mut namespaces: Option<usize> = None;
    let mut rest_namespaces: Option<usize> = None;
    let mut established: Option<usize> = None;
    let mut scale_namespaces: Option<usize> = None;
    while let Some(flag) = argv.next() {
        if flag == "--bench" {
            // cargo passes `--bench` to every harness = false bench.
            continue;
        }
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().ctx(format!("{flag} {value:?}"));
        match flag.as_str() {
            "--sockets" => sockets = number()?,
            "--processes" => processes = number()?,
            "--runs" => runs = number()?,
            "--namespaces" => namespaces = Some(number()?),
            "--rest-namespaces" => rest_namespaces = Some(number()?),
            "--established" => established = Some(number()?),
            "--scale-namespaces" => scale_namespaces = Some(number()?),
            "--scenario" => scenario = value,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if runs == 0 {
        return Err("need --runs >= 1".into());
    }
    let mut scenarios = Vec::new();
    for word in scenario.split(',') {
        match word.trim() {
            "all" => scenarios.extend([Scenario::Spread, Scenario::Rest, Scenario::Scale]),
            "spread" => scenarios.push(Scenario::Spread),
            "rest" => scenarios.push(Scenario::Rest),
            "scale" => scenarios.push(Scenario::Scale),
            other => return Err(format!("unknown scenario {other:?}")),
        }
    }
    scenarios.dedup();
    let mut notes = Vec::new();
    // A namespace needs a holder: small runs get fewer namespaces unless told otherwise.
    let mut namespaces_for = |given: Option<usize>, default: usize, holders: usize, what| {
        given.unwrap_or_else(|| {
            if holders < default {
                let note = format!(
                    "{}: {holders} namespaces instead of {default} (each needs a holder process)",
                    Scenario::name(what)
                );
                notes.push((what, note));
            }
            default.min(holders).max(1)
        })
    };
    let close_wait = |namespaces| Layout {
        sockets,
        processes,
        namespaces,
        kind: Kind::CloseWait,
    };
    let spread_one = close_wait(1);
    let spread_many = close_wait(namespaces_for(namespaces, 100, processes, Scenario::Spread));
    let scale = close_wait(namespaces_for(
        scale_namespaces,
        200,
        processes,
        Scenario::Scale,
    ));
    // At rest: a fifth of --sockets, i.e. 20,000 by default (10,000 connections).
    let established = established.unwrap_or(sockets / 5 / 2 * 2);
    let rest_holders = processes.min(established / 2).max(1);
    let rest = Layout {
        sockets: established,
        processes: rest_holders,
        namespaces: namespaces_for(rest_namespaces, 100, rest_holders, Scenario::Rest),
        kind: Kind::Established,
    };
    for (scenario, layouts) in [
        (Scenario::Spread, vec![spread_one, spread_many]),
        (Scenario::Rest, vec![rest]),
        (Scenario::Scale, vec![scale]),
    ] {
        if scenarios.contains(&scenario) {
            for layout in layouts {
                layout.check().ctx(scenario.name())?;
            }
        }
    }
    Ok(Args {
        runs,
        scenarios,
        spread_one,
        spread_many,
        rest,
        scale,
        notes,
    })
}

// ---------------------------------------------------------------------------------------------
// The bench's own mount namespace and bpffs
// ---------------------------------------------------------------------------------------------

/// The work directory and the private bpf filesystem the pins go to.
struct Work {
    dir: PathBuf,
    bpffs: PathBuf,
    /// `SOCKWARDEN_BPF_PIN_DIR` of every sockwarden child.
    pins: PathBuf,
}

impl Work {
    /// Must run first, while the bench has one thread: unshare(CLONE_NEWNS) refuses a
    /// process with several, and every child (fixture, sockwarden) then shares the namespace.
    fn set_up() -> Res<Work> {
        ensure_single_threaded()?;
        let dir = std::env::temp_dir().join(format!("sw-watcher-bench-{}", getpid()));
        std::fs::create_dir(&dir).ctx(format!("mkdir {}", dir.display()))?;
        unshare(CloneFlags::CLONE_NEWNS).ctx("unshare(CLONE_NEWNS) (are you root?)")?;
        // Nothing mounted from now on propagates to the host's mount namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .ctx("make / private (mount --make-rprivate /)")?;
        let bpffs = dir.join("bpffs");
        std::fs::create_dir(&bpffs).ctx(format!("mkdir {}", bpffs.display()))?;
        mount(
            Some("bpf"),
            &bpffs,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .ctx(format!("mount -t bpf bpf {}", bpffs.display()))?;
        let pins = bpffs.join("sockwarden");
        // Still single-threaded: nothing reads the environment concurrently.
        std::env::set_var(PIN_DIR_ENV, &pins);
        // The eBPF rows must be eBPF whatever the caller's environment says.
        std::env::remove_var(WATCHER_ENV);
        Ok(Work { dir, bpffs, pins })
    }

    /// Unpins the index: its programs detach, and the next daemon creates a fresh one.
    fn clear_pins(&self) -> Res<()> {
        match std::fs::remove_dir_all(&self.pins) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("unpin {}: {e}", self.pins.display())),
        }
    }

    /// Whether a daemon left a whole index pinned (its maps and its tracepoint link).
    fn pinned(&self) -> bool {
        ["entered", "complete", "on_state"]
            .iter()
            .all(|name| self.pins.join(name).exists())
    }

    /// Unpins and unmounts (the mount namespace goes with the bench anyway); keeps the rest.
    fn tear_down(&self) {
        let _ = self.clear_pins();
        if umount2(&self.bpffs, MntFlags::MNT_DETACH).is_ok() {
            let _ = std::fs::remove_dir(&self.bpffs);
        }
    }

    fn subdir(&self, name: &str) -> Res<PathBuf> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).ctx(format!("mkdir {}", dir.display()))?;
        Ok(dir)
    }
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// Which watcher a sockwarden child uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watcher {
    Bpf,
    SockDiag,
}

impl Watcher {
    fn label(self) -> &'static str {
        match self {
            Watcher::Bpf => "eBPF",
            Watcher::SockDiag => "sock-diag",
        }
    }
}

/// The watchers in the order round `round` runs them: alternating, so that a change in the
/// machine's load falls on both alike.
/// One round's daemon of a scenario: the pins cleared (a fresh index), announced, started
/// in `dir` and past its first pass (on the eBPF watcher when that is the one asked for).
/// `round`: (this round, of how many).
fn round_daemon(
    work: &Work,
    dir: &Path,
    scenario: &str,
    (round, runs): (usize, usize),
    watcher: Watcher,
    policy: &str,
    interval: &str,
) -> Res<Daemon> {
    work.clear_pins()?;
    eprint!(
        "{scenario}, round {}/{runs}: daemon ({}) ...",
        round + 1,
        watcher.label()
    );
    let run_dir = dir.join(format!("{round}-{}", watcher.label()));
    let mut daemon = Daemon::start(&run_dir, policy, interval, watcher)?;
    daemon.wait_pass(1)?;
    if watcher == Watcher::Bpf {
        daemon.require_bpf()?;
    }
    Ok(daemon)
}

fn watchers_in(round: usize) -> [Watcher; 2] {
    if round % 2 == 0 {
        [Watcher::Bpf, Watcher::SockDiag]
    } else {
        [Watcher::SockDiag, Watcher::Bpf]
    }
}

fn sockwarden() -> String {
    env!("CARGO_BIN_EXE_sockwarden").to_string()
}

/// `sockwarden scan --json` with `watcher`, logging what the index served (debug lines of
/// `sockwarden::sys`, a few per namespace) on stderr; through `env`, which execs it, so
/// wait4's figures are the scan's.
fn scan_command(watcher: Watcher) -> (String, Vec<String>) {
    let filter = match std::env::var(LOG_ENV) {
        Ok(user) if !user.trim().is_empty() => format!("{user},sockwarden::sys=debug"),
        _ => "warn,sockwarden::sys=debug".to_string(),
    };
    let mut argv = vec![format!("{LOG_ENV}={filter}")];
    if watcher == Watcher::SockDiag {
        argv.push(format!("{WATCHER_ENV}=sock-diag"));
    }
    let (program, args) = wrapped((sockwarden(), vec!["scan".into(), "--json".into()]));
    argv.push(program);
    argv.extend(args);
    ("env".to_string(), argv)
}

/// The fixture's namespaces as sockwarden's output names them.
struct BenchNames {
    /// `netns_inode` in `scan --json` -> namespace index.
    inodes: HashMap<u64, usize>,
    /// Any pid in a namespace (a log names it `pid:<lowest pid>(comm)`) -> namespace index.
    pids: HashMap<i32, usize>,
}

impl BenchNames {
    fn of(fixture: &Fixture) -> BenchNames {
        let mut pids = HashMap::new();
        for (i, ns) in fixture.namespaces.iter().enumerate() {
            for pid in std::iter::once(ns.keeper).chain(ns.holders.iter().copied()) {
                pids.insert(pid.as_raw(), i);
            }
        }
        BenchNames {
            inodes: fixture
                .namespaces
                .iter()
                .enumerate()
                .map(|(i, ns)| (ns.inode, i))
                .collect(),
            pids,
        }
    }

    /// The bench namespace a log's `netns` value names, if it is one.
    fn by_name(&self, name: &str) -> Option<usize> {
        let pid = name.strip_prefix("pid:")?.split('(').next()?.parse().ok()?;
        self.pids.get(&pid).copied()
    }
}

/// What one scan printed and logged.
struct ScanRun {
    /// `lines`: the socket lines of the bench's namespaces.
    run: Run,
    /// Socket lines of other namespaces of the host.
    other_lines: usize,
    /// Bench sockets whose age is `kernel-transition` (stamped as they entered the state).
    exact_ages: usize,
    /// Bench namespaces served from the index, and swept into it.
    served: HashSet<usize>,
    swept: HashSet<usize>,
    /// Sockets looked up by id in the bench namespaces.
    looked_up: u64,
    /// "this pass dumps every namespace: …" lines: the index did not serve the scan.
    not_served: Vec<String>,
}

fn scan_once(watcher: Watcher, names: &BenchNames, stderr: &Path) -> Res<ScanRun> {
    let (program, argv) = scan_command(watcher);
    let (mut bench, mut other, mut exact) = (0, 0, 0);
    // Kept cheap (the scan writes faster than a slow reader would read): the inode is near
    // the start of a line.
    let mut on_line = |line: &[u8]| match netns_inode(line) {
        Some(inode) if names.inodes.contains_key(&inode) => {
            bench += 1;
            if std::str::from_utf8(line)
                .is_ok_and(|l| l.contains("\"age_source\":\"kernel-transition\""))
            {
                exact += 1;
            }
        }
        _ => other += 1,
    };
    let (run, status) = run_lines(&program, &argv, stderr, &mut on_line)?;
    if !matches!(status.code(), Some(0 | 1)) {
        return Err(format!(
            "sockwarden scan ({}) exited {status}: {}",
            watcher.label(),
            last_line(stderr).unwrap_or_default()
        ));
    }
    let mut scan = ScanRun {
        run: Run {
            lines: bench,
            ..run
        },
        other_lines: other,
        exact_ages: exact,
        served: HashSet::new(),
        swept: HashSet::new(),
        looked_up: 0,
        not_served: Vec::new(),
    };
    read_index_log(stderr, names, &mut scan);
    Ok(scan)
}

/// The value of `"netns_inode":` in a `scan --json` line (among its first fields).
fn netns_inode(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"netns_inode\":";
    let head = &line[..line.len().min(256)];
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Reads a scan's JSON log lines: which bench namespaces were served from the index or
/// swept into it, and how many sockets were looked up there.
fn read_index_log(stderr: &Path, names: &BenchNames, scan: &mut ScanRun) {
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = value.get("fields").unwrap_or(&value);
        let message = fields.get("message").and_then(|m| m.as_str()).unwrap_or("");
        if message.starts_with("this pass dumps every namespace") {
            scan.not_served.push(message.to_string());
            continue;
        }
        let Some(ns) = fields
            .get("netns")
            .and_then(|n| n.as_str())
            .and_then(|n| names.by_name(n))
        else {
            continue;
        };
        match message {
            "served from the eBPF index" => {
                scan.served.insert(ns);
                scan.looked_up += fields
                    .get("looked_up")
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
            }
            "swept into the eBPF index" => {
                scan.swept.insert(ns);
            }
            _ => {}
        }
    }
}

/// `ss -tan` once in each namespace, the figures summed (CPU and wall) or the largest (RSS).
fn ss_once(fixture: &Fixture, stderr: &Path) -> Res<(Run, Vec<String>)> {
    let mut total = Run {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        maxrss_kib: 0,
        lines: 0,
    };
    let mut wrong = Vec::new();
    for ns in &fixture.namespaces {
        let argv = vec![format!("--net={}", ns.path), "ss".into(), "-tan".into()];
        let (run, status) = run_once("nsenter", &argv, stderr)?;
        if !status.success() {
            return Err(format!(
                "nsenter {} ss -tan exited {status}: {}",
                ns.path,
                last_line(stderr).unwrap_or_default()
            ));
        }
        // The header, the fixture's sockets and the listeners.
        let expected = 1 + ns.sockets + ns.listeners;
        if run.lines != expected {
            wrong.push(format!(
                "ss -tan in {} printed {} lines, expected {expected}",
                ns.path, run.lines
            ));
        }
        total.wall += run.wall;
        total.cpu += run.cpu;
        total.maxrss_kib = total.maxrss_kib.max(run.maxrss_kib);
        total.lines += run.lines;
    }
    Ok((total, wrong))
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: the same sockets in one namespace and in many
// ---------------------------------------------------------------------------------------------

/// A scenario's report, and what did not do its job (exit 1).
struct Outcome {
    report: String,
    failures: Vec<String>,
}

/// One fixture of the spread scenario, measured.
struct SpreadFixture {
    layout: Layout,
    build_secs: f64,
    states: String,
    warmup: ScanRun,
    bpf: Vec<ScanRun>,
    sock_diag: Vec<ScanRun>,
    ss: Vec<Run>,
}

fn spread(args: &Args, work: &Work) -> Res<Outcome> {
    let mut failures = Vec::new();
    let mut measured = Vec::new();
    for layout in [args.spread_one, args.spread_many] {
        measured.push(spread_fixture(args, work, &layout, &mut failures)?);
    }
    Ok(Outcome {
        report: spread_report(args, &measured),
        failures,
    })
}

fn spread_fixture(
    args: &Args,
    work: &Work,
    layout: &Layout,
    failures: &mut Vec<String>,
) -> Res<SpreadFixture> {
    let k = layout.namespaces;
    let dir = work.subdir(&format!("spread-{k}ns"))?;
    work.clear_pins()?;
    // The index first, so that every socket of the fixture is stamped as it enters
    // CLOSE_WAIT. A long interval: one pass, then it only keeps the pins.
    eprint!("spread, {k} namespace(s): daemon ...");
    let mut daemon = Daemon::start(&dir.join("daemon"), QUIET_POLICY, "1h", Watcher::Bpf)?;
    daemon.wait_pass(1)?;
    daemon.require_bpf()?;
    if !work.pinned() {
        return Err(format!(
            "the daemon pinned no index in {} (see {})",
            work.pins.display(),
            daemon.log_path.display()
        ));
    }
    eprint!(" fixture ...");
    let fixture = Fixture::build_layout(layout)?;
    let build_secs = fixture.build_time().as_secs_f64();
    eprint!(" {build_secs:.1} s, warm-up scan ...");
    let names = BenchNames::of(&fixture);
    reset_own_peak_rss();
    let warmup = scan_once(Watcher::Bpf, &names, &dir.join("stderr-warmup"))?;
    let stopped = daemon.stop()?;
    if stopped.status.code() != Some(0) {
        return Err(format!(
            "the daemon exited {} on SIGTERM (see {})",
            stopped.status,
            dir.join("daemon").display()
        ));
    }
    if !work.pinned() {
        return Err("the index's pins went with the daemon".into());
    }
    eprintln!(" done");
    let check = |what: &str, scan: &ScanRun, failures: &mut Vec<String>| {
        if scan.run.lines != layout.sockets {
            failures.push(format!(
                "{what} in {k} namespace(s) printed {} socket lines of the bench, expected {}",
                scan.run.lines, layout.sockets
            ));
        }
    };
    check("the warm-up scan", &warmup, failures);
    let mut measured = SpreadFixture {
        layout: *layout,
        build_secs,
        states: format!("{:?}", fixture.states),
        warmup,
        bpf: Vec::new(),
        sock_diag: Vec::new(),
        ss: Vec::new(),
    };
    for round in 0..args.runs {
        eprint!(
            "spread, {k} namespace(s), round {}/{}:",
            round + 1,
            args.runs
        );
        // Three tools, each round starting with the next.
        for turn in 0..3 {
            match (round + turn) % 3 {
                tool @ (0 | 1) => {
                    let watcher = if tool == 0 {
                        Watcher::Bpf
                    } else {
                        Watcher::SockDiag
                    };
                    let stderr = dir.join(format!("stderr-{round}-{}", watcher.label()));
                    let scan = scan_once(watcher, &names, &stderr)?;
                    eprint!(" {} {:.2} s", watcher.label(), scan.run.wall.as_secs_f64());
                    check(
                        &format!("sockwarden scan ({})", watcher.label()),
                        &scan,
                        failures,
                    );
                    if watcher == Watcher::Bpf {
                        measured.bpf.push(scan);
                    } else {
                        measured.sock_diag.push(scan);
                    }
                }
                _ => {
                    let (run, wrong) = ss_once(&fixture, &dir.join(format!("stderr-{round}-ss")))?;
                    eprint!(" ss {:.2} s", run.wall.as_secs_f64());
                    failures.extend(wrong);
                    measured.ss.push(run);
                }
            }
        }
        eprintln!();
    }
    drop(fixture);
    work.clear_pins()?;
    Ok(measured)
}

fn spread_report(args: &Args, fixtures: &[SpreadFixture]) -> String {
    let mut out = String::new();
    let (one, many) = (&args.spread_one, &args.spread_many);
    let _ = writeln!(
        out,
        "\nspread: {} CLOSE_WAIT sockets held by {} processes, in {} namespace(s) and then in \
         {}; {} runs per command, tools alternating (load average now {})",
        one.sockets,
        one.processes,
        one.namespaces,
        many.namespaces,
        args.runs,
        load_average()
    );
    let _ = writeln!(
        out,
        "each fixture built after a daemon pinned the index (so every socket got an exact \
         stamp as it entered CLOSE_WAIT); the daemon was stopped (SIGTERM) before the \
         measurements, its pins kept"
    );
    for f in fixtures {
        let _ = writeln!(
            out,
            "  fixture in {} namespace(s): built in {:.1} s; ss -tan there shows {}",
            f.layout.namespaces, f.build_secs, f.states
        );
    }
    let _ = writeln!(
        out,
        "\n{:<44} {:>5} {:>8} {:>7} {:>7} {:>7} {:>13} {:>8}",
        "command", "netns", "median s", "min s", "max s", "CPU s", "peak RSS MiB", "lines"
    );
    let row = |out: &mut String, label: &str, k: usize, runs: &[Run], note: String| {
        let s = Stats::of(runs);
        let stable = if s.lines_stable {
            ""
        } else {
            "  (line count varied between runs!)"
        };
        let _ = writeln!(
            out,
            "{label:<44} {k:>5} {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>13.1} {:>8}{note}{stable}",
            s.median, s.min, s.max, s.cpu, s.peak_mib, s.lines
        );
        s
    };
    let runs_of = |scans: &[ScanRun]| scans.iter().map(|s| s.run).collect::<Vec<Run>>();
    let mut bpf_medians = Vec::new();
    let mut sock_diag_medians = Vec::new();
    for f in fixtures {
        let k = f.layout.namespaces;
        let expect = |lines: usize, expected: usize| {
            if lines == expected {
                String::new()
            } else {
                format!("  (expected {expected} lines!)")
            }
        };
        row(
            &mut out,
            "warm-up scan --json (eBPF; sweeps)",
            k,
            &[f.warmup.run],
            expect(f.warmup.run.lines, f.layout.sockets),
        );
        let bpf = row(
            &mut out,
            "sockwarden scan --json (eBPF index)",
            k,
            &runs_of(&f.bpf),
            expect(f.bpf.first().map_or(0, |s| s.run.lines), f.layout.sockets),
        );
        let sd = row(
            &mut out,
            "same, SOCKWARDEN_WATCHER=sock-diag",
            k,
            &runs_of(&f.sock_diag),
            expect(
                f.sock_diag.first().map_or(0, |s| s.run.lines),
                f.layout.sockets,
            ),
        );
        let ss_expected = f.layout.sockets + f.layout.processes + k;
        row(
            &mut out,
            &format!("ss -tan, once per namespace ({k} summed)"),
            k,
            &f.ss,
            expect(f.ss.first().map_or(0, |r| r.lines), ss_expected),
        );
        bpf_medians.push(bpf.median);
        sock_diag_medians.push(sd.median);
    }
    let _ = writeln!(
        out,
        "(sockwarden lines: socket lines of the bench's namespaces; the scans cover every \
         namespace of the host{}. Wall time includes reading stdout through a pipe; peak RSS is \
         wait4's ru_maxrss)",
        other_lines_note(fixtures)
    );
    let _ = writeln!(out, "\nthe index, from the scans' debug log:");
    for f in fixtures {
        let k = f.layout.namespaces;
        let served_all = f
            .bpf
            .iter()
            .filter(|s| s.served.len() == k && s.swept.is_empty())
            .count();
        let looked_up: Vec<u64> = f.bpf.iter().map(|s| s.looked_up).collect();
        let exact: Vec<usize> = f.bpf.iter().map(|s| s.exact_ages).collect();
        let _ = writeln!(
            out,
            "  {k} namespace(s): the warm-up swept {} and served {} of them; {} of {} eBPF \
             scans were served from the index in all {k} (looked up {:?} sockets; \
             kernel-transition ages {:?})",
            f.warmup.swept.len(),
            f.warmup.served.len(),
            served_all,
            f.bpf.len(),
            looked_up,
            exact,
        );
        for why in f
            .warmup
            .not_served
            .iter()
            .chain(f.bpf.iter().flat_map(|s| &s.not_served))
            .collect::<HashSet<_>>()
        {
            let _ = writeln!(out, "    the scan said: {why}");
        }
    }
    let _ = writeln!(out, "\ntargets:");
    if let ([bpf_one, bpf_many], [_, sd_many]) =
        (bpf_medians.as_slice(), sock_diag_medians.as_slice())
    {
        let ratio = bpf_many / bpf_one;
        verdict(
            &mut out,
            &format!(
                "eBPF scan over {} namespaces within {TARGET_SPREAD_RATIO}x of 1 (median)",
                many.namespaces
            ),
            &format!("{ratio:.2}x ({bpf_many:.3} s vs {bpf_one:.3} s)"),
            Some(ratio <= TARGET_SPREAD_RATIO),
        );
        verdict(
            &mut out,
            &format!(
                "what the index avoids: sock-diag over {} namespaces",
                many.namespaces
            ),
            &format!("{sd_many:.3} s, {:.1}x the eBPF scan", sd_many / bpf_many),
            None,
        );
    }
    let all_served = fixtures.iter().all(|f| {
        f.bpf
            .iter()
            .all(|s| s.served.len() == f.layout.namespaces && s.swept.is_empty())
    });
    verdict(
        &mut out,
        "every eBPF scan served from the index, no sweep",
        "",
        Some(all_served),
    );
    // Each namespace's sockets are looked up by id, or dumped where one walk of the host
    // costs less (a namespace holding most of its sockets); the ages are exact either way.
    let all_exact = fixtures
        .iter()
        .all(|f| f.bpf.iter().all(|s| s.exact_ages == f.layout.sockets));
    verdict(
        &mut out,
        "every bench socket served, with an exact age",
        "(kernel-transition)",
        Some(all_exact),
    );
    out
}

fn other_lines_note(fixtures: &[SpreadFixture]) -> String {
    let most = fixtures
        .iter()
        .flat_map(|f| f.bpf.iter().chain(&f.sock_diag).chain([&f.warmup]))
        .map(|s| s.other_lines)
        .max()
        .unwrap_or(0);
    if most == 0 {
        String::new()
    } else {
        format!(", which added up to {most} lines of other namespaces")
    }
}

/// A target's line: PASS/MISS, or "info" for a figure shown beside them.
fn verdict(out: &mut String, target: &str, measured: &str, pass: Option<bool>) {
    let word = match pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "info",
    };
    let _ = writeln!(out, "  {target:<62} {measured:<36} {word}");
}

// ---------------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------------

/// One `pass` line of the daemon's log.
#[derive(Clone, Debug, Default)]
struct Pass {
    n: u64,
    namespaces: usize,
    watched: usize,
    observed: usize,
    duration_ms: u64,
    /// The daemon's user + system CPU, in clock ticks, when the bench read the line.
    ticks: u64,
}

/// The daemon's log lines the bench reads: passes, the watcher it runs, and a pass that the
/// index did not serve.
const WANTED_LINES: [&str; 3] = [
    " pass pass=",
    " watcher ",
    "this pass dumps every namespace",
];

/// A daemon the bench started (in its own directory: policy, audit log, state, log).
struct Daemon {
    child: Child,
    pid: Pid,
    /// Whether it was reaped already (then its pid may belong to someone else).
    reaped: bool,
    log_path: PathBuf,
    log: LogTail,
    passes: Vec<Pass>,
    /// Start-up lines about the watcher, and any "this pass dumps every namespace".
    watcher_lines: Vec<String>,
    not_served: Vec<String>,
}

/// What a stopped daemon left.
struct Stopped {
    status: ExitStatus,
    /// User + system CPU of its whole life, and its peak RSS, from wait4.
    run: Run,
}

impl Daemon {
    fn start(dir: &Path, policy: &str, interval: &str, watcher: Watcher) -> Res<Daemon> {
        std::fs::create_dir_all(dir).ctx(format!("mkdir {}", dir.display()))?;
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy).ctx("write the policy")?;
        let log_path = dir.join("daemon.log");
        let log_file = File::create(&log_path).ctx(format!("create {}", log_path.display()))?;
        let mut cmd = Command::new(sockwarden());
        cmd.args(["run", "--config", "/dev/null", "--interval", interval])
            .arg("--policy")
            .arg(&policy_path)
            .arg("--audit-log")
            .arg(dir.join("audit.jsonl"))
            .arg("--state-dir")
            .arg(dir)
            .args(["--log-format", "text", "--color", "never"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if watcher == Watcher::SockDiag {
            cmd.env(WATCHER_ENV, "sock-diag");
        }
        // SAFETY: the closure runs in the forked child before exec and makes one prctl(2)
        // call, which is async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(|| {
                // Dies with the bench (ctrl-c, panic): nothing is left running.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let child = cmd.spawn().ctx("start sockwarden run")?;
        let pid = Pid::from_raw(i32::try_from(child.id()).ctx("pid")?);
        let log = LogTail {
            file: File::open(&log_path).ctx(format!("open {}", log_path.display()))?,
            pending: Vec::new(),
            last: String::new(),
        };
        Ok(Daemon {
            child,
            pid,
            reaped: false,
            log_path,
            log,
            passes: Vec::new(),
            watcher_lines: Vec::new(),
            not_served: Vec::new(),
        })
    }

    /// Reads the log's new lines; a failed pass is an error.
    fn poll(&mut self) -> Res<()> {
        let mut failed = None;
        let mut lines = Vec::new();
        self.log.poll(&mut |line| {
            if line.contains("pass failed") {
                failed = Some(line.to_string());
            } else if WANTED_LINES.iter().any(|wanted| line.contains(wanted)) {
                lines.push(line.to_string());
            }
        })?;
        if let Some(line) = failed {
            return Err(format!("a daemon pass failed: {line}"));
        }
        if lines.is_empty() {
            return Ok(());
        }
        let ticks = cpu_ticks(self.pid)?;
        for line in lines {
            if line.contains(" pass pass=") {
                self.passes.push(parse_pass(&line, ticks)?);
            } else if line.contains("this pass dumps every namespace") {
                self.not_served.push(line);
            } else {
                self.watcher_lines.push(line);
            }
        }
        Ok(())
    }

    /// Waits until the log shows pass `n` done.
    fn wait_pass(&mut self, n: u64) -> Res<&Pass> {
        let mut deadline = Instant::now() + PASS_LIMIT;
        let mut seen = self.passes.len();
        loop {
            self.poll()?;
            if self.passes.len() > seen {
                seen = self.passes.len();
                deadline = Instant::now() + PASS_LIMIT;
            }
            if let Some(i) = self.passes.iter().position(|p| p.n >= n) {
                return Ok(&self.passes[i]);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = true;
                return Err(format!(
                    "the daemon exited {status} before pass {n}: {} (see {})",
                    self.log.last,
                    self.log_path.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no daemon pass in {PASS_LIMIT:?} (waiting for pass {n}; see {})",
                    self.log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The start-up line says the eBPF watcher runs with an index.
    fn require_bpf(&self) -> Res<()> {
        if self
            .watcher_lines
            .iter()
            .any(|l| l.contains("watcher bpf:") && !l.contains("no eBPF index"))
        {
            Ok(())
        } else {
            Err(format!(
                "the daemon does not run the eBPF watcher with an index: {}",
                self.watcher_lines.join(" | ")
            ))
        }
    }

    /// `(VmRSS, VmHWM)` in KiB, from /proc/<pid>/status.
    fn memory_kib(&self) -> Res<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).ctx(format!("read {path}"))?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .ok_or(format!("no {key} in {path}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM (it finishes the pass in flight), then its exit status and rusage.
    fn stop(mut self) -> Res<Stopped> {
        kill(self.pid, Signal::SIGTERM).ctx("stop the daemon (SIGTERM)")?;
        let deadline = Instant::now() + PASS_LIMIT;
        while !is_zombie(self.pid) {
            if Instant::now() > deadline {
                let _ = kill(self.pid, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its last lines, read while it can still be sampled (a zombie's /proc/<pid>/stat
        // is still there): a pass that failed at the end is an error too.
        self.poll()?;
        let (status, rusage) = wait4(self.child.id())?;
        self.reaped = true;
        Ok(Stopped {
            status,
            run: Run {
                wall: Duration::ZERO,
                cpu: cpu_of(&rusage),
                maxrss_kib: rusage.ru_maxrss,
                lines: 0,
            },
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.reaped {
            // Our own child, not reaped yet: the pid is still its.
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = wait4(self.child.id());
        }
    }
}

/// The new complete lines of a growing log file.
struct LogTail {
    file: File,
    pending: Vec<u8>,
    /// The last non-empty line read, for error messages.
    last: String,
}

impl LogTail {
    fn poll(&mut self, on_line: &mut dyn FnMut(&str)) -> Res<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.file.read(&mut buf).ctx("read the daemon's log")?;
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            if !line.trim().is_empty() {
                on_line(line);
                line.clone_into(&mut self.last);
            }
        }
        Ok(())
    }
}

/// A `pass` line: `… pass pass=N namespaces=.. watched=.. … duration_ms=..`.
fn parse_pass(line: &str, ticks: u64) -> Res<Pass> {
    let mut pass = Pass {
        ticks,
        ..Pass::default()
    };
    for word in line.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let number = || value.parse::<u64>().ctx(format!("{key} in {line:?}"));
        match key {
            "pass" => pass.n = number()?,
            "namespaces" => pass.namespaces = usize::try_from(number()?).ctx("namespaces")?,
            "watched" => pass.watched = usize::try_from(number()?).ctx("watched")?,
            "observed" => pass.observed = usize::try_from(number()?).ctx("observed")?,
            "duration_ms" => pass.duration_ms = number()?,
            _ => {}
        }
    }
    if pass.n == 0 {
        return Err(format!("no pass number in {line:?}"));
    }
    Ok(pass)
}

/// utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15).
fn cpu_ticks(pid: Pid) -> Res<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).ctx(format!("read the daemon's cpu: {path}"))?;
    // After the command name (which may hold spaces), field 3 (the state) comes first.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| -> Res<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("read the daemon's cpu: field {} of {path}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Whether the process has exited (a zombie waiting to be reaped) or is gone.
fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Milliseconds per clock tick (`sysconf(_SC_CLK_TCK)`, 100 Hz almost everywhere).
fn ms_per_tick() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => 1000.0 / hz as f64,
        _ => 10.0,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: the daemon at rest
// ---------------------------------------------------------------------------------------------

/// One daemon run at rest.
struct RestRun {
    /// CPU per pass over passes REST_FROM+1..=REST_TO, from /proc/<pid>/stat.
    cpu_ms: f64,
    /// The log's duration_ms, median over the same passes, and of the first pass.
    pass_ms: f64,
    first_ms: u64,
    rss_kib: u64,
    hwm_kib: u64,
    stopped: Stopped,
    not_served: usize,
}

/// Build a scenario's fixture, saying so on stderr: the fixture and its build time in
/// seconds.
fn announced_fixture(scenario: &str, state: &str, layout: &Layout) -> Res<(Fixture, f64)> {
    eprint!(
        "{scenario}: fixture of {} {state} sockets in {} namespaces ...",
        layout.sockets, layout.namespaces
    );
    let fixture = Fixture::build_layout(layout)?;
    let build_secs = fixture.build_time().as_secs_f64();
    eprintln!(" {build_secs:.1} s");
    Ok((fixture, build_secs))
}

fn rest(args: &Args, work: &Work) -> Res<Outcome> {
    let layout = args.rest;
    let dir = work.subdir("rest")?;
    let (fixture, build_secs) = announced_fixture("rest", "ESTABLISHED", &layout)?;
    let mut runs: HashMap<&str, Vec<RestRun>> = HashMap::new();
    let mut failures = Vec::new();
    for round in 0..args.runs {
        for watcher in watchers_in(round) {
            let mut daemon = round_daemon(
                work,
                &dir,
                "rest",
                (round, args.runs),
                watcher,
                QUIET_POLICY,
                "1s",
            )?;
            let from = daemon.wait_pass(REST_FROM)?.ticks;
            let to = daemon.wait_pass(REST_TO)?.ticks;
            daemon.wait_pass(REST_PASSES)?;
            let (rss_kib, hwm_kib) = daemon.memory_kib()?;
            let window: Vec<f64> = daemon
                .passes
                .iter()
                .filter(|p| p.n > REST_FROM && p.n <= REST_TO)
                .map(|p| p.duration_ms as f64)
                .collect();
            let first_ms = daemon.passes.first().map_or(0, |p| p.duration_ms);
            if let Some(p) = daemon
                .passes
                .iter()
                .find(|p| p.namespaces < layout.namespaces)
            {
                failures.push(format!(
                    "rest ({}): pass {} saw {} namespaces, the fixture has {}",
                    watcher.label(),
                    p.n,
                    p.namespaces,
                    layout.namespaces
                ));
            }
            let not_served = daemon.not_served.len();
            let stopped = daemon.stop()?;
            if stopped.status.code() != Some(0) {
                failures.push(format!(
                    "rest ({}): the daemon exited {} on SIGTERM",
                    watcher.label(),
                    stopped.status
                ));
            }
            let cpu_ms = (to - from) as f64 * ms_per_tick() / (REST_TO - REST_FROM) as f64;
            eprintln!(" {cpu_ms:.1} ms CPU per pass");
            runs.entry(watcher.label()).or_default().push(RestRun {
                cpu_ms,
                pass_ms: median(&window),
                first_ms,
                rss_kib,
                hwm_kib,
                stopped,
                not_served,
            });
        }
    }
    let states = format!("{:?}", fixture.states);
    drop(fixture);
    work.clear_pins()?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nat rest: {} ESTABLISHED sockets ({} loopback connections, both ends held by {} \
         processes) in {} namespaces, nothing in a teardown state; sockwarden run, quiet \
         observe policy, --interval 1s, {REST_PASSES} passes; {} runs per watcher, alternating \
         (load average now {})",
        layout.sockets,
        layout.sockets / 2,
        layout.processes,
        layout.namespaces,
        args.runs,
        load_average()
    );
    let _ = writeln!(
        out,
        "  fixture built in {build_secs:.1} s; ss -tan in its namespaces shows {states}"
    );
    let _ = writeln!(
        out,
        "\n{:<10} {:>26} {:>20} {:>9} {:>10} {:>10} {:>12}",
        "watcher",
        "CPU ms/pass med (min-max)",
        "pass ms med (min-max)",
        "1st pass",
        "VmRSS MiB",
        "VmHWM MiB",
        "total CPU s"
    );
    let mut bpf_cpu = None;
    let mut bpf_rss = None;
    for label in [Watcher::Bpf.label(), Watcher::SockDiag.label()] {
        let Some(rs) = runs.get(label) else { continue };
        let cpu: Vec<f64> = rs.iter().map(|r| r.cpu_ms).collect();
        let pass: Vec<f64> = rs.iter().map(|r| r.pass_ms).collect();
        let first: Vec<f64> = rs.iter().map(|r| r.first_ms as f64).collect();
        let rss = rs.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let hwm = rs.iter().map(|r| r.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
        let total: Vec<f64> = rs.iter().map(|r| r.stopped.run.cpu.as_secs_f64()).collect();
        let ((cpu_lo, cpu_hi), (pass_lo, pass_hi)) = (min_max(&cpu), min_max(&pass));
        let _ = writeln!(
            out,
            "{label:<10} {:>26} {:>20} {:>9} {rss:>10.1} {hwm:>10.1} {:>12.2}",
            format!("{:.1} ({cpu_lo:.1}-{cpu_hi:.1})", median(&cpu)),
            format!("{:.0} ({pass_lo:.0}-{pass_hi:.0})", median(&pass)),
            format!("{:.0} ms", median(&first)),
            median(&total),
        );
        if label == Watcher::Bpf.label() {
            bpf_cpu = Some(median(&cpu));
            bpf_rss = Some((rss, hwm));
            let dumps: usize = rs.iter().map(|r| r.not_served).sum();
            if dumps > 0 {
                let _ = writeln!(
                    out,
                    "  (the eBPF daemon logged \"this pass dumps every namespace\" {dumps} \
                     time(s): see its log)"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "(CPU: /proc/<pid>/stat utime+stime when the log showed pass {REST_FROM} and pass \
         {REST_TO}, over {} passes; pass ms: the log's duration_ms over the same passes; VmRSS \
         and VmHWM from /proc/<pid>/status after pass {REST_PASSES}, the largest of the runs; \
         total CPU: wait4, start to stop, median)",
        REST_TO - REST_FROM
    );
    let _ = writeln!(out, "\ntargets:");
    if let (Some(cpu), Some((rss, hwm))) = (bpf_cpu, bpf_rss) {
        verdict(
            &mut out,
            &format!("eBPF daemon pass under {TARGET_REST_CPU_MS} ms CPU (median)"),
            &format!("{cpu:.2} ms"),
            Some(cpu < TARGET_REST_CPU_MS),
        );
        verdict(
            &mut out,
            &format!("eBPF daemon resident under {TARGET_REST_RSS_MIB} MiB (VmRSS)"),
            &format!("{rss:.1} MiB (peak VmHWM {hwm:.1})"),
            Some(rss < TARGET_REST_RSS_MIB),
        );
    }
    Ok(Outcome {
        report: out,
        failures,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: the daemon at scale
// ---------------------------------------------------------------------------------------------

/// One daemon run at scale.
struct ScaleRun {
    first_ms: u64,
    /// CPU of the first pass, counted from the daemon's start (programs loaded, etc.).
    first_cpu_ms: f64,
    /// The later passes: the log's duration_ms, and CPU between consecutive pass lines.
    later_ms: Vec<f64>,
    later_cpu_ms: Vec<f64>,
    first_observed: usize,
    later_observed: usize,
    hwm_kib: u64,
    not_served: usize,
}

fn scale(args: &Args, work: &Work) -> Res<Outcome> {
    let layout = args.scale;
    let dir = work.subdir("scale")?;
    let (fixture, build_secs) = announced_fixture("scale", "CLOSE_WAIT", &layout)?;
    let tick_ms = ms_per_tick();
    let mut runs: HashMap<&str, Vec<ScaleRun>> = HashMap::new();
    let mut failures = Vec::new();
    for round in 0..args.runs {
        for watcher in watchers_in(round) {
            // A fresh index each time: the fixture predates it, so the first pass sweeps.
            let mut daemon = round_daemon(
                work,
                &dir,
                "scale",
                (round, args.runs),
                watcher,
                MATCHING_POLICY,
                "2s",
            )?;
            daemon.wait_pass(SCALE_PASSES)?;
            let (_, hwm_kib) = daemon.memory_kib()?;
            let passes = daemon.passes.clone();
            let not_served = daemon.not_served.len();
            let stopped = daemon.stop()?;
            if stopped.status.code() != Some(0) {
                failures.push(format!(
                    "scale ({}): the daemon exited {} on SIGTERM",
                    watcher.label(),
                    stopped.status
                ));
            }
            for p in passes.iter().filter(|p| p.watched < layout.sockets) {
                failures.push(format!(
                    "scale ({}): pass {} watched {} sockets, the fixture has {} in CLOSE_WAIT",
                    watcher.label(),
                    p.n,
                    p.watched,
                    layout.sockets
                ));
            }
            let Some(first) = passes.first() else {
                return Err("the daemon logged no pass".into());
            };
            let later: Vec<&Pass> = passes.iter().skip(1).collect();
            let later_cpu_ms = passes
                .windows(2)
                .map(|w| (w[1].ticks.saturating_sub(w[0].ticks)) as f64 * tick_ms)
                .collect();
            let run = ScaleRun {
                first_ms: first.duration_ms,
                first_cpu_ms: first.ticks as f64 * tick_ms,
                later_ms: later.iter().map(|p| p.duration_ms as f64).collect(),
                later_cpu_ms,
                first_observed: first.observed,
                later_observed: later.iter().map(|p| p.observed).sum(),
                hwm_kib,
                not_served,
            };
            eprintln!(
                " first pass {} ms, later {:.0} ms",
                run.first_ms,
                median(&run.later_ms)
            );
            runs.entry(watcher.label()).or_default().push(run);
        }
    }
    let states = format!("{:?}", fixture.states);
    drop(fixture);
    work.clear_pins()?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nat scale: {} CLOSE_WAIT sockets held by {} processes in {} namespaces; sockwarden \
         run in observe mode, a rule matching them all (older_than 0s, log), --interval 2s, \
         {SCALE_PASSES} passes, a fresh index each run (the first pass sweeps); {} runs per \
         watcher, alternating (load average now {})",
        layout.sockets,
        layout.processes,
        layout.namespaces,
        args.runs,
        load_average()
    );
    let _ = writeln!(
        out,
        "  fixture built in {build_secs:.1} s; ss -tan in its namespaces shows {states}"
    );
    let _ = writeln!(
        out,
        "\n{:<10} {:>14} {:>14} {:>24} {:>18} {:>10} {:>18}",
        "watcher",
        "1st pass ms",
        "1st CPU ms",
        "later pass ms med (min-max)",
        "later CPU ms/pass",
        "VmHWM MiB",
        "observed 1st/later"
    );
    let mut bpf_later = None;
    let mut re_recorded = false;
    for label in [Watcher::Bpf.label(), Watcher::SockDiag.label()] {
        let Some(rs) = runs.get(label) else { continue };
        let first: Vec<f64> = rs.iter().map(|r| r.first_ms as f64).collect();
        let first_cpu: Vec<f64> = rs.iter().map(|r| r.first_cpu_ms).collect();
        // The later passes of every run: median, min and max.
        let later: Vec<f64> = rs.iter().flat_map(|r| r.later_ms.iter().copied()).collect();
        let later_cpu: Vec<f64> = rs
            .iter()
            .flat_map(|r| r.later_cpu_ms.iter().copied())
            .collect();
        let (lo, hi) = min_max(&later);
        let hwm = rs.iter().map(|r| r.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
        let observed = rs.first().map_or(String::new(), |r| {
            format!("{}/{}", r.first_observed, r.later_observed)
        });
        re_recorded |= rs.iter().any(|r| r.later_observed > 0);
        let _ = writeln!(
            out,
            "{label:<10} {:>14.0} {:>14.0} {:>24} {:>18.0} {hwm:>10.1} {observed:>18}",
            median(&first),
            median(&first_cpu),
            format!("{:.0} ({lo:.0}-{hi:.0})", median(&later)),
            median(&later_cpu),
        );
        if label == Watcher::Bpf.label() {
            bpf_later = Some(median(&later));
            let dumps: usize = rs.iter().map(|r| r.not_served).sum();
            if dumps > 0 {
                let _ = writeln!(
                    out,
                    "  (the eBPF daemon logged \"this pass dumps every namespace\" {dumps} \
                     time(s): see its log)"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "(pass ms: the log's duration_ms; CPU: /proc/<pid>/stat utime+stime when each pass \
         line appeared, the first pass counted from the daemon's start; observed: would-be \
         actions recorded on the first pass / on the later ones, first run)"
    );
    let _ = writeln!(out, "\ntargets:");
    if let Some(ms) = bpf_later {
        verdict(
            &mut out,
            &format!(
                "eBPF daemon later pass under {:.0} s (median duration_ms)",
                TARGET_SCALE_PASS_MS / 1000.0
            ),
            &format!("{ms:.0} ms"),
            Some(ms < TARGET_SCALE_PASS_MS),
        );
    }
    let all_first = runs
        .values()
        .flatten()
        .all(|r| r.first_observed >= layout.sockets);
    verdict(
        &mut out,
        "the first pass records each would-be action, later ones none",
        "",
        Some(all_first && !re_recorded),
    );
    Ok(Outcome {
        report: out,
        failures,
    })
}
