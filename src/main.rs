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
    init_logging(cli.verbose, cli.log_format);
    let code = match dispatch(cli.command) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => exit::OK,
        Err(err) => {
            eprintln!("sockwarden: error: {err:#}");
            exit::ERROR
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Scan(args) => cmd::scan::run(&args, &LinuxSystem::new()),
        Command::Doctor(args) => cmd::doctor::run(&args),
        Command::Clean(args) => cmd::clean::run(&args, &LinuxSystem::new()),
        Command::Policy(command) => cmd::policy::run(&command, &LinuxSystem::new()),
        Command::Audit(command) => cmd::audit::run(command),
        Command::Run(args) => cmd::run::run(&args, &LinuxSystem::new()),
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOCKWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
