//! The daemon's settings: `sockwarden.toml` (every key optional, unknown keys are errors,
//! problems cited as `file:line:col`), overridden key by key by command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use crate::policy::{Diagnostic, Mode};

pub const DEFAULT_CONFIG: &str = "/etc/sockwarden/sockwarden.toml";
pub const DEFAULT_POLICY: &str = "/etc/sockwarden/policies";
pub use crate::audit::DEFAULT_AUDIT_LOG;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sockwarden";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_NAMESPACE_REFRESH: Duration = Duration::from_secs(60);
/// Retention shorter than a day is more likely a typo than a policy.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Shorter intervals would make the agent a load of its own.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The keys of `sockwarden.toml`, in the order the example documents them.
pub const KEYS: [&str; 11] = [
    "policy",
    "interval",
    "mode",
    "audit_log",
    "audit_key",
    "audit_retention",
    "state_dir",
    "metrics_listen",
    "metrics_textfile",
    "netns",
    "namespace_refresh",
];

/// The settings in force, every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Policy file or directory of `*.toml` policies.
    pub policy: PathBuf,
    /// Time between the starts of two passes.
    pub interval: Duration,
    /// Overrides the policies' `mode` when set.
    pub mode: Option<Mode>,
    pub audit_log: PathBuf,
    /// Keyed mode: the file with the key that seals the audit records (HMAC).
    pub audit_key: Option<PathBuf>,
    /// Prune rotated audit files older than this (hourly); off when `None`.
    pub audit_retention: Option<Duration>,
    /// Where `observations.json` (first-seen times) lives.
    pub state_dir: PathBuf,
    /// Prometheus listener; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// node_exporter textfile-collector file; off when `None`.
    pub metrics_textfile: Option<PathBuf>,
    /// `all`, `host`, a `/run/netns` name or a namespace file (as `--netns`).
    pub netns: String,
    /// How often the namespace list (a walk of `/proc/*/ns/net`) is refreshed.
    pub namespace_refresh: Duration,
}

/// Settings that may each be absent: one config file, or the flags that override it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub policy: Option<PathBuf>,
    pub interval: Option<Duration>,
    pub mode: Option<Mode>,
    pub audit_log: Option<PathBuf>,
    pub audit_key: Option<PathBuf>,
    pub audit_retention: Option<Duration>,
    pub state_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_textfile: Option<PathBuf>,
    pub netns: Option<String>,
    pub namespace_refresh: Option<Duration>,
}

impl Settings {
    /// `self` where set, else `base`: flags over the file.
    pub fn over(self, base: Settings) -> Settings {
        Settings {
            policy: self.policy.or(base.policy),
            interval: self.interval.or(base.interval),
            mode: self.mode.or(base.mode),
            audit_log: self.audit_log.or(base.audit_log),
            audit_key: self.audit_key.or(base.audit_key),
            audit_retention: self.audit_retention.or(base.audit_retention),
            state_dir: self.state_dir.or(base.state_dir),
            metrics_listen: self.metrics_listen.or(base.metrics_listen),
            metrics_textfile: self.metrics_textfile.or(base.metrics_textfile),
            netns: self.netns.or(base.netns),
            namespace_refresh: self.namespace_refresh.or(base.namespace_refresh),
        }
    }

    /// Fill in the defaults.
    pub fn resolve(self) -> Config {
        Config {
            policy: self.policy.unwrap_or_else(|| DEFAULT_POLICY.into()),
            interval: self.interval.unwrap_or(DEFAULT_INTERVAL),
            mode: self.mode,
            audit_log: self.audit_log.unwrap_or_else(|| DEFAULT_AUDIT_LOG.into()),
            audit_key: self.audit_key,
            audit_retention: self.audit_retention,
            state_dir: self.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            metrics_listen: self.metrics_listen,
            metrics_textfile: self.metrics_textfile,
            netns: self.netns.unwrap_or_else(|| "all".into()),
            namespace_refresh: self.namespace_refresh.unwrap_or(DEFAULT_NAMESPACE_REFRESH),
        }
    }
}

/// A configuration that cannot be used: unreadable, or every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Unreadable { path: PathBuf, error: String },
    Invalid(Vec<Diagnostic>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unreadable { path, error } => write!(
                f,
                "{}: error: cannot read the configuration: {error}\nhelp: create it (an example ships as packaging/sockwarden.toml), or leave --config out to run on defaults and flags",
                path.display()
            ),
            ConfigError::Invalid(diags) => {
                for (i, d) in diags.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{d}")?;
                }
                let n = diags.len();
                write!(
                    f,
                    "\n{n} error{} in configuration",
                    if n == 1 { "" } else { "s" }
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Read the configuration at `path`. A missing file is `Ok(None)` when it was not named
/// explicitly (the default path): the daemon then runs on defaults and flags.
pub fn load(path: &Path, explicit: bool) -> Result<Option<Settings>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&path.display().to_string(), &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(e) => Err(ConfigError::Unreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        }),
    }
}

/// Parse the text of a configuration file named `name` (for messages).
pub fn parse(name: &str, text: &str) -> Result<Settings, ConfigError> {
    let mut p = Parser {
        name,
        src: text,
        diags: Vec::new(),
    };
    let settings = p.parse();
    if p.diags.is_empty() {
        Ok(settings)
    } else {
        p.diags.sort_by_key(|d| d.offset);
        Err(ConfigError::Invalid(p.diags))
    }
}

use crate::toml_check::{self, Value};

struct Parser<'a> {
    name: &'a str,
    src: &'a str,
    diags: Vec<Diagnostic>,
}

impl Parser<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let mut d = Diagnostic::at(self.name, self.src, span, message);
        if !help.is_empty() {
            d = d.help(help);
        }
        self.diags.push(d);
    }

    fn parse(&mut self) -> Settings {
        let (doc, errors) = DeTable::parse_recoverable(self.src);
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                self.error(span, format!("invalid TOML: {}", e.message()), "");
            }
            return Settings::default();
        }
        let doc = doc.into_inner();
        for (span, problem, _) in toml_check::unknown_keys(&doc, &KEYS, "") {
            self.error(span, problem.message, problem.help);
        }
        let mut s = Settings::default();
        if let Some(v) = doc.get("policy") {
            s.policy = self.path("policy", v);
        }
        if let Some(v) = doc.get("interval") {
            s.interval = self.duration("interval", v, MIN_INTERVAL);
        }
        if let Some(v) = doc.get("mode") {
            s.mode = self.string("mode", v).and_then(|text| {
                match text.parse::<Mode>() {
                    Ok(m) => Some(m),
                    Err(e) => {
                        self.error(v.span(), e.to_string(), "write `mode = \"observe\"` or `mode = \"enforce\"`, or leave it out to use the policies' mode");
                        None
                    }
                }
            });
        }
        if let Some(v) = doc.get("audit_log") {
            s.audit_log = self.path("audit_log", v);
        }
        if let Some(v) = doc.get("audit_key") {
            s.audit_key = self.path("audit_key", v);
        }
        if let Some(v) = doc.get("audit_retention") {
            s.audit_retention = self.duration("audit_retention", v, MIN_RETENTION);
        }
        if let Some(v) = doc.get("state_dir") {
            s.state_dir = self.path("state_dir", v);
        }
        if let Some(v) = doc.get("metrics_listen") {
            s.metrics_listen = self.string("metrics_listen", v).and_then(|text| {
                match crate::metrics::parse_listen(&text) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        self.error(
                            v.span(),
                            e,
                            "write an IP address and a port, e.g. \"127.0.0.1:9477\", \"[::1]:9477\" or \":9477\" (every interface); leave the key out to turn the listener off",
                        );
                        None
                    }
                }
            });
        }
        if let Some(v) = doc.get("metrics_textfile") {
            s.metrics_textfile = self.path("metrics_textfile", v);
        }
        if let Some(v) = doc.get("netns") {
            s.netns = self.string("netns", v);
        }
        if let Some(v) = doc.get("namespace_refresh") {
            s.namespace_refresh = self.duration("namespace_refresh", v, MIN_INTERVAL);
        }
        s
    }

    fn string(&mut self, key: &str, v: &Value<'_>) -> Option<String> {
        match toml_check::string(key, v) {
            Ok(text) if !text.trim().is_empty() => Some(text),
            Ok(_) => {
                self.error(
                    v.span(),
                    format!("`{key}` is empty"),
                    "give it a value or leave the key out for the default",
                );
                None
            }
            Err(p) => {
                self.error(v.span(), p.message, p.help);
                None
            }
        }
    }

    fn path(&mut self, key: &str, v: &Value<'_>) -> Option<PathBuf> {
        self.string(key, v).map(PathBuf::from)
    }

    fn duration(&mut self, key: &str, v: &Value<'_>, min: Duration) -> Option<Duration> {
        toml_check::duration(key, v, min)
            .map_err(|p| self.error(v.span(), p.message, p.help))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_flags_override_the_file() {
        let text = r#"
policy = "/srv/policies"
interval = "5s"
mode = "enforce"
audit_log = "/srv/audit.jsonl"
audit_key = "/etc/sockwarden/audit.key"
audit_retention = "90d"
state_dir = "/srv/state"
metrics_listen = "127.0.0.1:9477"
metrics_textfile = "/srv/sockwarden.prom"
netns = "host"
namespace_refresh = "2m"
"#;
        let file = parse("t.toml", text).expect("valid");
        assert_eq!(file.interval, Some(Duration::from_secs(5)));
        assert_eq!(file.mode, Some(Mode::Enforce));
        let flags = Settings {
            interval: Some(Duration::from_secs(1)),
            mode: Some(Mode::Observe),
            ..Settings::default()
        };
        let config = flags.over(file).resolve();
        assert_eq!(
            config,
            Config {
                policy: "/srv/policies".into(),
                interval: Duration::from_secs(1),
                mode: Some(Mode::Observe),
                audit_log: "/srv/audit.jsonl".into(),
                audit_key: Some("/etc/sockwarden/audit.key".into()),
                audit_retention: Some(Duration::from_secs(90 * 86400)),
                state_dir: "/srv/state".into(),
                metrics_listen: Some("127.0.0.1:9477".parse().expect("addr")),
                metrics_textfile: Some("/srv/sockwarden.prom".into()),
                netns: "host".into(),
                namespace_refresh: Duration::from_secs(120),
            }
        );
    }

    #[test]
    fn no_file_means_defaults() {
        let config = Settings::default().resolve();
        assert_eq!(config.policy, PathBuf::from(DEFAULT_POLICY));
        assert_eq!(config.interval, DEFAULT_INTERVAL);
        assert_eq!(config.mode, None);
        assert_eq!(config.audit_log, PathBuf::from(DEFAULT_AUDIT_LOG));
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.netns, "all");
        assert_eq!(config.namespace_refresh, DEFAULT_NAMESPACE_REFRESH);
    }

    #[test]
    fn every_problem_is_reported_with_its_location() {
        let text = "interval = \"10\"\nmode = \"enforcing\"\nmetrics-listen = \"x\"\nmetrics_listen = \"nope\"\n";
        let err = parse("c.toml", text).expect_err("invalid");
        let shown = err.to_string();
        for expected in [
            "c.toml:1:12: error: invalid duration `10`",
            "c.toml:2:8: error: unknown mode `enforcing`",
            "c.toml:3:1: error: unknown key `metrics-listen`",
            "help: did you mean `metrics_listen`?",
            "c.toml:4:18: error: invalid listen address `nope`",
            "4 errors in configuration",
        ] {
            assert!(
                shown.contains(expected),
                "missing {expected:?} in:\n{shown}"
            );
        }
    }

    #[test]
    fn syntax_errors_and_wrong_types_are_located() {
        let err = parse("c.toml", "interval = \n").expect_err("syntax");
        assert!(err.to_string().starts_with("c.toml:1:"), "{err}");
        let err = parse("c.toml", "interval = 10\n").expect_err("type");
        assert!(
            err.to_string().contains("found the bare number 10")
                && err.to_string().contains("interval = \"10s\""),
            "{err}"
        );
        let err = parse("c.toml", "interval = \"1ms\"\n").expect_err("short");
        assert!(err.to_string().contains("too short"), "{err}");
    }

    #[test]
    fn a_missing_file_is_fine_only_at_the_default_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.toml");
        assert_eq!(load(&missing, false), Ok(None));
        let err = load(&missing, true).expect_err("explicit");
        assert!(
            err.to_string().contains("cannot read the configuration"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../packaging/sockwarden.toml");
        let s = parse("packaging/sockwarden.toml", text).expect("the example parses");
        // The example documents the defaults; it must not change them.
        assert_eq!(s.clone().resolve().interval, DEFAULT_INTERVAL);
        assert_eq!(s.resolve().metrics_listen, None);
    }
}
