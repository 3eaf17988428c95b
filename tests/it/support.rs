//! Shared helpers for the integration tests: root gating, throwaway network namespaces,
//! leaking servers, and running the built binary.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// True when the test may use root. Off CI a non-root run skips with a note; under CI
/// (`CI` set) a root test that cannot run is a failure, never a silent skip.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI must run it"
    );
    eprintln!("skipping {test}: needs root");
    false
}

/// A network namespace this test created: held open by a `sleep` child started in it, so
/// a default all-namespace scan finds it through `/proc/<pid>/ns/net` like any container.
/// Dropping it kills that child; the namespace goes away with its last socket.
pub struct TestNetns {
    holder: Child,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        let holder = Command::new("unshare")
            .args(["--net", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn `unshare --net sleep` (util-linux)");
        let ns = TestNetns { holder };
        let ours = std::fs::metadata("/proc/self/ns/net").expect("stat own netns");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::metadata(ns.path()) {
                if m.ino() != ours.ino() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the test namespace did not appear"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        ns.enter(|| sockwarden::sys::probe::bring_loopback_up().expect("bring lo up"));
        ns
    }

    /// `/proc/<pid>/ns/net` of the holder: what `--netns` takes.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path())
            .expect("stat test netns")
            .ino()
    }

    pub fn holder_pid(&self) -> u32 {
        self.holder.id()
    }

    /// Run `f` on a thread inside the namespace. Sockets it creates stay in the namespace
    /// and are owned by this test process.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("open test netns");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
            f()
        })
        .join()
        .expect("thread in test netns")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A server that accepted connections whose clients then closed: every server-side socket
/// sits in CLOSE_WAIT, held open by this test process, as a leaking service would.
pub struct LeakyServer {
    pub listener: TcpListener,
    pub leaked: Vec<TcpStream>,
}

impl LeakyServer {
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("listener addr")
    }
    pub fn fds(&self) -> Vec<i32> {
        self.leaked.iter().map(|s| s.as_raw_fd()).collect()
    }
}

/// Leak `n` CLOSE_WAIT sockets on `bind` (e.g. "127.0.0.1:0" or "[::1]:0") inside `ns`.
pub fn leak_close_wait(ns: &TestNetns, bind: &'static str, n: usize) -> LeakyServer {
    ns.enter(move || {
        let listener = TcpListener::bind(bind).expect("bind listener");
        let addr = listener.local_addr().expect("addr");
        let mut leaked = Vec::new();
        for _ in 0..n {
            let client = TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            // The client shuts down its side and waits for the ACK before closing, so no
            // orphan timer later resets the server side (KERNEL-NOTES: stable fixture).
            client.shutdown(Shutdown::Write).expect("client shutdown");
            wait_for_fin_ack(&client);
            drop(client);
            leaked.push(server);
        }
        LeakyServer { listener, leaked }
    })
}

/// An owned FIN_WAIT_2: the test shuts down its write side; the peer (also held by the test)
/// never closes. Returns (the fin-wait-2 side, the peer).
pub fn half_closed(ns: &TestNetns, bind: &'static str) -> (TcpStream, TcpStream, TcpListener) {
    ns.enter(move || {
        let listener = TcpListener::bind(bind).expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        client.shutdown(Shutdown::Write).expect("shutdown");
        wait_for_fin_ack(&client);
        (client, peer, listener)
    })
}

fn wait_for_fin_ack(s: &TcpStream) {
    const TCP_FIN_WAIT2: u8 = 5;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_state(s) != Some(TCP_FIN_WAIT2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn tcp_state(s: &TcpStream) -> Option<u8> {
    // SAFETY: tcp_info is plain old data; all-zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which lives for the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.tcpi_state)
}

/// Start `sleep` as a child that inherits `fd` (FD_CLOEXEC cleared): a second owner of the
/// same socket, as after a fork.
pub fn spawn_inheriting(fd: i32) -> Child {
    let flags = nix::fcntl::fcntl(fd_ref(fd), nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    let mut cleared = nix::fcntl::FdFlag::from_bits_truncate(flags);
    cleared.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(fd_ref(fd), nix::fcntl::FcntlArg::F_SETFD(cleared)).expect("F_SETFD");
    let child = Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    // Only that child should inherit it.
    nix::fcntl::fcntl(
        fd_ref(fd),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .expect("F_SETFD");
    child
}

fn fd_ref(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the callers pass fds of sockets they keep open for the whole test.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// The built binary.
pub fn sockwarden() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockwarden"));
    cmd.env_remove("SOCKWARDEN_LOG");
    cmd
}

/// Run the binary and return (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = sockwarden().args(args).output().expect("run sockwarden");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `scan --json` lines as JSON values.
pub fn scan_json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["scan", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert!(code == 0 || code == 1, "scan exited {code}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

pub fn kill_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
