//! Reading policy files: TOML parsed with spans, every key checked by hand so that each
//! problem gets a location and a suggestion, and every problem in every file is reported.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use super::{
    render_arg, Action, ActionKind, Cidr, Escalation, Guards, Mode, Pattern, PolicyDuration,
    PolicySet, PortRange, Rule, Selectors, SignalName, EXEC_PLACEHOLDERS,
};
use crate::model::{StateSet, TcpState};
use crate::toml_check;

type Value<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: [&str; 3] = ["mode", "guards", "rule"];
const GUARD_KEYS: [&str; 10] = [
    "max_destroys_per_minute",
    "max_signals_per_minute",
    "max_execs_per_minute",
    "max_restarts_per_unit_per_hour",
    "max_fraction_per_owner",
    "protect_ssh",
    "never_touch_processes",
    "never_touch_units",
    "never_touch_ports",
    "never_touch_uids",
];
const RULE_KEYS: [&str; 21] = [
    "name",
    "description",
    "states",
    "older_than",
    "action",
    "signal",
    "command",
    "cooldown",
    "min_sockets",
    "escalate",
    "ports",
    "local_ports",
    "remote_ports",
    "local_cidrs",
    "remote_cidrs",
    "process",
    "exe",
    "cmdline",
    "unit",
    "uid",
    "netns",
];
const ESCALATE_KEYS: [&str; 5] = ["action", "signal", "command", "after", "within"];

/// Load policy files and directories (a directory means every `*.toml` directly in it,
/// sorted by name). Every problem in every file is collected before returning.
pub fn load_paths(paths: &[PathBuf]) -> Result<PolicySet, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut sources = Vec::new();
    for path in paths {
        if path.is_dir() {
            match toml_files_in(path) {
                Ok(files) if files.is_empty() => diags.push(
                    Diagnostic::file(
                        &path.display().to_string(),
                        "directory holds no *.toml policy file",
                    )
                    .help("put policy files named NAME.toml in it, or name the files directly"),
                ),
                Ok(files) => {
                    for f in files {
                        read_source(&f, &mut sources, &mut diags);
                    }
                }
                Err(e) => diags.push(Diagnostic::file(
                    &path.display().to_string(),
                    format!("cannot list directory: {e}"),
                )),
            }
        } else {
            read_source(path, &mut sources, &mut diags);
        }
    }
    load_sources(&sources, diags)
}

/// Load one policy given as text; `name` is used in diagnostics and in the digest.
pub fn load_str(name: &str, text: &str) -> Result<PolicySet, Diagnostics> {
    load_sources(
        &[(name.to_string(), text.to_string())],
        Diagnostics::default(),
    )
}

fn toml_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_source(path: &Path, sources: &mut Vec<(String, String)>, diags: &mut Diagnostics) {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => sources.push((name, text)),
            Err(e) => diags.push(
                Diagnostic::file(
                    &name,
                    format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
                )
                .help("policy files are UTF-8 TOML"),
            ),
        },
        Err(e) => diags.push(Diagnostic::file(
            &name,
            format!("cannot read policy file: {e}"),
        )),
    }
}

/// Settings that must agree across files: the first file to set one wins, the others are
/// compared with it.
#[derive(Default)]
struct Shared {
    mode: Option<(Mode, String)>,
    guards: Guards,
    /// Guard key -> (canonical value, where it was first set).
    guard_origin: HashMap<&'static str, (String, String)>,
    /// Rule name -> where it was first defined.
    rule_names: HashMap<String, String>,
    rules: Vec<Rule>,
}

fn load_sources(
    sources: &[(String, String)],
    mut diags: Diagnostics,
) -> Result<PolicySet, Diagnostics> {
    let mut hasher = Sha256::new();
    let mut shared = Shared::default();
    for (name, text) in sources {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        let mut file = FileCtx {
            name,
            src: text,
            diags: Vec::new(),
        };
        file.load(&mut shared);
        file.diags.sort_by_key(|d| d.offset);
        diags.0.extend(file.diags);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let digest = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(PolicySet {
        mode: shared.mode.map_or(Mode::Observe, |(m, _)| m),
        guards: shared.guards,
        rules: shared.rules,
        files: sources.iter().map(|(n, _)| n.clone()).collect(),
        digest,
    })
}

struct FileCtx<'a> {
    name: &'a str,
    src: &'a str,
    diags: Vec<Diagnostic>,
}

impl<'a> FileCtx<'a> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        let help: String = help.into();
        let d = Diagnostic::at(self.name, self.src, span, message);
        self.diags
            .push(if help.is_empty() { d } else { d.help(help) });
    }

    fn location(&self, span: &Range<usize>) -> String {
        Diagnostic::at(self.name, self.src, span.clone(), "").location()
    }

    fn load(&mut self, shared: &mut Shared) {
        let (doc, errors) = DeTable::parse_recoverable(self.src);
        if !errors.is_empty() {
            // Checking a half-parsed document would add noise; report the syntax only.
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                self.error(span, format!("invalid TOML: {}", e.message()), "");
            }
            return;
        }
        let doc = doc.into_inner();
        self.check_keys(&doc, &TOP_KEYS, "at the top level");
        if let Some(v) = doc.get("mode") {
            self.mode(v, shared);
        }
        if let Some(v) = doc.get("guards") {
            self.guards(v, shared);
        }
        if let Some(v) = doc.get("rule") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(t) => {
                                if let Some(rule) = self.rule(t, item.span(), shared) {
                                    shared.rules.push(rule);
                                }
                            }
                            other => self.error(
                                item.span(),
                                format!("each rule must be a table, found {}", other.type_str()),
                                "write each rule as a `[[rule]]` section",
                            ),
                        }
                    }
                }
                DeValue::Table(_) => self.error(
                    v.span(),
                    "rules are an array of tables: write `[[rule]]`, not `[rule]`",
                    "write `[[rule]]` (double brackets) before each rule",
                ),
                other => self.error(
                    v.span(),
                    format!(
                        "`rule` must be `[[rule]]` sections, found {}",
                        other.type_str()
                    ),
                    "write each rule as a `[[rule]]` section",
                ),
            }
        }
    }

    /// Unknown keys are always errors: this file can kill things. Returns the keys that
    /// were suggested, so that "missing `older_than`" is not said again for `older-than`.
    fn check_keys(
        &mut self,
        table: &DeTable<'_>,
        allowed: &[&'static str],
        place: &str,
    ) -> Vec<&'static str> {
        let mut suggested = Vec::new();
        for (span, problem, suggestion) in toml_check::unknown_keys(table, allowed, place) {
            suggested.extend(suggestion);
            self.error(span, problem.message, problem.help);
        }
        suggested
    }

    fn mode(&mut self, v: &Value<'_>, shared: &mut Shared) {
        let Some(text) = self.string("mode", v) else {
            return;
        };
        let mode = match text.as_str() {
            "observe" => Mode::Observe,
            "enforce" => Mode::Enforce,
            other => {
                let help = match did_you_mean(other, &["observe", "enforce"]) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => {
                        "write `mode = \"observe\"` (plan and record only) or `mode = \"enforce\"`"
                            .into()
                    }
                };
                return self.error(v.span(), format!("unknown mode `{other}`"), help);
            }
        };
        match &shared.mode {
            Some((first, at)) if *first != mode => self.error(
                v.span(),
                format!(
                    "`mode` is \"{}\" here but \"{}\" in {at}",
                    mode.name(),
                    first.name()
                ),
                "set `mode` in one file only, or make every file agree",
            ),
            Some(_) => {}
            None => shared.mode = Some((mode, self.location(&v.span()))),
        }
    }

    fn guards(&mut self, v: &Value<'_>, shared: &mut Shared) {
        let DeValue::Table(t) = v.get_ref() else {
            return self.error(
                v.span(),
                format!("`guards` must be a table, found {}", v.get_ref().type_str()),
                "write a `[guards]` section",
            );
        };
        self.check_keys(t, &GUARD_KEYS, "in [guards]");
        for key in GUARD_KEYS {
            let Some(val) = t.get(key) else { continue };
            // Parse into a copy: a value that conflicts with an earlier file must not win.
            let mut g = shared.guards.clone();
            let canonical = match key {
                "max_destroys_per_minute" => self.count(key, val).map(|n| {
                    g.max_destroys_per_minute = n;
                    n.to_string()
                }),
                "max_signals_per_minute" => self.count(key, val).map(|n| {
                    g.max_signals_per_minute = n;
                    n.to_string()
                }),
                "max_execs_per_minute" => self.count(key, val).map(|n| {
                    g.max_execs_per_minute = n;
                    n.to_string()
                }),
                "max_restarts_per_unit_per_hour" => self.count(key, val).map(|n| {
                    g.max_restarts_per_unit_per_hour = n;
                    n.to_string()
                }),
                "max_fraction_per_owner" => self.fraction(key, val).map(|f| {
                    g.max_fraction_per_owner = f;
                    f.to_string()
                }),
                "protect_ssh" => self.boolean(key, val).map(|b| {
                    g.protect_ssh = b;
                    b.to_string()
                }),
                "never_touch_processes" => self.patterns(key, val).map(|p| {
                    let c = join(&p);
                    g.never_touch_processes = p;
                    c
                }),
                "never_touch_units" => self.patterns(key, val).map(|p| {
                    let c = join(&p);
                    g.never_touch_units = p;
                    c
                }),
                "never_touch_ports" => self.ports(key, val).map(|p| {
                    let c = join_plain(&p);
                    g.never_touch_ports = p;
                    c
                }),
                "never_touch_uids" => self.uids(key, val).map(|u| {
                    let c = join_plain(&u);
                    g.never_touch_uids = u;
                    c
                }),
                _ => None,
            };
            let Some(canonical) = canonical else { continue };
            match shared.guard_origin.get(key) {
                Some((first, at)) if *first != canonical => self.error(
                    val.span(),
                    format!("`guards.{key}` is {canonical} here but {first} in {at}"),
                    "set each guard in one file only, or make every file agree",
                ),
                Some(_) => {}
                None => {
                    let at = self.location(&val.span());
                    shared.guard_origin.insert(key, (canonical, at));
                    shared.guards = g;
                }
            }
        }
    }

    fn rule(&mut self, t: &DeTable<'_>, header: Range<usize>, shared: &mut Shared) -> Option<Rule> {
        let suggested = self.check_keys(t, &RULE_KEYS, "in [[rule]]");
        let before = self.diags.len();
        let missing = |me: &mut Self, key: &str, help: &str| {
            if !suggested.contains(&key) {
                me.error(header.clone(), format!("rule has no `{key}`"), help);
            }
        };
        let name = match t.get("name") {
            Some(v) => self.rule_name(v, shared),
            None => {
                missing(self, "name", "add `name = \"what-this-rule-is-for\"`");
                None
            }
        };
        let description = t
            .get("description")
            .and_then(|v| self.string("description", v));
        let states = match t.get("states") {
            Some(v) => self.states(v),
            None => {
                missing(self, "states", "add e.g. `states = [\"close-wait\"]`");
                None
            }
        };
        let older_than = match t.get("older_than") {
            Some(v) => self.duration("older_than", v),
            None => {
                missing(self, "older_than", "add e.g. `older_than = \"10m\"`");
                None
            }
        };
        let action = if t.get("action").is_none() && suggested.contains(&"action") {
            None
        } else {
            self.action(t, header.clone(), "rule")
        };
        let cooldown = t.get("cooldown").and_then(|v| self.duration("cooldown", v));
        let min_sockets = t.get("min_sockets").and_then(|v| {
            let n = self.count("min_sockets", v)?;
            if n == 0 {
                self.error(
                    v.span(),
                    "`min_sockets` must be at least 1",
                    "write a count such as `min_sockets = 20`",
                );
                return None;
            }
            Some(n)
        });
        let escalate = t
            .get("escalate")
            .and_then(|v| self.escalation(v, action.as_ref()));
        let selectors = self.selectors(t);
        if self.diags.len() != before {
            return None;
        }
        Some(Rule {
            name: name?,
            description,
            defined_at: {
                let d = Diagnostic::at(self.name, self.src, header, "");
                format!("{}:{}", d.file, d.line.unwrap_or(0))
            },
            states: states?,
            older_than: older_than?,
            action: action?,
            cooldown,
            min_sockets,
            escalate,
            selectors,
        })
    }

    fn rule_name(&mut self, v: &Value<'_>, shared: &mut Shared) -> Option<String> {
        let name = self.string("name", v)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.error(
                v.span(),
                format!("rule name `{name}` is empty or has characters other than letters, digits, `-`, `_`, `.`"),
                "use a short kebab-case name such as \"api-close-wait-leak\"; it appears in logs and the audit trail",
            );
            return None;
        }
        if let Some(at) = shared.rule_names.get(&name) {
            self.error(
                v.span(),
                format!("rule name `{name}` is already used in {at}"),
                "rule names must be unique across all loaded files; rename one of them",
            );
            return None;
        }
        shared
            .rule_names
            .insert(name.clone(), self.location(&v.span()));
        Some(name)
    }

    fn states(&mut self, v: &Value<'_>) -> Option<StateSet> {
        let items = self.string_list("states", v)?;
        if items.is_empty() {
            self.error(
                v.span(),
                "`states` is empty",
                "list at least one state, e.g. `states = [\"close-wait\"]`",
            );
            return None;
        }
        let valid: Vec<&str> = TcpState::ALL
            .iter()
            .filter(|s| **s != TcpState::Listen)
            .map(|s| s.name())
            .collect();
        let mut set = StateSet::empty();
        let mut ok = true;
        for (text, span) in items {
            match TcpState::from_str(&text) {
                Ok(TcpState::Listen) => {
                    self.error(
                        span,
                        "LISTEN sockets are never touched",
                        "remove `listen`; a listening socket is not stuck, its service is",
                    );
                    ok = false;
                }
                Ok(s) => set.insert(s),
                Err(_) => {
                    let help = match did_you_mean(&text, &valid) {
                        Some(s) => {
                            format!("did you mean `{s}`? valid states: {}", valid.join(", "))
                        }
                        None => format!("valid states: {}", valid.join(", ")),
                    };
                    self.error(span, format!("unknown TCP state `{text}`"), help);
                    ok = false;
                }
            }
        }
        ok.then_some(set)
    }

    /// `action` plus the `signal` / `command` it needs, in a rule or in `[rule.escalate]`.
    fn action(&mut self, t: &DeTable<'_>, header: Range<usize>, place: &str) -> Option<Action> {
        let names: Vec<&str> = ActionKind::ALL.iter().map(|a| a.name()).collect();
        let Some(v) = t.get("action") else {
            self.error(
                header,
                format!("{place} has no `action`"),
                format!("add `action = \"log\"` (or one of: {})", names.join(", ")),
            );
            return None;
        };
        let text = self.string("action", v)?;
        let Some(kind) = ActionKind::ALL.into_iter().find(|a| a.name() == text) else {
            let help = match did_you_mean(&text, &names) {
                Some(s) => format!("did you mean `{s}`? expected one of: {}", names.join(", ")),
                None => format!("expected one of: {}", names.join(", ")),
            };
            self.error(v.span(), format!("unknown action `{text}`"), help);
            return None;
        };
        let signal = t.get("signal");
        let command = t.get("command");
        if kind != ActionKind::Signal {
            if let Some(s) = signal {
                self.error(
                    s.span(),
                    format!("`signal` only applies to `action = \"signal\"`, this is `action = \"{text}\"`"),
                    "remove `signal`, or set `action = \"signal\"`",
                );
            }
        }
        if kind != ActionKind::Exec {
            if let Some(c) = command {
                self.error(
                    c.span(),
                    format!("`command` only applies to `action = \"exec\"`, this is `action = \"{text}\"`"),
                    "remove `command`, or set `action = \"exec\"`",
                );
            }
        }
        match kind {
            ActionKind::Log => Some(Action::Log),
            ActionKind::Destroy => Some(Action::Destroy),
            ActionKind::Restart => Some(Action::Restart),
            ActionKind::Signal => {
                let Some(s) = signal else {
                    self.error(
                        v.span(),
                        "`action = \"signal\"` needs `signal`",
                        "add e.g. `signal = \"SIGHUP\"` (or SIGTERM, SIGUSR1, …)",
                    );
                    return None;
                };
                let name = self.string("signal", s)?;
                match SignalName::from_str(&name) {
                    Ok(signal) => Some(Action::Signal { signal }),
                    Err(()) => {
                        let all = SignalName::all_names();
                        let help = match did_you_mean(&name, &all) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!(
                                "use a signal name as `kill -l` prints it: {}",
                                all.join(", ")
                            ),
                        };
                        self.error(s.span(), format!("unknown signal `{name}`"), help);
                        None
                    }
                }
            }
            ActionKind::Exec => {
                let Some(c) = command else {
                    self.error(
                        v.span(),
                        "`action = \"exec\"` needs `command`",
                        "add e.g. `command = [\"/usr/local/bin/notify\", \"{pid}\", \"{local}\"]` (run without a shell)",
                    );
                    return None;
                };
                self.command(c).map(|command| Action::Exec { command })
            }
        }
    }

    fn command(&mut self, v: &Value<'_>) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                v.span(),
                format!("`command` must be a list of strings (argv), found {}", v.get_ref().type_str()),
                "write e.g. `command = [\"/usr/bin/logger\", \"-t\", \"sockwarden\", \"{local}\"]`; it is never run through a shell",
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                v.span(),
                "`command` is empty",
                "give the program's absolute path first, then its arguments",
            );
            return None;
        }
        let mut argv = Vec::new();
        let mut ok = true;
        let names: Vec<&str> = EXEC_PLACEHOLDERS.iter().map(|(n, _)| *n).collect();
        for (i, item) in items.iter().enumerate() {
            let Some(arg) = self.string("command", item) else {
                ok = false;
                continue;
            };
            if i == 0 {
                if !arg.starts_with('/') {
                    self.error(
                        item.span(),
                        format!("`{arg}` is not an absolute path; commands run without a shell or PATH lookup"),
                        format!("write the full path, e.g. \"/usr/bin/{}\"", arg.rsplit('/').next().unwrap_or(&arg)),
                    );
                    ok = false;
                } else if arg.contains('{') || arg.contains('}') {
                    self.error(
                        item.span(),
                        "the program path cannot hold placeholders",
                        "put placeholders in the arguments",
                    );
                    ok = false;
                }
            } else if let Err(e) = render_arg(&arg, &|n| names.contains(&n).then(String::new)) {
                self.error(
                    item.span(),
                    format!("{e} in `command`"),
                    format!(
                        "valid placeholders: {}",
                        names
                            .iter()
                            .map(|n| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                ok = false;
            }
            argv.push(arg);
        }
        if let Some(code) = super::exec::code_argument(&argv) {
            let script = &argv[code];
            let used = std::cell::RefCell::new(Vec::new());
            let _ = render_arg(script, &|n| {
                used.borrow_mut().push(n.to_string());
                Some(String::new())
            });
            if let Some(found) = used.into_inner().into_iter().next() {
                let span = items.get(code).map_or_else(|| v.span(), |item| item.span());
                self.error(
                    span,
                    format!(
                        "placeholder inside code that `{}` runs: a process can name itself so that `{{{found}}}` becomes code run as root",
                        argv[0]
                    ),
                    format!(
                        "pass values as whole arguments or read them from the environment, e.g. \
                         `command = [\"/bin/sh\", \"-c\", \"logger -t sockwarden -- \\\"$1\\\"\", \"sh\", \"{{{found}}}\"]` \
                         or `\"logger -t sockwarden -- \\\"$SOCKWARDEN_{}\\\"\"` in the script",
                        found.to_ascii_uppercase()
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(argv)
    }

    fn escalation(&mut self, v: &Value<'_>, base: Option<&Action>) -> Option<Escalation> {
        let DeValue::Table(t) = v.get_ref() else {
            self.error(
                v.span(),
                format!(
                    "`escalate` must be a table, found {}",
                    v.get_ref().type_str()
                ),
                "write a `[rule.escalate]` section after the rule, with `action` and `after`",
            );
            return None;
        };
        let suggested = self.check_keys(t, &ESCALATE_KEYS, "in [rule.escalate]");
        let action = self.action(t, v.span(), "[rule.escalate]");
        let after = match t.get("after") {
            Some(a) => self.duration("after", a),
            None if suggested.contains(&"after") => None,
            None => {
                self.error(
                    v.span(),
                    "[rule.escalate] has no `after`",
                    "add e.g. `after = \"15m\"`",
                );
                None
            }
        };
        let within = t.get("within").and_then(|w| self.duration("within", w));
        let action = action?;
        if base == Some(&action) {
            self.error(
                v.span(),
                format!("escalation repeats the rule's own action ({action})"),
                "escalate to a stronger action, e.g. `action = \"restart\"`",
            );
            return None;
        }
        let after = after?;
        Some(Escalation {
            action,
            after,
            within: within.unwrap_or(after),
        })
    }

    fn selectors(&mut self, t: &DeTable<'_>) -> Selectors {
        let mut s = Selectors::default();
        let ports = |me: &mut Self, key: &str| {
            t.get(key)
                .and_then(|v| me.ports(key, v))
                .unwrap_or_default()
        };
        s.ports = ports(self, "ports");
        s.local_ports = ports(self, "local_ports");
        s.remote_ports = ports(self, "remote_ports");
        let cidrs = |me: &mut Self, key: &str| {
            t.get(key)
                .and_then(|v| me.cidrs(key, v))
                .unwrap_or_default()
        };
        s.local_cidrs = cidrs(self, "local_cidrs");
        s.remote_cidrs = cidrs(self, "remote_cidrs");
        let globs = |me: &mut Self, key: &str| {
            t.get(key)
                .and_then(|v| me.patterns(key, v))
                .unwrap_or_default()
        };
        s.process = globs(self, "process");
        s.exe = globs(self, "exe");
        s.cmdline = globs(self, "cmdline");
        s.unit = globs(self, "unit");
        s.netns = globs(self, "netns");
        s.uid = t
            .get("uid")
            .and_then(|v| self.uids("uid", v))
            .unwrap_or_default();
        if let Some(v) = t.get("process") {
            for p in &s.process {
                // comm is at most 15 characters: a longer literal name can never match.
                if !p.as_str().contains(['*', '?', '[']) && p.as_str().len() > 15 {
                    self.error(
                        v.span(),
                        format!("process name `{p}` is longer than 15 characters and can never match a comm"),
                        format!("use its first 15 characters (`{}`), a glob, or `exe`/`cmdline`", &p.as_str()[..15]),
                    );
                }
            }
        }
        s
    }

    // ---- typed values -------------------------------------------------------------

    fn string(&mut self, key: &str, v: &Value<'_>) -> Option<String> {
        toml_check::string(key, v)
            .map_err(|p| self.error(v.span(), p.message, p.help))
            .ok()
    }

    /// A string or a list of strings, each with its span.
    fn string_list(&mut self, key: &str, v: &Value<'_>) -> Option<Vec<(String, Range<usize>)>> {
        match v.get_ref() {
            DeValue::String(s) => Some(vec![(s.to_string(), v.span())]),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    out.push((self.string(key, item)?, item.span()));
                }
                Some(out)
            }
            other => {
                self.error(
                    v.span(),
                    format!(
                        "`{key}` must be a string or a list of strings, found {}",
                        other.type_str()
                    ),
                    format!("write e.g. `{key} = [\"…\"]`"),
                );
                None
            }
        }
    }

    fn integer(&mut self, key: &str, v: &Value<'_>) -> Option<i128> {
        match v.get_ref() {
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.error(
                    v.span(),
                    format!("`{key}` must be a whole number, found {}", other.type_str()),
                    "write a number without quotes",
                );
                None
            }
        }
    }

    /// A non-negative count that fits in u32.
    fn count(&mut self, key: &str, v: &Value<'_>) -> Option<u32> {
        let n = self.integer(key, v)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    v.span(),
                    format!("`{key}` = {n} is out of range"),
                    "use a count from 0 to 4294967295",
                );
                None
            }
        }
    }

    fn fraction(&mut self, key: &str, v: &Value<'_>) -> Option<f64> {
        let f = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(_) => self.integer(key, v).map(|n| n as f64),
            other => {
                self.error(
                    v.span(),
                    format!("`{key}` must be a number, found {}", other.type_str()),
                    "write a fraction such as 0.5 (half) or 1.0 (no limit)",
                );
                return None;
            }
        }?;
        if !(f > 0.0 && f <= 1.0) {
            self.error(
                v.span(),
                format!("`{key}` = {f} is not a fraction between 0 (exclusive) and 1"),
                "write e.g. 0.5 to act on at most half of an owner's sockets per pass, or 1.0 for no limit",
            );
            return None;
        }
        Some(f)
    }

    fn boolean(&mut self, key: &str, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    v.span(),
                    format!("`{key}` must be true or false, found {}", other.type_str()),
                    "write `true` or `false` without quotes",
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, v: &Value<'_>) -> Option<PolicyDuration> {
        toml_check::duration(key, v, std::time::Duration::ZERO)
            .map(PolicyDuration)
            .map_err(|p| self.error(v.span(), p.message, p.help))
            .ok()
    }

    fn patterns(&mut self, key: &str, v: &Value<'_>) -> Option<Vec<Pattern>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (text, span) in self.string_list(key, v)? {
            match Pattern::new(&text) {
                Ok(p) => out.push(p),
                Err(e) => {
                    self.error(
                        span,
                        format!("invalid glob `{text}` in `{key}`: {}", e.kind()),
                        "globs use `*`, `?`, `[abc]` and `{a,b}`; escape a literal one with `\\`",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn ports(&mut self, key: &str, v: &Value<'_>) -> Option<Vec<PortRange>> {
        let items: Vec<&Value<'_>> = match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let parsed = match item.get_ref() {
                DeValue::Integer(_) => match self.integer(key, item).map(u16::try_from) {
                    Some(Ok(p)) => Ok(PortRange::single(p)),
                    Some(Err(_)) => Err("is not a port number (0-65535)".to_string()),
                    None => Err("is not a number".to_string()),
                },
                DeValue::String(s) => s.parse::<PortRange>(),
                other => Err(format!(
                    "must be a port or \"first-last\", found {}",
                    other.type_str()
                )),
            };
            match parsed {
                Ok(p) => out.push(p),
                Err(e) => {
                    let text = &self.src[item.span()];
                    self.error(
                        item.span(),
                        format!("invalid port `{text}` in `{key}`: {e}"),
                        format!("write e.g. `{key} = [8080, \"9000-9100\"]`"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn cidrs(&mut self, key: &str, v: &Value<'_>) -> Option<Vec<Cidr>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (text, span) in self.string_list(key, v)? {
            match text.parse::<Cidr>() {
                Ok(c) => out.push(c),
                Err(e) => {
                    self.error(
                        span,
                        format!("invalid CIDR `{text}` in `{key}`: {e}"),
                        "write a network such as \"10.0.0.0/8\" or \"fd00::/8\", or a bare address",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn uids(&mut self, key: &str, v: &Value<'_>) -> Option<Vec<u32>> {
        let items: Vec<&Value<'_>> = match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        let mut out = Vec::new();
        for item in items {
            let n = self.integer(key, item)?;
            match u32::try_from(n) {
                Ok(u) => out.push(u),
                Err(_) => {
                    self.error(
                        item.span(),
                        format!("uid {n} in `{key}` is out of range"),
                        "uids are 0 to 4294967295",
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn join_plain<T: std::fmt::Display>(items: &[T]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
