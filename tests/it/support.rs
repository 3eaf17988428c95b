//! Shared helpers for the integration tests: root gating, throwaway network namespaces,
//! leaking servers, and running the built binary.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// Whether this is a CI run (`CI` set): there a test that cannot run fails, never skips.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The crate's root, where Cargo.toml and packaging/ are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, panicking with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `program args` runs and exits 0 (a tool the test needs is here).
pub fn tool_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Poll `check` every `every` until it gives a value; past `secs`, fail naming `what` and
/// what `log` says (the daemon's or container's output).
pub fn poll<T>(
    secs: u64,
    every: Duration,
    what: &str,
    log: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; log:\n{}",
            log()
        );
        std::thread::sleep(every);
    }
}

/// True when the test may use root. Off CI a non-root run skips with a note; under CI
/// (`CI` set) a root test that cannot run is a failure, never a silent skip.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "{test} needs root, and CI must run it");
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
    spawn_named_inheriting(fd, std::ffi::OsStr::new("sleep"))
}

/// [`spawn_inheriting`] with `comm` as the child's command name: it runs `sleep` through a
/// symlink of that name (the kernel names a process after the file it executed), as a
/// process can name itself anything.
pub fn spawn_named_inheriting(fd: i32, comm: &std::ffi::OsStr) -> Child {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join(comm);
    std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink to sleep");
    let child = with_inherited(fd, || {
        Command::new(&link)
            .arg("3600")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep")
    });
    // Until the exec is done the child still bears our name.
    use std::os::unix::ffi::OsStrExt;
    let want: Vec<u8> = comm.as_bytes().iter().take(15).copied().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(format!("/proc/{}/comm", child.id()))
        .map(|c| c.strip_suffix(b"\n").unwrap_or(&c).to_vec())
        .ok()
        .as_deref()
        != Some(want.as_slice())
    {
        assert!(Instant::now() < deadline, "the child did not exec");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// Run `spawn` with `fd` inheritable (FD_CLOEXEC cleared) for just that spawn.
pub fn with_inherited<T>(fd: i32, spawn: impl FnOnce() -> T) -> T {
    let flags = nix::fcntl::fcntl(fd_ref(fd), nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    let mut cleared = nix::fcntl::FdFlag::from_bits_truncate(flags);
    cleared.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(fd_ref(fd), nix::fcntl::FcntlArg::F_SETFD(cleared)).expect("F_SETFD");
    let child = spawn();
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
    // Never pin an index on the host's bpffs: it would outlive the test (tests/it/bpf.rs
    // pins in a bpffs of its own).
    cmd.env("SOCKWARDEN_BPF_PIN_DIR", "");
    cmd
}

/// Run `command` with a terminal (a pty) on its stdin, so that `clean` asks for
/// confirmation; when the prompt appears on stderr, `during` runs while it waits (the race
/// a test sets up), then `y` is typed. Returns (exit code, stdout, stderr). Panics if no
/// prompt comes within 60 s.
pub fn run_confirming(mut command: Command, during: impl FnOnce()) -> (i32, String, String) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Condvar, Mutex};
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut child = command
        .stdin(Stdio::from(std::fs::File::from(pty.slave)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockwarden on a pty");
    let mut master = std::fs::File::from(pty.master);
    let stderr = Arc::new((Mutex::new(Vec::<u8>::new()), Condvar::new()));
    let reader = {
        let stderr = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let (text, ready) = &*stderr;
                text.lock().expect("lock").extend_from_slice(&buf[..n]);
                ready.notify_all();
                if n == 0 {
                    break;
                }
            }
        })
    };
    let mut stdout = child.stdout.take().expect("stdout");
    let out_reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    // Drain the pty (the typed answer is echoed there).
    let mut echo = master.try_clone().expect("clone master");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while echo.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    {
        let (text, ready) = &*stderr;
        let mut guard = text.lock().expect("lock");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if String::from_utf8_lossy(&guard).contains("[y/N]") {
                break;
            }
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no confirmation prompt: {}",
                String::from_utf8_lossy(&guard)
            );
            guard = ready
                .wait_timeout(guard, Duration::from_millis(50))
                .expect("wait")
                .0;
        }
    }
    during();
    let _ = master.write_all(b"y\n");
    let status = child.wait().expect("wait");
    reader.join().expect("stderr reader");
    let out = out_reader.join().expect("stdout reader");
    let err = stderr.0.lock().expect("lock").clone();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
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

/// CLOSE_WAIT sockets on `port` in `ns` (the clients' orphaned leftovers share the port).
pub fn ports_in(ns: &TestNetns, port: u16) -> usize {
    scan_json(&[
        "--state",
        "close-wait",
        "--netns",
        ns.path().to_str().expect("path"),
        "--port",
        &port.to_string(),
    ])
    .len()
}

/// The entries of an audit log as `audit show --json` gives them (one per socket, each
/// outcome joined to its intent), as JSON.
pub fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    match sockwarden::audit::read_trail(path) {
        Ok(trail) => trail
            .records
            .iter()
            .map(|r| serde_json::to_value(r).expect("JSON"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn kill_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
