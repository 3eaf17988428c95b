//! The thin binary: parse the command line, set up logging, dispatch, and turn the one
//! error into an exit code, printed once with its chain.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use sockwarden::cli::{exit, Cli, Command};
use sockwarden::cmd;
use sockwarden::sys::linux::LinuxSystem;

fn main() -> ExitCode {
    sockwarden::sys::memory::return_large_frees();
    let cli = Cli::parse();
    // The daemon reports each pass at info; one-off commands stay quiet unless asked.
    let daemon = matches!(cli.command, Command::Run(_));
    if let Err(why) = sockwarden::logging::init(cli.verbose, cli.log_format, cli.color, daemon) {
        eprintln!("sockwarden: error: {}", sockwarden::output::escape(&why));
        return ExitCode::from(2);
    }
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
        Command::Scan(args) => cmd::scan::run(&args, &LinuxSystem::loading_bpf()),
        Command::Doctor(args) => cmd::doctor::run(&args, &LinuxSystem::new()),
        Command::Clean(args) => cmd::clean::run(&args, &LinuxSystem::loading_bpf(), verbose > 0),
        Command::Policy(command) => cmd::policy::run(&command, &LinuxSystem::new()),
        Command::Audit(command) => cmd::audit::run(command),
        Command::Run(args) => cmd::run::run(&args, &LinuxSystem::for_daemon()),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
