// SPDX-License-Identifier: GPL-2.0
/* sockwarden's kernel side (see src/sys/bpf/mod.rs for the loader, build.sh to rebuild).
 *
 * - on_state (tp_btf/inet_sock_set_state): when a TCP socket of any namespace enters a
 *   watched state, stamp it in the `entered` index, keyed by its cookie, with the state and
 *   the boot-clock time; when it leaves for another state, remove the stamp. The agent
 *   reads the index for exact ages (the `kernel-transition` age source).
 * - on_synack (tp_btf/tcp_retransmit_synack): when each namespace last retransmitted a
 *   SYN-ACK. A request socket (SYN_RECV) that lives past its first SYN-ACK timeout (1 s)
 *   retransmits, so only those namespaces need a dump for SYN_RECV.
 * - socket_files (task_file iterator): (pid, start time, fd, inode) of every open socket
 *   file (or only of those whose inode is in `wanted`, or of TCP sockets in some states):
 *   owners in one kernel pass instead of a readlink of every fd in /proc.
 *
 * The iterator sits in an `fentry/` section: aya-obj 0.2 parses sections by libbpf's names
 * but does not know `iter/`; the loader gives each program its real attach type by name. */
#include "kernel.h"
#include <bpf/bpf_helpers.h>

/* TCP states sockwarden watches: the teardown states and the two handshake states. */
#define WATCHED ((1u << TCP_SYN_SENT) | (1u << TCP_SYN_RECV) | (1u << TCP_FIN_WAIT1) | \
		 (1u << TCP_FIN_WAIT2) | (1u << TCP_CLOSE_WAIT) | (1u << TCP_LAST_ACK) | \
		 (1u << TCP_CLOSING))

/* What the index keeps of a socket in a watched state, read as it entered the state.
 * Layout shared with mod.rs (parse_stamp). */
struct stamp {
	__u64 entered_ns; /* bpf_ktime_get_boot_ns() when it entered `state` */
	__u32 state;
	__u32 netns;      /* the inode number of its network namespace */
	__u64 inode;      /* 0 once orphaned */
	__u32 uid;
	__s32 interface;  /* bound device: needed to address link-local sockets */
	__u16 family;
	__u16 local_port; /* host order */
	__u16 remote_port;
	__u16 flags;      /* STAMP_SWEPT: put by the agent, see below */
	__u8 local[16];   /* IPv4 in the first 4 bytes */
	__u8 remote[16];
};

/* A stamp the agent put for a socket it found in its first sweep, older than the index:
 * entered_ns is then only a lower bound (from tcp_info). The program replaces or removes
 * it at the socket's next change, as any other. */
#define STAMP_SWEPT 1

/* The index: socket cookie -> stamp. Entries go when their socket leaves the watched
 * states (every socket passes through TCP_CLOSE before it is freed). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, struct stamp);
} entered SEC(".maps");

/* How many sockets could not be stamped because the index was full. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unstamped SEC(".maps");

/* Socket inodes whose holders the agent wants, filled before an owner pass when they are
 * few. For many (a mass leak), filling the map costs more than it saves: the agent then
 * clears only_wanted, every socket file is reported, and it filters them itself. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 14);
	__type(key, __u64);
	__type(value, __u8);
} wanted SEC(".maps");

/* [0]: 1 = report only the inodes in `wanted`; 0 = every socket file.
 * [1]: a mask of TCP states (1 << state): report only TCP sockets in one of them (a
 * one-shot scan asks for its states' holders, whose details it then reads while the
 * namespaces are still dumped); 0 = any socket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} only_wanted SEC(".maps");

/* When each namespace last retransmitted a SYN-ACK (for a SYN_RECV request socket, which
 * no state change reports): namespaces without a recent one hold no request older than
 * its first timeout, and need no SYN_RECV dump. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u32);
	__type(value, __u64);
} requested SEC(".maps");

/* Namespaces (by inode) whose every full socket in a watched state is in `entered`: the
 * agent swept them (one dump, every socket stamped) while the index was kept. LRU: an
 * evicted namespace is only swept again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, __u64);
} complete SEC(".maps");

SEC("tp_btf/tcp_retransmit_synack")
int on_synack(u64 *ctx)
{
	struct sock *listener = (struct sock *)ctx[0];
	__u32 netns = listener->__sk_common.skc_net.net->ns.inum;
	__u64 now = bpf_ktime_get_boot_ns();

	bpf_map_update_elem(&requested, &netns, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int on_state(u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int newstate = (int)ctx[2];

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(sk);
	if (newstate >= 0 && newstate < 32 && (WATCHED & (1u << newstate))) {
		struct stamp s = {
			.entered_ns = bpf_ktime_get_boot_ns(),
			.state = newstate,
			.netns = sk->__sk_common.skc_net.net->ns.inum,
			.inode = sk->sk_socket->file->f_inode->i_ino,
			.uid = sk->sk_uid.val,
			.interface = sk->__sk_common.skc_bound_dev_if,
			.family = sk->__sk_common.skc_family,
			.local_port = sk->__sk_common.skc_num,
			.remote_port = __builtin_bswap16(sk->__sk_common.skc_dport),
		};
		if (s.family == 10 /* AF_INET6 */) {
			bpf_probe_read_kernel(s.local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
			bpf_probe_read_kernel(s.remote, 16, &sk->__sk_common.skc_v6_daddr);
		} else {
			bpf_probe_read_kernel(s.local, 4, &sk->__sk_common.skc_rcv_saddr);
			bpf_probe_read_kernel(s.remote, 4, &sk->__sk_common.skc_daddr);
		}
		if (bpf_map_update_elem(&entered, &cookie, &s, BPF_ANY)) {
			__u32 zero = 0;
			__u64 *n = bpf_map_lookup_elem(&unstamped, &zero);
			if (n)
				__sync_fetch_and_add(n, 1);
		}
	} else {
		bpf_map_delete_elem(&entered, &cookie);
	}
	return 0;
}

/* One holder of a wanted socket. Layout shared with mod.rs (HolderRecord). */
struct holder_record {
	__u64 inode;
	__u64 start_boottime_ns;
	__u32 pid; /* the thread-group id: the process */
	__u32 fd;
};

SEC("fentry/socket_files")
int socket_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct holder_record r = {};

	if (!task || !file)
		return 0;
	struct inode *inode = file->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
		return 0;
	r.inode = inode->i_ino;
	__u32 zero = 0;
	__u32 *filter = bpf_map_lookup_elem(&only_wanted, &zero);
	if (filter && *filter && !bpf_map_lookup_elem(&wanted, &r.inode))
		return 0;
	__u32 one = 1;
	__u32 *states = bpf_map_lookup_elem(&only_wanted, &one);
	if (states && *states) {
		struct socket *sock = bpf_sock_from_file(file);
		struct sock *sk = sock ? sock->sk : 0;
		if (!sk || sk->sk_protocol != IPPROTO_TCP ||
		    !((1u << (sk->__sk_common.skc_state & 31)) & *states))
			return 0;
	}
	r.pid = task->tgid;
	r.fd = ctx->fd;
	r.start_boottime_ns = task->start_boottime;
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
