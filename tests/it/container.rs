//! The container image (packaging/container/): `build-image.sh` images this test's dev binary
//! offline (FROM scratch: the binary, exactly the libraries it links, the packaged config and
//! default policy), and podman runs it the way packaging/daemonset.yaml runs the pod: uid 0
//! with exactly the five capabilities, no_new_privs, the runtime's default seccomp profile, a
//! read-only root, the host's PID namespace, the host's /run/netns (HostToContainer) and
//! /sys/fs/bpf, the config, a policy directory and the state directory mounted. In enforce
//! mode the daemon must find a CLOSE_WAIT socket this test leaks in a namespace of the host,
//! attribute it to this process, destroy it, and record that in the mounted audit log.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use serde_json::Value;

use crate::support::{
    audit_records, in_ci, leak_close_wait, poll, ports_in, repo_root, root_or_skip, run, run_ok,
    stdout_of, tool_works, TestNetns,
};

/// What packaging/daemonset.yaml adds after `drop: [ALL]`.
const CAPS: &str = "NET_ADMIN,SYS_ADMIN,SYS_PTRACE,DAC_READ_SEARCH,KILL";
/// CAP_DAC_READ_SEARCH (2), CAP_KILL (5), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19),
/// CAP_SYS_ADMIN (21).
const CAP_MASK: u64 = 1 << 2 | 1 << 5 | 1 << 12 | 1 << 19 | 1 << 21;
const CAP_SYS_RESOURCE: u64 = 1 << 24;
/// The DaemonSet's `--metrics-listen=:9477`, probed inside the container's own namespace.
const METRICS_PORT: u16 = 9477;

/// A `CapEff:`-style hex field of a `/proc/<pid>/status` text.
fn status_hex(status: &str, field: &str) -> u64 {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in\n{status}"));
    u64::from_str_radix(value.trim(), 16).expect("hex capability set")
}

/// The image and the container this test made: removed even when an assertion fails.
struct Podman {
    /// Global flags (`--runtime runc`) for the commands that start a container.
    global: Vec<String>,
    tag: String,
    container: Option<String>,
    /// This test made /run/netns: removed again (only while empty).
    made_run_netns: bool,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(&self.global);
        cmd
    }

    fn logs(&self) -> String {
        let Some(name) = &self.container else {
            return String::new();
        };
        Command::new("podman")
            .args(["logs", name])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    fn inspect(&self, format: &str) -> String {
        let name = self.container.as_deref().expect("a container");
        stdout_of(&run_ok(
            Command::new("podman").args(["inspect", "--format", format, name]),
        ))
        .trim()
        .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(name) = self.container.take() {
            let _ = Command::new("podman").args(["rm", "-f", &name]).output();
        }
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.tag])
            .output();
        if self.made_run_netns {
            let _ = fs::remove_dir("/run/netns");
        }
    }
}

/// `--ulimit` flags for `podman run`. Unless told otherwise podman 4.3 gives a container
/// RLIMIT_NOFILE 1048576 (and RLIMIT_NPROC above the 32768 it sets for itself); raising a
/// limit needs CAP_SYS_RESOURCE, which the root of this workplace's machines lacks (`setrlimit
/// RLIMIT_NOFILE: Operation not permitted` from the runtime). There the container gets this
/// process's open-files limit, and an RLIMIT_NPROC under podman's (it does not bind uid 0).
fn ulimit_args() -> Vec<String> {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    if status_hex(&status, "CapEff:") & CAP_SYS_RESOURCE != 0 {
        return Vec::new();
    }
    let limits = fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let nofile: Vec<&str> = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .expect("Max open files in /proc/self/limits")
        .split_whitespace()
        .collect();
    vec![
        "--ulimit".into(),
        format!("nofile={}:{}", nofile[0], nofile[1]),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// Global podman flags under which a container starts here. crun (podman's default) refuses
/// every container on a host whose cgroup v1 hierarchy has a cgroup2 with a controller
/// (`cgroups in hybrid mode not supported`), as on this workplace's machines; runc runs them.
fn working_runtime(tag: &str, ulimits: &[String]) -> Result<Vec<String>, String> {
    let mut tried = String::new();
    for global in [vec![], vec!["--runtime".to_owned(), "runc".to_owned()]] {
        if !global.is_empty() && !tool_works("runc", &["--version"]) {
            tried.push_str("runc: not installed\n");
            continue;
        }
        let out = Command::new("podman")
            .args(&global)
            .args(["run", "--rm", "--network=none"])
            .args(ulimits)
            .arg(tag)
            .arg("--version")
            .output();
        match out {
            Ok(o) if o.status.success() && stdout_of(&o).starts_with("sockwarden ") => {
                return Ok(global)
            }
            Ok(o) => tried.push_str(&format!(
                "podman {global:?} run: {}{}\n",
                stdout_of(&o),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => tried.push_str(&format!("podman {global:?} run: {e}\n")),
        }
    }
    Err(tried)
}

/// The shared libraries and loader `ldd` lists for `binary` (linux-vdso is the kernel's).
fn ldd_libraries(binary: &Path) -> BTreeSet<String> {
    let out = run_ok(Command::new("ldd").arg(binary));
    stdout_of(&out)
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(*path),
                [path, ..] if path.starts_with('/') => Some(*path),
                _ => None,
            }
        })
        .map(|p| p.trim_start_matches('/').to_owned())
        .collect()
}

/// Every non-directory under `dir`, as paths relative to it; empty directories too, with a
/// trailing `/`.
fn tree(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    let mut empty = true;
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        empty = false;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().expect("file type").is_dir() {
            tree(&entry.path(), &format!("{name}/"), out);
        } else {
            out.insert(name);
        }
    }
    if empty && !prefix.is_empty() {
        out.insert(prefix.to_owned());
    }
}

/// `GET path` on the daemon's metrics port, from a thread inside the container's network
/// namespace (where the kubelet's probes would connect).
fn probe(container_pid: u32, path: &'static str) -> Option<String> {
    let ns = fs::File::open(format!("/proc/{container_pid}/ns/net")).ok()?;
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).ok()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        Some(reply)
    })
    .join()
    .ok()
    .flatten()
}

/// Poll `check` until it gives a value; fail with `what` and the container's log.
fn wait_for<T>(podman: &Podman, secs: u64, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll(
        secs,
        Duration::from_millis(100),
        what,
        || podman.logs(),
        check,
    )
}

/// One test, because building the image is the slow part. Needs podman (and runc where crun
/// cannot start containers): under CI (`CI` set) their absence is a failure, elsewhere the
/// test skips with a note.
#[test]
fn the_image_runs_like_the_daemonset_and_destroys_a_stuck_socket() {
    if !root_or_skip("the container image") {
        return;
    }
    if !tool_works("podman", &["--version"]) {
        assert!(
            !in_ci(),
            "podman missing: .ci/run installs podman and runc (apt-get install podman runc)"
        );
        eprintln!("skipping the container test: podman missing (apt-get install podman runc)");
        return;
    }

    // Build: this test's dev binary, stripped (no second, optimized compile); nothing pulled.
    let tag = format!("localhost/sockwarden:test-{}", std::process::id());
    let mut podman = Podman {
        global: Vec::new(),
        tag: tag.clone(),
        container: None,
        made_run_netns: false,
    };
    let binary = Path::new(env!("CARGO_BIN_EXE_sockwarden"));
    let built = run_ok(
        Command::new(repo_root().join("packaging/container/build-image.sh"))
            .arg("--binary")
            .arg(binary)
            .arg("--tag")
            .arg(&tag)
            .current_dir(repo_root()),
    );
    assert_eq!(
        stdout_of(&built).lines().last(),
        Some(tag.as_str()),
        "build-image.sh prints the tag last"
    );

    // The image's configuration.
    let inspect: Value = serde_json::from_str(&stdout_of(&run_ok(
        Command::new("podman").args(["image", "inspect", &tag]),
    )))
    .expect("podman image inspect: JSON");
    let image = &inspect[0];
    assert_eq!(
        image["Config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/sockwarden"]),
        "{image:#}"
    );
    assert_eq!(
        image["Config"]["Cmd"],
        serde_json::json!(["run", "--config=/etc/sockwarden/sockwarden.toml"])
    );
    assert_eq!(image["Config"]["User"], "0:0");
    let labels = &image["Config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "sockwarden");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    let size = image["Size"].as_u64().expect("image Size");
    assert!(
        size < 40_000_000,
        "the image is {size} bytes; expected a small one"
    );

    // Its files: exactly the binary, the libraries ldd lists, the packaged config and policy,
    // passwd and group, and the empty mount points.
    let mount = PathBuf::from(
        stdout_of(&run_ok(
            Command::new("podman").args(["image", "mount", &tag]),
        ))
        .trim()
        .to_owned(),
    );
    let mut files = BTreeSet::new();
    tree(&mount, "", &mut files);
    let shipped = |path: &str| fs::read_to_string(mount.join(path)).expect("a file of the image");
    let config = shipped("etc/sockwarden/sockwarden.toml");
    let policy = shipped("etc/sockwarden/policies/default.toml");
    run_ok(Command::new("podman").args(["image", "unmount", &tag]));
    let mut expected: BTreeSet<String> = [
        "usr/bin/sockwarden",
        "etc/passwd",
        "etc/group",
        "etc/sockwarden/sockwarden.toml",
        "etc/sockwarden/policies/default.toml",
        "var/lib/sockwarden/",
        "run/netns/",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    expected.extend(ldd_libraries(binary));
    assert_eq!(files, expected, "the image's files");
    assert_eq!(
        config,
        fs::read_to_string(repo_root().join("packaging/sockwarden.toml")).expect("read config")
    );
    assert_eq!(
        policy,
        fs::read_to_string(repo_root().join("policies/default.toml")).expect("read policy")
    );

    let ulimits = ulimit_args();
    podman.global = match working_runtime(&tag, &ulimits) {
        Ok(global) => global,
        Err(tried) => {
            assert!(
                !in_ci(),
                "podman cannot start a container here (.ci/run installs runc for hosts where \
                 crun refuses):\n{tried}"
            );
            eprintln!("skipping the container run: podman cannot start a container:\n{tried}");
            return;
        }
    };

    // A leaking service in a namespace of the host, reachable only as /proc/<pid>/ns/net:
    // the container sees it through the host's PID namespace. Leaked before the daemon
    // starts (it lists namespaces at start, then once a minute).
    let ns = TestNetns::new();
    let mut leak = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let port = leak.addr().port();
    assert_eq!(ports_in(&ns, port), 1, "the leaked CLOSE_WAIT socket");

    // The ConfigMaps: the packaged default policy, and a rule that destroys this test's
    // socket at once. It names the namespace and port, because the daemon watches every
    // namespace of the host, other tests' included.
    let work = tempfile::tempdir().expect("tempdir");
    let policies = work.path().join("policies");
    let state = work.path().join("state");
    fs::create_dir(&policies).expect("mkdir policies");
    fs::create_dir(&state).expect("mkdir state");
    fs::copy(
        repo_root().join("policies/default.toml"),
        policies.join("default.toml"),
    )
    .expect("copy the default policy");
    fs::write(
        policies.join("10-container-test.toml"),
        format!(
            "[[rule]]\nname = \"container-test\"\nstates = [\"close-wait\"]\n\
             older_than = \"0s\"\nlocal_ports = [{port}]\nnetns = [\"pid:{}(*)\"]\n\
             action = \"destroy\"\n",
            ns.holder_pid()
        ),
    )
    .expect("write the test policy");
    // The DaemonSet's hostPath is DirectoryOrCreate (`ip netns add` makes it too).
    if !Path::new("/run/netns").exists() {
        fs::create_dir_all("/run/netns").expect("mkdir /run/netns");
        podman.made_run_netns = true;
    }

    // The pod, as podman flags: root (runAsUser 0), drop ALL + the five, no_new_privs
    // (allowPrivilegeEscalation: false), the default seccomp profile (RuntimeDefault), a
    // read-only root with no tmpfs added (readOnlyRootFilesystem), hostPID, its own network
    // namespace with nothing in it (no hostNetwork; `none` needs no CNI setup on the host).
    let name = format!("sockwarden-test-{}", std::process::id());
    let cap_add = format!("--cap-add={CAPS}");
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name.as_str(),
        "--user=0:0",
        "--pid=host",
        "--network=none",
        "--cap-drop=ALL",
        cap_add.as_str(),
        "--security-opt=no-new-privileges",
        "--read-only",
        "--read-only-tmpfs=false",
        // The DaemonSet passes spec.nodeName: records name the node, not the pod.
        "--env=SOCKWARDEN_NODE_NAME=test-node-1",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.extend(ulimits);
    let mut volume = |spec: String| args.extend(["--volume".to_owned(), spec]);
    volume(format!(
        "{}:/etc/sockwarden/sockwarden.toml:ro",
        repo_root().join("packaging/sockwarden.toml").display()
    ));
    volume(format!(
        "{}:/etc/sockwarden/policies:ro",
        policies.display()
    ));
    volume(format!("{}:/var/lib/sockwarden", state.display()));
    volume("/run/netns:/run/netns:ro,rslave".to_owned());
    // The DaemonSet mounts it read-write to pin the eBPF index; a test must not leave an
    // index pinned on the host, so here it is read-only (the index lives with the container).
    if Path::new("/sys/fs/bpf").is_dir() {
        volume("/sys/fs/bpf:/sys/fs/bpf:ro".to_owned());
    }
    args.push(tag.clone());
    // The DaemonSet's args, then enforce mode and a short interval.
    args.extend(
        [
            "run",
            "--config=/etc/sockwarden/sockwarden.toml",
            "--log-format=json",
            "--metrics-listen=:9477",
            "--mode=enforce",
            "--interval=1s",
        ]
        .map(str::to_owned),
    );
    run_ok(podman.cmd().args(&args));
    podman.container = Some(name);
    let container_pid: u32 = podman
        .inspect("{{.State.Pid}}")
        .parse()
        .expect("the container's pid");

    // The audit log in the mounted state directory: this socket destroyed, its owner (this
    // process) named by its pid in the host's PID namespace.
    let audit = state.join("audit.jsonl");
    let our_pid = u64::from(std::process::id());
    let outcome = wait_for(
        &podman,
        60,
        "an outcome `destroyed` for the leaked socket",
        || {
            audit_records(&audit).into_iter().find(|r| {
                r["kind"] == "outcome"
                    && r["outcome"]["result"] == "destroyed"
                    && r["target"]["local"] == format!("127.0.0.1:{port}").as_str()
            })
        },
    );
    assert_eq!(outcome["rule"], "container-test", "{outcome:#}");
    assert_eq!(outcome["mode"], "enforce");
    assert_eq!(outcome["actor"]["kind"], "daemon");
    assert_eq!(outcome["host"], "test-node-1", "{outcome:#}");
    assert_eq!(
        outcome["actor"]["pid"].as_u64(),
        Some(u64::from(container_pid)),
        "the daemon's pid, as the host sees it (hostPID)"
    );
    assert_eq!(outcome["target"]["netns_inode"].as_u64(), Some(ns.inode()));
    let owners: Vec<(Option<u64>, Option<i64>)> = outcome["target"]["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .map(|o| (o["pid"].as_u64(), o["fd"].as_i64()))
        .collect();
    let fd = i64::from(leak.fds()[0]);
    assert_eq!(owners, [(Some(our_pid), Some(fd))], "{outcome:#}");

    // Gone from the namespace; the owner sees the abort.
    assert_eq!(ports_in(&ns, port), 0, "the socket is gone");
    let err = leak.leaked[0]
        .write_all(b"x")
        .expect_err("the owner sees the abort");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");

    let records = audit_records(&audit);
    let start = records
        .iter()
        .find(|r| r["kind"] == "note" && r["note"]["event"] == "start")
        .expect("a start note");
    let detail = start["note"]["detail"].as_str().unwrap_or_default();
    // The start-up SOCK_DESTROY probe unshares a throwaway namespace: allowed by the
    // capabilities and the seccomp profile.
    assert!(
        detail.contains("mode enforce") && detail.contains("destroy works"),
        "{detail}"
    );

    // What the kubelet's probes would see, on the pod's own network namespace.
    let ready = wait_for(&podman, 30, "GET /readyz answering 200", || {
        probe(container_pid, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200"))
    });
    assert!(ready.contains("ready"), "{ready}");
    let healthy = probe(container_pid, "/healthz").unwrap_or_default();
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");

    // The daemon holds exactly the five capabilities, under no_new_privs and a seccomp
    // filter.
    let status = fs::read_to_string(format!("/proc/{container_pid}/status"))
        .expect("the daemon's /proc status");
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(status_hex(&status, field), CAP_MASK, "{field}\n{status}");
    }
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");

    // SIGTERM (podman stop, as the kubelet stops a pod): a shutdown record, exit 0, and a
    // trail that verifies.
    run_ok(podman.cmd().args([
        "stop",
        "--time",
        "30",
        podman.container.as_deref().expect("name"),
    ]));
    assert_eq!(
        podman.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        podman.logs()
    );
    let records = audit_records(&audit);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "note" && r["note"]["event"] == "shutdown"),
        "a shutdown note: {records:#?}"
    );
    let (code, out, err) = run(&[
        "audit",
        "verify",
        "--audit-log",
        audit.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "the container's trail verifies: {out}{err}");

    let name = podman.container.take().expect("name");
    run_ok(Command::new("podman").args(["rm", &name]));
    run_ok(Command::new("podman").args(["rmi", &tag]));
    assert!(
        !tool_works("podman", &["image", "exists", &tag]),
        "the test image is removed"
    );
}
