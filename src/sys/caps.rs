//! Capabilities and kernel features: what this process may do here (CapEff, pidfd, kernel version).
