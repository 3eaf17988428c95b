//! `sockwarden scan`: list stuck sockets with owners and ages (read-only).

use std::io::{self, IsTerminal, Write};
use std::time::SystemTime;

use crate::cli::{exit, ScanArgs};
use crate::model::{AgeSource, TcpState};
use crate::output;
use crate::scan::{self, Observations};
use crate::sys::System;

pub fn run(args: &ScanArgs, sys: &dyn System) -> anyhow::Result<i32> {
    let filter = args.select.filter();
    let snap = scan::scan(sys, &filter, &Observations::new(), SystemTime::now())?;

    let stdout = io::stdout();
    let width = stdout.is_terminal().then(terminal_width).flatten();
    let mut out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    match (args.summary, args.json) {
        (false, true) => output::sockets_json(&mut out, &snap)?,
        (true, true) => output::json_lines(&mut out, "socket-group", output::summarize(&snap))?,
        (false, false) if snap.sockets.is_empty() => {}
        (false, false) => output::sockets_table(&mut out, &snap, width)?,
        (true, false) => output::summary_table(&mut out, &output::summarize(&snap), width)?,
    }
    out.flush()?;
    drop(out);

    // Notes for people go to stderr so that stdout stays clean for scripts.
    for warning in &snap.warnings {
        eprintln!("warning: {}", crate::output::escape(warning));
    }
    let unseen = if snap.unseen.is_empty() {
        String::new()
    } else {
        format!(
            "; NOT seen: {} (see the warnings above): this is not an all-clear",
            output::escape(&snap.unseen.join(", "))
        )
    };
    if !args.json {
        let ns = snap.namespaces.len();
        if snap.sockets.is_empty() {
            eprintln!("no stuck sockets in {ns} network namespace(s){unseen}");
        } else if snap
            .sockets
            .iter()
            .any(|s| s.age.source == AgeSource::Observed && s.age.secs == 0)
        {
            eprintln!(
                "{} socket(s) in {ns} namespace(s); ages marked ≥0s have no kernel evidence and a \
                 one-shot scan cannot observe them (the daemon can){unseen}",
                snap.sockets.len()
            );
        } else {
            eprintln!(
                "{} socket(s) in {ns} network namespace(s){unseen}",
                snap.sockets.len()
            );
        }
        if !snap.sockets.is_empty() {
            // In the kernel's order of states, whatever order the sockets came in.
            let mut states: Vec<TcpState> = snap.sockets.iter().map(|s| s.socket.state).collect();
            states.sort();
            states.dedup();
            eprintln!("{}", next_steps(&states));
        }
    } else if !snap.unseen.is_empty() {
        eprintln!(
            "warning: NOT seen: {}",
            output::escape(&snap.unseen.join(", "))
        );
    }
    Ok(if !snap.sockets.is_empty() {
        exit::FOUND
    } else if !snap.unseen.is_empty() {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// What to do next when something is stuck (`states`: those seen): see what
/// the policies would do, then plan a cleanup without touching anything.
pub fn next_steps(states: &[TcpState]) -> String {
    let selectors: Vec<String> = states
        .iter()
        .map(|s| format!("--state {}", s.name()))
        .collect();
    format!(
        "next: `sockwarden policy explain` shows what the policies would do to each; \
         `sockwarden clean {} --action destroy --dry-run` plans a cleanup and touches nothing",
        selectors.join(" ")
    )
}

fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
}
