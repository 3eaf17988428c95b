//! Network namespaces: enumerating every namespace of the host and opening a netlink socket
//! inside one (on a dedicated thread that enters it with setns).
