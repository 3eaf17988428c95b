//! Incident-scale benchmark (issue 9): 100,000 CLOSE_WAIT sockets held by 1,000 processes
//! in a throwaway network namespace, destroyed by `sockwarden clean` and by `ss -tnK`,
//! alternately, each on a fresh copy of the fixture; and the daemon in enforce mode acting
//! on all of them in one pass. Prints wall time, CPU and peak RSS side by side, the third
//! clean on a trail that already holds two earlier cleanups, and PASS/MISS per target.
//!
//! Run as root: `cargo bench --bench destroy` (defaults: `-- --sockets 100000 --processes
//! 1000 --runs 3`). Needs `ss` and `nsenter`. Exits 0 even when a target is missed, 1 when
//! a fixture could not be built or a run did not do its job (sockets left, trail broken).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    cpu_of, last_line, load_average, proc_line, reset_own_peak_rss, run_once, ss_states, wait4,
    wait_quiet, wrapped, Context, Fixture, Res, Run, Sizes, Stats,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::getpid;

/// Targets of issue 9.
const TARGET_RSS_MIB: f64 = 64.0;

const USAGE: &str =
    "usage: cargo bench --bench destroy [-- --sockets N] [--processes P] [--runs R] (as root)";

struct Args {
    sizes: Sizes,
    runs: usize,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Res<Args> {
    let mut sockets = 100_000;
    let mut processes = 1_000;
    let mut runs = 3;
    while let Some(flag) = argv.next() {
        let slot = match flag.as_str() {
            "--bench" => continue,
            "--sockets" => &mut sockets,
            "--processes" => &mut processes,
            "--runs" => &mut runs,
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        *slot = value.parse().ctx(format!("{flag} {value:?}"))?;
    }
    let sizes = Sizes { sockets, processes };
    sizes.check()?;
    if runs == 0 {
        return Err("need --runs >= 1".into());
    }
    Ok(Args { sizes, runs })
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("destroy bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match bench(&args) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("destroy bench: {e}");
            std::process::exit(1);
        }
    }
}

/// What one destroy run did.
struct Destroyed {
    run: Run,
    /// CLOSE_WAIT sockets left in the namespace afterwards.
    left: usize,
}

fn bench(args: &Args) -> Res<String> {
    let work = tempdir()?;
    eprintln!(
        "work directory (trails, each run's stderr): {}",
        work.display()
    );
    let trail = work.join("audit").join("audit.jsonl");
    std::fs::create_dir(work.join("audit")).ctx("mkdir audit")?;
    let mut cleans: Vec<Destroyed> = Vec::new();
    let mut ss: Vec<Destroyed> = Vec::new();
    let mut fixture_times = Vec::new();
    for round in 0..args.runs {
        // Alternate which goes first, so that drift on a shared machine hits both alike.
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for sockwarden in order {
            let fixture = Fixture::build(&args.sizes)?;
            fixture_times.push(fixture.build_time());
            let busy = wait_quiet(Duration::from_secs(5));
            reset_own_peak_rss();
            let (program, argv) = if sockwarden {
                wrapped(clean_command(&fixture.netns, &trail))
            } else {
                ss_command(&fixture.netns)
            };
            eprint!(
                "round {round}: {} ...",
                if sockwarden {
                    "sockwarden clean"
                } else {
                    "ss -tnK"
                }
            );
            // Each run's stderr is kept (SOCKWARDEN_LOG=debug puts phase timings there).
            let tool = if sockwarden { "clean" } else { "ss" };
            let stderr = work.join(format!("stderr-{round}-{tool}"));
            let (run, status) = run_once(&program, &argv, &stderr)?;
            let ok = status.code() == Some(0);
            if !ok {
                return Err(format!(
                    "{program} exited {status}: {}",
                    last_line(&stderr).unwrap_or_default()
                ));
            }
            let left = ss_states(&fixture.netns)?
                .get("CLOSE-WAIT")
                .copied()
                .unwrap_or(0);
            eprintln!(
                " {:.2} s, {} left (machine {:.0}% busy just before)",
                run.wall.as_secs_f64(),
                left,
                busy * 100.0
            );
            let d = Destroyed { run, left };
            if sockwarden {
                cleans.push(d);
            } else {
                ss.push(d);
            }
            drop(fixture);
        }
    }
    let verify = verify_trail(&trail)?;
    let daemon = daemon_pass(args, &work)?;
    Ok(report(args, &cleans, &ss, &fixture_times, &verify, &daemon))
}

fn tempdir() -> Res<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sw-destroy-bench-{}", getpid()));
    std::fs::create_dir(&dir).ctx(format!("mkdir {}", dir.display()))?;
    Ok(dir)
}

fn clean_command(netns: &str, trail: &Path) -> (String, Vec<String>) {
    let argv = [
        "clean",
        "--netns",
        netns,
        "--state",
        "close-wait",
        "--action",
        "destroy",
        "--yes",
        "--lift-budgets",
        "--audit-log",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([trail.display().to_string()])
    .collect();
    (env!("CARGO_BIN_EXE_sockwarden").to_string(), argv)
}

fn ss_command(netns: &str) -> (String, Vec<String>) {
    (
        "nsenter".to_string(),
        [format!("--net={netns}")]
            .into_iter()
            .chain(["ss", "-tnK", "state", "close-wait"].map(String::from))
            .collect(),
    )
}

/// `audit verify` of the trail the cleans wrote, and its entries per kind.
struct Verified {
    intact: bool,
    report: String,
    intents: usize,
    outcomes: usize,
    destroyed: usize,
    bytes: u64,
}

fn verify_trail(trail: &Path) -> Res<Verified> {
    let bin = env!("CARGO_BIN_EXE_sockwarden");
    let out = Command::new(bin)
        .args(["audit", "verify", "--audit-log"])
        .arg(trail)
        .output()
        .ctx("audit verify")?;
    let report = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut child = Command::new(bin)
        .args(["audit", "show", "--json", "--audit-log"])
        .arg(trail)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ctx("audit show")?;
    let (mut intents, mut outcomes, mut destroyed) = (0, 0, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.ctx("read audit show")?;
            if line.contains("\"kind\":\"intent\"") {
                intents += 1;
            } else if line.contains("\"kind\":\"outcome\"") {
                outcomes += 1;
                if line.contains("\"result\":\"destroyed\"") {
                    destroyed += 1;
                }
            }
        }
    }
    let _ = child.wait();
    let bytes = std::fs::read_dir(trail.parent().unwrap_or(Path::new(".")))
        .ctx("list the trail")?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(Verified {
        intact: out.status.success(),
        report,
        intents,
        outcomes,
        destroyed,
        bytes,
    })
}

/// The daemon, enforce mode, a budget that lets it act on everything: start it on a fresh
/// fixture, wait for its first pass, stop it; its pass time from its log, its peak RSS and
/// CPU from wait4.
struct DaemonPass {
    run: Run,
    pass_ms: Option<u64>,
    left: usize,
}

fn daemon_pass(args: &Args, work: &Path) -> Res<DaemonPass> {
    let fixture = Fixture::build(&args.sizes)?;
    let dir = work.join("daemon");
    std::fs::create_dir(&dir).ctx("mkdir daemon")?;
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[guards]\nmax_destroys_per_minute = 10000000\n\
         [[rule]]\nname = \"leak\"\nstates = [\"close-wait\"]\nolder_than = \"0s\"\naction = \"destroy\"\n",
    )
    .ctx("write policy")?;
    reset_own_peak_rss();
    eprint!("daemon pass ...");
    let log = dir.join("daemon.log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockwarden"))
        .args([
            "run",
            "--config",
            "/dev/null",
            "--interval",
            "1h",
            "--policy",
        ])
        .arg(&policy)
        .arg("--netns")
        .arg(&fixture.netns)
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .arg("--state-dir")
        .arg(&dir)
        .args(["--log-format", "text"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).ctx("daemon log")?)
        .spawn()
        .ctx("start the daemon")?;
    let pass_ms = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains(" pass ") || l.contains("pass failed"))
        {
            break line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("duration_ms="))
                .and_then(|v| v.parse().ok());
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            return Err("the daemon did not finish a pass in 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ctx("pid")?);
    kill(pid, Signal::SIGTERM).ctx("stop the daemon")?;
    let (_, rusage) = wait4(child.id())?;
    let left = ss_states(&fixture.netns)?
        .get("CLOSE-WAIT")
        .copied()
        .unwrap_or(0);
    eprintln!(" {left} left");
    Ok(DaemonPass {
        run: Run {
            wall: started.elapsed(),
            cpu: cpu_of(&rusage),
            maxrss_kib: rusage.ru_maxrss,
            lines: 0,
        },
        pass_ms,
        left,
    })
}

fn report(
    args: &Args,
    cleans: &[Destroyed],
    ss: &[Destroyed],
    fixture_times: &[Duration],
    verify: &Verified,
    daemon: &DaemonPass,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ndestroy benchmark: {} CLOSE_WAIT sockets held by {} processes, {} runs each, alternating \
         (kernel {}, {} CPUs, load average {}); each fixture built in {:.1}-{:.1} s",
        args.sizes.sockets,
        args.sizes.processes,
        args.runs,
        proc_line("/proc/sys/kernel/osrelease"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        fixture_times.iter().min().map_or(0.0, |d| d.as_secs_f64()),
        fixture_times.iter().max().map_or(0.0, |d| d.as_secs_f64()),
    );
    let _ = writeln!(
        out,
        "\n{:<44} {:>8} {:>8} {:>8} {:>8} {:>13} {:>6}",
        "command", "median s", "min s", "max s", "CPU s", "peak RSS MiB", "left"
    );
    let row = |out: &mut String, label: &str, runs: &[&Destroyed]| {
        let rs: Vec<Run> = runs.iter().map(|d| d.run).collect();
        let s = Stats::of(&rs);
        let left: usize = runs.iter().map(|d| d.left).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "{label:<44} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>13.1} {:>6}",
            s.median, s.min, s.max, s.cpu, s.peak_mib, left
        );
        s
    };
    let sw = row(
        &mut out,
        "sockwarden clean --action destroy --yes",
        &cleans.iter().collect::<Vec<_>>(),
    );
    let ssk = row(
        &mut out,
        "ss -tnK state close-wait",
        &ss.iter().collect::<Vec<_>>(),
    );
    for (i, c) in cleans.iter().enumerate() {
        let _ = writeln!(
            out,
            "  clean run {} (trail already holding {} cleanup(s)): {:.3} s, {:.3} s CPU, {:.1} MiB",
            i + 1,
            i,
            c.run.wall.as_secs_f64(),
            c.run.cpu.as_secs_f64(),
            c.run.maxrss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "  ss -tnK runs: {}",
        ss.iter()
            .map(|d| format!(
                "{:.3} s / {:.1} MiB",
                d.run.wall.as_secs_f64(),
                d.run.maxrss_kib as f64 / 1024.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "{:<44} {:>8} {:>8} {:>8} {:>8.3} {:>13.1} {:>6}",
        "sockwarden run (enforce, one pass, wall to stop)",
        format!("{:.3}", daemon.run.wall.as_secs_f64()),
        "",
        "",
        daemon.run.cpu.as_secs_f64(),
        daemon.run.maxrss_kib as f64 / 1024.0,
        daemon.left
    );
    let _ = writeln!(
        out,
        "  daemon pass time (its log's duration_ms): {}",
        daemon
            .pass_ms
            .map_or("?".into(), |ms| format!("{:.3} s", ms as f64 / 1000.0))
    );
    let _ = writeln!(
        out,
        "\ntrail after {} cleans: {} intent and {} outcome entries ({} destroyed), {:.1} MB on disk; {}",
        cleans.len(),
        verify.intents,
        verify.outcomes,
        verify.destroyed,
        verify.bytes as f64 / 1e6,
        verify.report
    );
    let every_clean_faster = cleans
        .iter()
        .all(|c| c.run.wall < ss.iter().map(|d| d.run.wall).min().unwrap_or_default());
    let _ = writeln!(out, "\ntargets:");
    let verdict = |out: &mut String, target: &str, measured: String, pass: bool| {
        let _ = writeln!(
            out,
            "  {target:<52} {measured:<30} {}",
            if pass { "PASS" } else { "MISS" }
        );
    };
    verdict(
        &mut out,
        "clean faster than ss -tnK (median)",
        format!("{:.2}x the time of ss -tnK", sw.median / ssk.median),
        sw.median < ssk.median,
    );
    verdict(
        &mut out,
        "every clean faster than the fastest ss -tnK",
        String::new(),
        every_clean_faster,
    );
    let max_rss = cleans.iter().map(|c| c.run.maxrss_kib).max().unwrap_or(0) as f64 / 1024.0;
    verdict(
        &mut out,
        &format!("every clean under {TARGET_RSS_MIB} MiB peak RSS"),
        format!("max {max_rss:.1} MiB"),
        max_rss < TARGET_RSS_MIB,
    );
    verdict(
        &mut out,
        "every socket destroyed, by both",
        format!(
            "{} / {} left",
            cleans.iter().map(|c| c.left).max().unwrap_or(0),
            ss.iter().map(|c| c.left).max().unwrap_or(0)
        ),
        cleans.iter().all(|c| c.left == 0) && ss.iter().all(|c| c.left == 0),
    );
    verdict(
        &mut out,
        "the chain verifies, one intent and outcome per socket",
        format!("{} intents", verify.intents),
        verify.intact
            && verify.intents == cleans.len() * args.sizes.sockets
            && verify.outcomes == verify.intents,
    );
    let daemon_rss = daemon.run.maxrss_kib as f64 / 1024.0;
    verdict(
        &mut out,
        &format!("daemon pass on all of them under {TARGET_RSS_MIB} MiB"),
        format!("{daemon_rss:.1} MiB, {} left", daemon.left),
        daemon_rss < TARGET_RSS_MIB && daemon.left == 0,
    );
    out
}
