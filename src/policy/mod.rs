//! Policies: the TOML rules an operator writes, loaded and validated with file:line:col errors.
//! [`load_paths`] / [`load_str`] turn files into a [`PolicySet`]; the format is documented on
//! [`PolicySet`], [`Guards`] and [`Rule`], key by key.

mod diagnostic;
mod exec;
mod load;
mod values;

use serde::Serialize;

use crate::model::{StateSet, TcpState};

pub use diagnostic::{did_you_mean, Diagnostic, Diagnostics};
pub use load::{load_paths, load_str};
pub use values::{Cidr, Pattern, PolicyDuration, PortRange, SignalName};

/// Global mode (top-level key `mode`, default `"observe"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plan and record, act on nothing.
    Observe,
    /// Act on what the plan allows.
    Enforce,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Observe, Mode::Enforce];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Enforce => "enforce",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnknownName::find("mode", s, &Mode::ALL, |m| m.name())
    }
}

/// A mode or action name that is not one of the known ones (from the command line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{text}`; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub text: String,
    pub expected: String,
}

impl UnknownName {
    /// The entry of `all` named `text` (case and surrounding space ignored).
    fn find<T: Copy>(
        what: &'static str,
        text: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Result<T, UnknownName> {
        let wanted = text.trim();
        all.iter()
            .copied()
            .find(|v| name(*v).eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownName {
                what,
                text: text.to_string(),
                expected: all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", "),
            })
    }
}

/// A loaded, validated set of policy files.
///
/// Top-level keys of a file: `mode` (`"observe"` | `"enforce"`), `[guards]` (see
/// [`Guards`]) and any number of `[[rule]]` tables (see [`Rule`]). Several files may be
/// loaded together: rule names must be unique across them, and `mode` or a guard key set in
/// more than one file must have the same value everywhere.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySet {
    pub mode: Mode,
    pub guards: Guards,
    /// Every rule, in load order (files in the order given, rules in file order). For a
    /// socket, the first rule that fires wins.
    pub rules: Vec<Rule>,
    /// The files loaded, in load order.
    pub files: Vec<String>,
    digest: String,
}

impl PolicySet {
    /// SHA-256 (hex) of every loaded file's name, a NUL byte, its bytes and a NUL byte, in
    /// load order. The audit log records it so that a decision can be tied to its policy.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Safety limits (`[guards]`). Every key is optional; the defaults are conservative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Guards {
    /// `max_destroys_per_minute` (default 200): SOCK_DESTROYs across all rules in any 60 s.
    pub max_destroys_per_minute: u32,
    /// `max_signals_per_minute` (default 10): signals sent across all rules in any 60 s.
    pub max_signals_per_minute: u32,
    /// `max_execs_per_minute` (default 10): commands run across all rules in any 60 s.
    pub max_execs_per_minute: u32,
    /// `max_restarts_per_unit_per_hour` (default 1): restarts of one unit in any hour.
    pub max_restarts_per_unit_per_hour: u32,
    /// `max_fraction_per_owner` (default 1.0, range 0 < f <= 1): at most this fraction of
    /// one owner's sockets matching a rule are destroyed (or exec'd on) in one pass, rounded
    /// down but at least one. Lets a service keep some connections while a leak is drained.
    pub max_fraction_per_owner: f64,
    /// `protect_ssh` (default true): also protect `sshd` processes, `sshd.service` /
    /// `ssh.service` and port 22, whatever the lists below say.
    pub protect_ssh: bool,
    /// `never_touch_processes`: comm globs. The agent itself and PID 1 are always protected.
    pub never_touch_processes: Vec<Pattern>,
    /// `never_touch_units`: systemd unit globs.
    pub never_touch_units: Vec<Pattern>,
    /// `never_touch_ports`: a socket whose local or remote port is listed is never touched
    /// (numbers or `"first-last"` ranges).
    pub never_touch_ports: Vec<PortRange>,
    /// `never_touch_uids`: sockets owned by (or held by processes running as) these uids.
    pub never_touch_uids: Vec<u32>,
}

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            max_destroys_per_minute: 200,
            max_signals_per_minute: 10,
            max_execs_per_minute: 10,
            max_restarts_per_unit_per_hour: 1,
            max_fraction_per_owner: 1.0,
            protect_ssh: true,
            never_touch_processes: Vec::new(),
            never_touch_units: Vec::new(),
            never_touch_ports: Vec::new(),
            never_touch_uids: Vec::new(),
        }
    }
}

/// What `protect_ssh = true` adds to the never-touch lists.
pub const SSH_PROCESSES: [&str; 1] = ["sshd"];
pub const SSH_UNITS: [&str; 2] = ["sshd.service", "ssh.service"];
pub const SSH_PORT: u16 = 22;

/// The kind of an action, without its parameters.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Log,
    Destroy,
    Signal,
    Restart,
    Exec,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Log,
        ActionKind::Destroy,
        ActionKind::Signal,
        ActionKind::Restart,
        ActionKind::Exec,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Log => "log",
            ActionKind::Destroy => "destroy",
            ActionKind::Signal => "signal",
            ActionKind::Restart => "restart",
            ActionKind::Exec => "exec",
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ActionKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnknownName::find("action", s, &ActionKind::ALL, |a| a.name())
    }
}

/// What a rule does: `action` plus `signal` (for `signal`) or `command` (for `exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    /// Record the socket in the audit log; touch nothing.
    Log,
    /// SOCK_DESTROY the socket (by its full id and cookie).
    Destroy,
    /// Send `signal` to the owning process (once per process per pass).
    Signal { signal: SignalName },
    /// Restart the owner's systemd unit (once per unit per pass).
    Restart,
    /// Run `command` (argv, never through a shell) once per socket; `{placeholders}` in its
    /// arguments are filled in from the socket, see [`EXEC_PLACEHOLDERS`].
    Exec { command: Vec<String> },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Log => ActionKind::Log,
            Action::Destroy => ActionKind::Destroy,
            Action::Signal { .. } => ActionKind::Signal,
            Action::Restart => ActionKind::Restart,
            Action::Exec { .. } => ActionKind::Exec,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Signal { signal } => write!(f, "signal {signal}"),
            Action::Exec { command } => write!(f, "exec {}", command.join(" ")),
            other => f.write_str(other.kind().name()),
        }
    }
}

/// The `{name}` placeholders an `exec` command's arguments may use.
/// `{{` and `}}` stand for literal braces.
pub const EXEC_PLACEHOLDERS: [(&str, &str); 13] = [
    ("rule", "the rule's name"),
    ("cookie", "socket cookie, hex"),
    ("state", "TCP state, kebab-case"),
    ("local", "local address:port"),
    ("remote", "remote address:port"),
    ("local_port", "local port"),
    ("remote_port", "remote port"),
    ("netns", "namespace name"),
    ("age", "age in seconds"),
    ("uid", "socket uid"),
    ("pid", "owner pid (empty when ownerless)"),
    ("comm", "owner command name (empty when ownerless)"),
    ("unit", "owner systemd unit (empty when none)"),
];

/// Fill in the `{name}` placeholders of one `exec` argument. `field` answers a placeholder
/// name with its value, or `None` when the name is unknown (which is an error).
pub fn render_arg(arg: &str, field: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => {
                            return Err(format!(
                                "unclosed `{{{name}` (write `{{{{` for a literal brace)"
                            ))
                        }
                    }
                }
                match field(&name) {
                    Some(value) => out.push_str(&value),
                    None => return Err(format!("unknown placeholder `{{{name}}}`")),
                }
            }
            '}' => return Err("stray `}` (write `}}` for a literal brace)".to_string()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `[rule.escalate]`: when this rule already acted on the same owner (its unit, else its
/// process) at least `after` ago, and that owner still matches now, do `action` instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Escalation {
    /// `action` (+ `signal` / `command`), as for a rule.
    pub action: Action,
    /// `after` (required): how long the first step must have had to help.
    pub after: PolicyDuration,
    /// `within` (default: same as `after`): how much older than `after` the earlier step
    /// may be and still count, so that a leak that stopped and came back a day later starts
    /// again at the first step.
    pub within: PolicyDuration,
}

/// One `[[rule]]`.
///
/// Required: `name` (unique), `states` (kebab-case TCP states, not `listen`), `older_than`
/// (duration) and `action` (`log` | `destroy` | `signal` | `restart` | `exec`).
/// Optional: `description`, `signal` (with `action = "signal"`), `command` (with
/// `action = "exec"`), `cooldown`, `min_sockets`, `[rule.escalate]`, and the selectors of
/// [`Selectors`]. A socket matches when every selector given matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    /// Where the rule was written, `file:line`.
    pub defined_at: String,
    pub states: StateSet,
    /// The rule fires for a socket whose age is at least this.
    pub older_than: PolicyDuration,
    pub action: Action,
    /// Do not act again on the same target (socket, process or unit) for this rule within
    /// this long after the previous action.
    pub cooldown: Option<PolicyDuration>,
    /// Fire only when one owner process holds at least this many sockets matching this
    /// rule (selectors and age): a leak, not a one-off.
    pub min_sockets: Option<u32>,
    pub escalate: Option<Escalation>,
    #[serde(flatten)]
    pub selectors: Selectors,
}

impl Rule {
    pub fn matches_state(&self, state: TcpState) -> bool {
        self.states.contains(state)
    }
}

/// A rule's optional selectors. Lists match when any entry matches; a glob key takes a
/// string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Selectors {
    /// `ports`: the local or the remote port is one of these (numbers or `"a-b"` ranges).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
    /// `local_ports`, `remote_ports`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_ports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_ports: Vec<PortRange>,
    /// `local_cidrs`, `remote_cidrs`: networks or bare addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_cidrs: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_cidrs: Vec<Cidr>,
    /// `process`: globs on an owner's comm (15-character command name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub process: Vec<Pattern>,
    /// `exe`: globs on an owner's executable path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exe: Vec<Pattern>,
    /// `cmdline`: globs on an owner's full command line (arguments joined by spaces).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<Pattern>,
    /// `unit`: globs on an owner's systemd unit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unit: Vec<Pattern>,
    /// `uid`: the socket's uid or an owner's effective uid (a number or a list).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uid: Vec<u32>,
    /// `netns`: globs on the namespace name (`host`, a `/run/netns` name, `pid:…`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub netns: Vec<Pattern>,
}

#[cfg(test)]
mod tests;
