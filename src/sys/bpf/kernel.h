/* The few kernel types sockwarden's BPF programs read, declared by hand instead of a
 * vmlinux.h dumped from one kernel: with preserve_access_index every field access is a
 * CO-RE relocation that the loader resolves against the running kernel's BTF, so only the
 * names matter here, not the layout. Keeping this small keeps the build reproducible on any
 * machine (the committed object must not depend on the kernel it was built on). */
#ifndef SOCKWARDEN_KERNEL_H
#define SOCKWARDEN_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u64 u64;
typedef __u32 u32;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_LRU_HASH = 9,
};

enum {
	BPF_F_NO_PREALLOC = 1,
	BPF_ANY = 0,
};

enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
};

#define IPPROTO_TCP 6
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define __kernel __attribute__((preserve_access_index))

struct ns_common {
	unsigned int inum;
} __kernel;

struct net {
	struct ns_common ns;
} __kernel;

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	__u8 s6_addr[16];
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	unsigned char skc_state;
	int skc_bound_dev_if;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __kernel;

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
} __kernel;

struct file {
	struct inode *f_inode;
} __kernel;

struct sock;

struct socket {
	struct file *file;
	struct sock *sk;
} __kernel;

typedef struct {
	__u32 val;
} kuid_t;

struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
	kuid_t sk_uid;
	__u16 sk_protocol;
} __kernel;

struct task_struct {
	int tgid;
	__u64 start_boottime;
} __kernel;

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __kernel;

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
} __kernel;

#endif
