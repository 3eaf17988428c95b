//! systemd over D-Bus: which unit owns a pid, a unit's state, and restarting a unit and
//! waiting for the restart job to finish (`org.freedesktop.systemd1.Manager`).

use std::thread;
use std::time::{Duration, Instant};

use futures_lite::{future, StreamExt};
use serde::Serialize;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{DBusError, MatchRule, MessageStream};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// What the production default connects to; only used in messages.
const SYSTEM_BUS: &str = "the system bus";
/// How often a pending restart job is looked at. Restarts take ~100 ms at best, so this
/// costs little latency and few calls.
const POLL: Duration = Duration::from_millis(25);
/// A method call that takes longer than this means systemd is hung, not slow.
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);

/// What went wrong talking to systemd, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "systemd's D-Bus API did not answer at {address}: {cause}; is systemd running as \
         PID 1 / is dbus up? (restart actions need it)"
    )]
    NotRunning { address: String, cause: String },
    #[error(
        "{call}: systemd has no unit named {unit:?} ({message}); check the name with \
         `systemctl list-units --all {unit}`"
    )]
    NoSuchUnit {
        call: String,
        unit: String,
        message: String,
    },
    #[error(
        "{call}: systemd denied access ({message}); needs root, or a polkit rule granting \
         org.freedesktop.systemd1.manage-units"
    )]
    AccessDenied { call: String, message: String },
    #[error("{call}: {source}")]
    Call {
        call: String,
        #[source]
        source: Box<zbus::Error>,
    },
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub unit: String,
    /// `loaded`, `not-found`, `masked`, `error`, ...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`, ...
    pub active_state: String,
    /// Type-specific: `running`, `exited`, `auto-restart`, `dead`, ...
    pub sub_state: String,
    /// The service's main process, in systemd's pid namespace (the host's when systemd is
    /// PID 1); `None` for units that are not services or have no main process.
    pub main_pid: Option<u32>,
    /// The job queued for this unit (`/org/freedesktop/systemd1/job/N`), if any.
    pub job: Option<String>,
}

impl UnitState {
    /// Whether systemd is busy with this unit already: a job is queued or running, or the
    /// unit is between states (an auto-restart shows as `activating`/`auto-restart`).
    pub fn in_transition(&self) -> bool {
        self.job.is_some()
            || matches!(
                self.active_state.as_str(),
                "activating" | "deactivating" | "reloading" | "refreshing"
            )
    }
}

/// What came of a restart request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RestartOutcome {
    /// The restart job finished with `done`.
    Restarted {
        old_main_pid: Option<u32>,
        new_main_pid: Option<u32>,
        /// systemd's job result, `done`.
        job_result: String,
    },
    /// The job finished with another result: `failed`, `timeout`, `canceled`,
    /// `dependency`, `skipped`, ...
    Failed { result: String },
    /// The job was still running when the timeout ran out; it was left running.
    TimedOut,
    /// The unit was already restarting, starting, stopping or reloading: nothing was asked.
    AlreadyInProgress { state: UnitState },
}

/// A connection to systemd's Manager.
pub struct Systemd {
    conn: Connection,
    /// Where we connected, for messages.
    address: String,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Systemd")
            .field("address", &self.address)
            .finish()
    }
}

impl Systemd {
    /// Connect to systemd on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` if set, else
    /// `/run/dbus/system_bus_socket`).
    pub fn connect() -> Result<Systemd, SystemdError> {
        let address = match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
            Ok(a) => format!("{SYSTEM_BUS} ({a})"),
            Err(_) => format!("{SYSTEM_BUS} (unix:path=/run/dbus/system_bus_socket)"),
        };
        let built = zbus::blocking::connection::Builder::system()
            .map(|b| b.method_timeout(METHOD_TIMEOUT))
            .and_then(|b| b.build());
        Systemd::finish_connect(built, address)
    }

    /// Connect to a D-Bus bus at an explicit address, e.g.
    /// `unix:path=/proc/4242/root/run/dbus/system_bus_socket` for a systemd in a container.
    pub fn connect_address(addr: &str) -> Result<Systemd, SystemdError> {
        let built = zbus::blocking::connection::Builder::address(addr)
            .map(|b| b.method_timeout(METHOD_TIMEOUT))
            .and_then(|b| b.build());
        Systemd::finish_connect(built, addr.to_string())
    }

    fn finish_connect(
        built: zbus::Result<Connection>,
        address: String,
    ) -> Result<Systemd, SystemdError> {
        let conn = built.map_err(|e| SystemdError::NotRunning {
            address: address.clone(),
            cause: e.to_string(),
        })?;
        let systemd = Systemd { conn, address };
        // A bus can be up with no systemd on it; ask systemd itself once so that a missing
        // manager is reported here and not as a puzzling error on the first real call.
        systemd
            .property::<String>(MANAGER_PATH, MANAGER, "Version")
            .map_err(|e| SystemdError::NotRunning {
                address: systemd.address.clone(),
                cause: e.to_string(),
            })?;
        Ok(systemd)
    }

    /// Where this connection goes, as shown in messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The state of `unit` (loading it if systemd had unloaded it). `NoSuchUnit` when no
    /// such unit file or transient unit exists.
    pub fn unit_state(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let call = format!("LoadUnit({unit})");
        // LoadUnit rather than GetUnit: GetUnit fails for an existing unit that systemd has
        // garbage-collected (inactive, nothing refers to it).
        let path: OwnedObjectPath = self.manager_call(&call, Some(unit), "LoadUnit", &(unit,))?;
        let state = self.state_at(unit, &path)?;
        if state.load_state == "not-found" {
            return Err(SystemdError::NoSuchUnit {
                call,
                unit: unit.to_string(),
                message: "LoadState=not-found".to_string(),
            });
        }
        Ok(state)
    }

    /// The unit that the process `pid` (in systemd's pid namespace) belongs to, or `None`
    /// when systemd does not know the process.
    pub fn unit_of_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        let call = format!("GetUnitByPID({pid})");
        let path: OwnedObjectPath = match self.manager_call(&call, None, "GetUnitByPID", &(pid,)) {
            Ok(path) => path,
            Err(SystemdError::Call { source, .. })
                if matches!(
                    error_name(&source).as_deref(),
                    Some("org.freedesktop.systemd1.NoUnitForPID")
                        | Some("org.freedesktop.systemd1.NoSuchProcess")
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let id: String = self
            .property(path.as_str(), UNIT, "Id")
            .map_err(|e| self.classify(format!("Get {path} Id"), None, e))?;
        Ok(Some(id))
    }

    /// Restart `unit` (`RestartUnit(unit, "replace")`) and wait up to `timeout` for the
    /// job to finish. A unit that is already changing state is left alone.
    pub fn restart_unit(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, SystemdError> {
        let before = self.unit_state(unit)?;
        if before.in_transition() {
            return Ok(RestartOutcome::AlreadyInProgress { state: before });
        }
        // Listen before asking, so the JobRemoved of a fast job cannot be missed.
        let mut job_removed = self.job_removed_stream()?;
        let call = format!("RestartUnit({unit}, replace)");
        let job: OwnedObjectPath =
            self.manager_call(&call, Some(unit), "RestartUnit", &(unit, "replace"))?;

        let deadline = Instant::now() + timeout;
        let mut job_gone_since: Option<Instant> = None;
        loop {
            while let Some(Some(msg)) = future::block_on(future::poll_once(job_removed.next())) {
                let Ok(msg) = msg else { continue };
                let Ok((_id, path, _unit, result)) =
                    msg.body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == job {
                    return self.finished(unit, &before, result);
                }
            }
            let now = Instant::now();
            if self.job_exists(&job)? {
                job_gone_since = None;
            } else {
                // The signal is sent before the job object goes away and the bus keeps
                // order, so it is normally queued already; give it a moment, then fall
                // back to the unit's state (a systemd that sends no signals to us).
                let since = *job_gone_since.get_or_insert(now);
                if now.duration_since(since) > Duration::from_millis(500) {
                    let after = self.unit_state(unit)?;
                    let result = if after.active_state == "active" {
                        "done"
                    } else {
                        "failed"
                    };
                    return self.finished(unit, &before, result.to_string());
                }
            }
            if now >= deadline {
                return Ok(RestartOutcome::TimedOut);
            }
            thread::sleep(POLL.min(deadline.saturating_duration_since(now)));
        }
    }

    /// Turn a finished job's result into the outcome, reading the new main pid.
    fn finished(
        &self,
        unit: &str,
        before: &UnitState,
        result: String,
    ) -> Result<RestartOutcome, SystemdError> {
        if result != "done" {
            return Ok(RestartOutcome::Failed { result });
        }
        let after = self.unit_state(unit)?;
        Ok(RestartOutcome::Restarted {
            old_main_pid: before.main_pid,
            new_main_pid: after.main_pid,
            job_result: result,
        })
    }

    /// Subscribe to the Manager's `JobRemoved` signals.
    fn job_removed_stream(&self) -> Result<MessageStream, SystemdError> {
        // systemd sends signals on the bus only while some client is subscribed.
        match self.manager_call::<_, ()>("Subscribe", None, "Subscribe", &()) {
            Ok(()) => {}
            Err(SystemdError::Call { source, .. })
                if error_name(&source).as_deref()
                    == Some("org.freedesktop.systemd1.AlreadySubscribed") => {}
            Err(e) => return Err(e),
        }
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(DESTINATION)
            .and_then(|b| b.interface(MANAGER))
            .and_then(|b| b.member("JobRemoved"))
            .and_then(|b| b.path(MANAGER_PATH))
            .map(|b| b.build())
            .map_err(|e| self.classify("AddMatch JobRemoved".to_string(), None, e))?;
        let iter = MessageIterator::for_match_rule(rule, &self.conn, Some(256))
            .map_err(|e| self.classify("AddMatch JobRemoved".to_string(), None, e))?;
        Ok(iter.into_inner())
    }

    fn job_exists(&self, job: &OwnedObjectPath) -> Result<bool, SystemdError> {
        match self.property::<String>(job.as_str(), "org.freedesktop.systemd1.Job", "State") {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    error_name(&e).as_deref(),
                    Some("org.freedesktop.DBus.Error.UnknownObject")
                        | Some("org.freedesktop.DBus.Error.UnknownMethod")
                        | Some("org.freedesktop.DBus.Error.UnknownInterface")
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.classify(format!("Get {job} State"), None, e)),
        }
    }

    fn state_at(&self, unit: &str, path: &OwnedObjectPath) -> Result<UnitState, SystemdError> {
        let get = |iface: &str, name: &str| -> Result<OwnedValue, SystemdError> {
            self.property::<OwnedValue>(path.as_str(), iface, name)
                .map_err(|e| self.classify(format!("Get {unit} {name}"), Some(unit), e))
        };
        let string = |name: &str| -> Result<String, SystemdError> {
            String::try_from(get(UNIT, name)?).map_err(|e| SystemdError::Call {
                call: format!("Get {unit} {name}"),
                source: Box::new(e.into()),
            })
        };
        let load_state = string("LoadState")?;
        let active_state = string("ActiveState")?;
        let sub_state = string("SubState")?;
        let (job_id, job_path) =
            <(u32, OwnedObjectPath)>::try_from(get(UNIT, "Job")?).map_err(|e| {
                SystemdError::Call {
                    call: format!("Get {unit} Job"),
                    source: Box::new(e.into()),
                }
            })?;
        // Only services have a main process.
        let main_pid = if unit.ends_with(".service") && load_state == "loaded" {
            u32::try_from(get(SERVICE, "MainPID")?).map_err(|e| SystemdError::Call {
                call: format!("Get {unit} MainPID"),
                source: Box::new(e.into()),
            })?
        } else {
            0
        };
        Ok(UnitState {
            unit: unit.to_string(),
            load_state,
            active_state,
            sub_state,
            main_pid: (main_pid != 0).then_some(main_pid),
            job: (job_id != 0).then(|| job_path.to_string()),
        })
    }

    /// Call a Manager method; `call` names it in errors, `unit` is the unit it is about.
    fn manager_call<B, R>(
        &self,
        call: &str,
        unit: Option<&str>,
        method: &str,
        body: &B,
    ) -> Result<R, SystemdError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let reply = self
            .conn
            .call_method(Some(DESTINATION), MANAGER_PATH, Some(MANAGER), method, body)
            .map_err(|e| self.classify(call.to_string(), unit, e))?;
        reply
            .body()
            .deserialize::<R>()
            .map_err(|e| self.classify(call.to_string(), None, e))
    }

    /// Map a failed call to words: unknown unit, denied, systemd gone, or the raw error.
    fn classify(&self, call: String, unit: Option<&str>, e: zbus::Error) -> SystemdError {
        let Some((name, message)) = error_parts(&e) else {
            return SystemdError::Call {
                call,
                source: Box::new(e),
            };
        };
        match name.as_str() {
            "org.freedesktop.systemd1.NoSuchUnit" | "org.freedesktop.systemd1.LoadFailed" => {
                SystemdError::NoSuchUnit {
                    call,
                    unit: unit.unwrap_or_default().to_string(),
                    message,
                }
            }
            "org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
                SystemdError::AccessDenied { call, message }
            }
            // The bus answers but systemd is not on it (any more).
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.NoReply"
            | "org.freedesktop.DBus.Error.Disconnected" => SystemdError::NotRunning {
                address: self.address.clone(),
                cause: format!("{call}: {name}: {message}"),
            },
            _ => SystemdError::Call {
                call,
                source: Box::new(e),
            },
        }
    }

    /// `org.freedesktop.DBus.Properties.Get`, without zbus's property cache (which would
    /// need systemd's PropertiesChanged signals to stay fresh).
    fn property<T>(&self, path: &str, iface: &str, name: &str) -> zbus::Result<T>
    where
        T: TryFrom<OwnedValue>,
        T::Error: Into<zbus::Error>,
    {
        let reply = self.conn.call_method(
            Some(DESTINATION),
            path,
            Some(PROPERTIES),
            "Get",
            &(iface, name),
        )?;
        let value: OwnedValue = reply.body().deserialize()?;
        T::try_from(value).map_err(Into::into)
    }
}

/// The D-Bus error name and message carried by a zbus error, if it is a method error.
fn error_parts(e: &zbus::Error) -> Option<(String, String)> {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            Some((name.to_string(), message.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(fdo) => Some((
            fdo.name().to_string(),
            fdo.description().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

fn error_name(e: &zbus::Error) -> Option<String> {
    error_parts(e).map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: &str, sub: &str, job: Option<&str>) -> UnitState {
        UnitState {
            unit: "api.service".into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            main_pid: Some(42),
            job: job.map(String::from),
        }
    }

    #[test]
    fn units_changing_state_are_in_transition() {
        assert!(!state("active", "running", None).in_transition());
        assert!(!state("failed", "failed", None).in_transition());
        assert!(!state("inactive", "dead", None).in_transition());
        assert!(state("activating", "auto-restart", None).in_transition());
        assert!(state("deactivating", "stop-sigterm", None).in_transition());
        assert!(state("reloading", "reload", None).in_transition());
        assert!(
            state("active", "running", Some("/org/freedesktop/systemd1/job/7")).in_transition()
        );
    }

    #[test]
    fn not_running_message_says_what_to_check() {
        let e = SystemdError::NotRunning {
            address: "unix:path=/nowhere".into(),
            cause: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            e.to_string(),
            "systemd's D-Bus API did not answer at unix:path=/nowhere: No such file or \
             directory (os error 2); is systemd running as PID 1 / is dbus up? (restart \
             actions need it)"
        );
    }

    #[test]
    fn outcome_serializes_with_a_tag() {
        let o = RestartOutcome::Restarted {
            old_main_pid: Some(1),
            new_main_pid: Some(2),
            job_result: "done".into(),
        };
        assert_eq!(
            serde_json::to_string(&o).expect("serialize"),
            r#"{"outcome":"restarted","old_main_pid":1,"new_main_pid":2,"job_result":"done"}"#
        );
    }
}
