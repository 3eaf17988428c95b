//! The daemon: `sockwarden run` — scan every interval, observe ages, plan, act, audit.
