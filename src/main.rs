//! The thin binary: parse the command line, set up logging, dispatch, and turn the one
//! error into an exit code, printed once with its chain.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use sockwarden::cli::{exit, Cli, Command, LogFormat};
use sockwarden::cmd;
use sockwarden::sys::linux::LinuxSystem;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports each pass at info; one-off commands stay quiet unless asked.
    let daemon = matches!(cli.command, Command::Run(_));
    init_logging(cli.verbose, cli.log_format, daemon);
    let code = match dispatch(cli.command, cli.verbose) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => exit::OK,
        Err(err) => {
            eprintln!(
                "sockwarden: error: {}",
                // Each cause once: an io::Error's text is often repeated by its context.
                sockwarden::output::escape(&sockwarden::output::error_chain(err.as_ref()))
            );
            exit::ERROR
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn dispatch(command: Command, verbose: u8) -> anyhow::Result<i32> {
    match command {
        Command::Scan(args) => cmd::scan::run(&args, &LinuxSystem::new()),
        Command::Doctor(args) => cmd::doctor::run(&args, &LinuxSystem::new()),
        Command::Clean(args) => cmd::clean::run(&args, &LinuxSystem::new(), verbose > 0),
        Command::Policy(command) => cmd::policy::run(&command, &LinuxSystem::new()),
        Command::Audit(command) => cmd::audit::run(command),
        Command::Run(args) => cmd::run::run(&args, &LinuxSystem::new()),
    }
}

fn init_logging(verbose: u8, format: LogFormat, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOCKWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Under systemd, stderr is the journal (JOURNAL_STREAM is set): plain lines without
    // colours or timestamps, which journald adds itself.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !io::stderr().is_terminal() && !journald,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    match (json, journald) {
        (true, _) => builder.json().init(),
        (false, true) => builder.without_time().with_target(false).init(),
        (false, false) => builder.init(),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
