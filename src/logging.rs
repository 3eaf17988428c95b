//! Logging on stderr: the filter (`-v`, `SOCKWARDEN_LOG`), the format (text, JSON, or the
//! journal's), colours as `--color` says (by default on a terminal, never under `NO_COLOR`).

use std::fmt;
use std::io::{self, IsTerminal};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::{Color, LogFormat};

/// The levels a bare directive may name; anything else bare is a target, which is almost
/// always a typo of a level (`debgu` would silently log nothing).
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The filter `SOCKWARDEN_LOG` asks for, or why it cannot be used (with the fix).
pub fn filter_from(text: &str) -> Result<EnvFilter, String> {
    let help = "e.g. SOCKWARDEN_LOG=info, SOCKWARDEN_LOG=sockwarden=debug or \
                SOCKWARDEN_LOG=warn,sockwarden::actions=trace";
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', ':', '[']);
        if bare
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            && !directive.starts_with("sockwarden")
        {
            return Err(format!(
                "SOCKWARDEN_LOG: `{directive}` is neither a level ({}) nor a sockwarden target; {help}",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(text)
        .map_err(|e| format!("SOCKWARDEN_LOG=`{text}` is not a log filter ({e}); {help}"))
}

/// Set up logging; `Err` when `SOCKWARDEN_LOG` is set to something unusable.
pub fn init(verbose: u8, format: LogFormat, color: Color, daemon: bool) -> Result<(), String> {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("SOCKWARDEN_LOG") {
        Ok(text) if !text.trim().is_empty() => filter_from(&text)?,
        _ => EnvFilter::new(default),
    };
    // Under systemd, stderr is the journal (JOURNAL_STREAM is set): plain lines without
    // colours or timestamps, which journald adds itself, each with its priority.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !io::stderr().is_terminal() && !journald,
    };
    let colours = colours(
        color,
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        journald,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(colours && !json);
    match (json, journald) {
        (true, _) => builder.json().init(),
        (false, true) => {
            let plain = tracing_subscriber::fmt::format()
                .without_time()
                .with_target(false)
                .with_ansi(false);
            builder.event_format(JournalPriority(plain)).init()
        }
        (false, false) => builder.init(),
    }
    Ok(())
}

/// Whether log lines carry ANSI colours. The journal stores escapes as they come, so never
/// there; `NO_COLOR` (any non-empty value, no-color.org) turns off only the automatic choice.
fn colours(choice: Color, terminal: bool, no_color: bool, journald: bool) -> bool {
    match choice {
        _ if journald => false,
        Color::Always => true,
        Color::Never => false,
        Color::Auto => terminal && !no_color,
    }
}

/// The syslog priority journald reads from a `<N>` line prefix (sd-daemon(3)).
pub fn journal_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text line with its journal priority in front, so that `journalctl -p warning` finds
/// the warnings.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", journal_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_flag_then_the_terminal_and_no_color_and_never_the_journal() {
        use Color::*;
        // (choice, terminal, NO_COLOR, journald) -> colours
        let cases = [
            (Auto, true, false, false, true),
            (Auto, false, false, false, false),
            (Auto, true, true, false, false),
            (Always, false, true, false, true),
            (Never, true, false, false, false),
            (Always, true, false, true, false),
        ];
        for (choice, terminal, no_color, journald, want) in cases {
            assert_eq!(
                colours(choice, terminal, no_color, journald),
                want,
                "{choice:?} terminal={terminal} NO_COLOR={no_color} journald={journald}"
            );
        }
    }

    #[test]
    fn a_log_filter_that_would_silently_log_nothing_is_refused() {
        for good in [
            "info",
            "DEBUG",
            "sockwarden=debug",
            "warn,sockwarden::actions=trace",
            "off",
        ] {
            assert!(filter_from(good).is_ok(), "{good}");
        }
        for bad in ["debgu", "info,verbose", "sockwarden=loud"] {
            let e = filter_from(bad).expect_err(bad);
            assert!(e.contains("SOCKWARDEN_LOG") && e.contains("e.g."), "{e}");
        }
    }

    #[test]
    fn journal_priorities_are_syslog_levels() {
        assert_eq!(journal_priority(&Level::ERROR), 3);
        assert_eq!(journal_priority(&Level::WARN), 4);
        assert_eq!(journal_priority(&Level::INFO), 6);
        assert_eq!(journal_priority(&Level::DEBUG), 7);
    }
}
