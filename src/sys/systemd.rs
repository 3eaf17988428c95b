//! systemd over D-Bus: which unit owns a pid, and restarting a unit.
