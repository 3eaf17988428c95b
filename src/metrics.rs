//! Prometheus metrics: stuck sockets, ages, actions, guard refusals, scan duration, capabilities.
