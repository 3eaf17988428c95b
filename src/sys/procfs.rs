//! The owner map: one pass over `/proc/<pid>/fd` turning socket inodes into processes, with
//! each process's start time, command, uid, systemd unit and container.
