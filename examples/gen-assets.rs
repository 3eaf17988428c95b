//! Generates the man pages and shell completions from the clap definitions, for the Debian
//! package (`packaging/build-deb.sh`): `cargo run --example gen-assets -- target/assets`.
//!
//! Writes `<out>/man/sockwarden.1` plus one page per subcommand (`sockwarden-scan.1`,
//! `sockwarden-policy-check.1`, …) and `<out>/completions/{sockwarden.bash,_sockwarden,
//! sockwarden.fish}`. cargo-deb gzips the man pages when it packages them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;
use sockwarden::cli::Cli;

/// Appended to the top-level page: where the packaged daemon keeps its files. Kept here
/// rather than in cli.rs because it describes the package's layout, not a flag.
const FILES_SECTION: &str = r#".SH FILES
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
\fBss\fR(8), \fBsystemd.service\fR(5), \fBsystemd.exec\fR(5)
"#;

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
