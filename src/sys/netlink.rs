//! sock_diag over NETLINK_SOCK_DIAG: building dump, lookup and destroy requests, and parsing
//! the replies into [`KernelSocket`](crate::model::KernelSocket).
