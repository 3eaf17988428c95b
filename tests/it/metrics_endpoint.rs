//! The metrics endpoint end to end, on loopback: a pass through the fake system, the real
//! scan and planner, then `GET /metrics` over a plain TcpStream, parsed strictly as
//! Prometheus text 0.0.4; other paths, slow clients, and the textfile written atomically.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sockwarden::actions::ActionReport;
use sockwarden::engine::{self, EngineInput, History, Plan, RunOptions};
use sockwarden::filter::SocketFilter;
use sockwarden::metrics::Metrics;
use sockwarden::model::{
    Cookie, Family, Inode, KernelSocket, Netns, NetnsId, Owner, Pid, Process, ProcessId, TcpState,
};
use sockwarden::policy::load_str;
use sockwarden::scan::{self, Observations, Snapshot};
use sockwarden::sys::fake::FakeSystem;

// ---- a strict parser of the text format ------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct MetricFamily {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

/// Families by name. Every sample must follow the `# TYPE` of its family (families are
/// contiguous), carry a name that family's type allows (`_bucket`/`_sum`/`_count` for a
/// histogram, the family's own name otherwise), well-formed labels with only the three
/// escapes, and a number. Histograms must be cumulative with `+Inf` equal to `_count`.
fn parse(text: &str) -> Result<BTreeMap<String, MetricFamily>, String> {
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut series = std::collections::HashSet::new();
    let body = text
        .strip_suffix('\n')
        .ok_or("the exposition must end with a newline")?;
    for (n, line) in body.split('\n').enumerate() {
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text"))?;
            check_name(name).map_err(|e| at(&e))?;
            let fam = families.entry(name.to_string()).or_default();
            if fam.help.is_some() {
                return Err(at("second HELP"));
            }
            if !fam.samples.is_empty() {
                return Err(at("HELP after samples"));
            }
            fam.help = Some(unescape(help, false).map_err(|e| at(&e))?);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("unknown type"));
            }
            let fam = families.entry(name.to_string()).or_default();
            if !fam.kind.is_empty() {
                return Err(at("second TYPE"));
            }
            if !fam.samples.is_empty() {
                return Err(at("TYPE after samples"));
            }
            fam.kind = kind.to_string();
            current = Some(name.to_string());
        } else if line.starts_with('#') {
            // A plain comment.
        } else {
            let sample = parse_sample(line).map_err(|e| at(&e))?;
            let family = current
                .as_ref()
                .ok_or_else(|| at("sample before any TYPE"))?;
            let fam = families.get_mut(family).ok_or_else(|| at("no family"))?;
            let allowed = match fam.kind.as_str() {
                "histogram" => {
                    let suffix = sample.name.strip_prefix(family.as_str()).unwrap_or("");
                    match suffix {
                        "_bucket" if sample.labels.contains_key("le") => true,
                        "_sum" | "_count" if !sample.labels.contains_key("le") => true,
                        _ => false,
                    }
                }
                "counter" => {
                    sample.name == *family && sample.value >= 0.0 && sample.value.is_finite()
                }
                _ => sample.name == *family,
            };
            if !allowed {
                return Err(at(&format!(
                    "not a sample of the {} family {family}",
                    fam.kind
                )));
            }
            if !series.insert(format!("{}{:?}", sample.name, sample.labels)) {
                return Err(at("duplicate series"));
            }
            fam.samples.push(sample);
        }
    }
    for (name, fam) in &families {
        if fam.kind.is_empty() {
            return Err(format!("{name}: HELP without TYPE"));
        }
        if fam.kind == "histogram" {
            check_histogram(name, fam)?;
        }
    }
    Ok(families)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut l) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = l.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = l.find('=').ok_or("label without =")?;
            let label = &l[..eq];
            let mut chars = label.chars();
            if !chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!("bad label name {label:?}"));
            }
            l = l[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            // Find the closing quote, skipping escaped characters.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in l.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, '\n') => return Err("raw newline in a label value".into()),
                    _ => {}
                }
            }
            let end = end.ok_or("unterminated label value")?;
            let value = unescape(&l[..end], true)?;
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            l = &l[end + 1..];
            if let Some(after) = l.strip_prefix(',') {
                l = after;
            } else if !l.starts_with('}') {
                return Err("expected , or } after a label".into());
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut parts = rest.split(' ');
    let value = parts.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Undo `\\`, `\n` and (in label values) `\"`; any other escape is an error.
fn unescape(s: &str, label: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {s:?}")),
        }
    }
    Ok(out)
}

/// One histogram series: (le, cumulative count) per bucket, `_sum`, `_count`.
type HistogramSeries = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

fn check_histogram(name: &str, fam: &MetricFamily) -> Result<(), String> {
    let mut by_series: BTreeMap<String, HistogramSeries> = BTreeMap::new();
    for s in &fam.samples {
        let mut key_labels = s.labels.clone();
        let le = key_labels.remove("le");
        let entry = by_series.entry(format!("{key_labels:?}")).or_default();
        if s.name.ends_with("_bucket") {
            let le = le.ok_or("bucket without le")?;
            let bound = match le.as_str() {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse::<f64>()
                    .map_err(|e| format!("{name}: le {v:?}: {e}"))?,
            };
            entry.0.push((bound, s.value));
        } else if s.name.ends_with("_sum") {
            entry.1 = Some(s.value);
        } else {
            entry.2 = Some(s.value);
        }
    }
    for (labels, (buckets, sum, count)) in by_series {
        let count = count.ok_or(format!("{name}{labels}: no _count"))?;
        sum.ok_or(format!("{name}{labels}: no _sum"))?;
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            return Err(format!(
                "{name}{labels}: buckets not increasing and cumulative"
            ));
        }
        match buckets.last() {
            Some(&(b, n)) if b == f64::INFINITY && n == count => {}
            _ => return Err(format!("{name}{labels}: +Inf bucket missing or != _count")),
        }
    }
    Ok(())
}

/// The value of the one sample `name{labels}` (labels given exactly, `le` included).
fn value(
    fams: &BTreeMap<String, MetricFamily>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    // Labels left out must be empty (an empty label is no label to Prometheus).
    let set = |labels: &mut dyn Iterator<Item = (String, String)>| -> BTreeMap<String, String> {
        labels.filter(|(_, v)| !v.is_empty()).collect()
    };
    let want = set(&mut labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fams.values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && set(&mut s.labels.clone().into_iter()) == want)
        .map(|s| s.value)
}

fn kind<'a>(fams: &'a BTreeMap<String, MetricFamily>, name: &str) -> &'a str {
    fams.get(name).map_or("missing", |f| f.kind.as_str())
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    let fams = parse(ok).expect("valid");
    assert_eq!(
        value(&fams, "a_total", &[("x", "q\"\\\n")]),
        Some(1.0),
        "escapes undone"
    );
    for bad in [
        "a 1\n",                                  // no TYPE
        "# TYPE a gauge\na 1",                    // no final newline
        "# TYPE a counter\na_total 1\n",          // wrong name for a counter
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",       // unknown escape
        "# TYPE a gauge\na{x=\"y} 1\n",           // unterminated
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n", // label twice
        "# TYPE a gauge\na 1\na 2\n",             // duplicate series
        "# TYPE a gauge\n# TYPE b gauge\na 1\n",  // sample outside its family
        "# TYPE a gauge\na one\n",                // not a number
        "# TYPE a counter\na -1\n",               // negative counter
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", // +Inf != count
        "# TYPE h histogram\nh 1\n",                                      // bare histogram sample
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---- a pass through the real scan and planner --------------------------------------------

const HOST: NetnsId = NetnsId {
    dev: 4,
    inode: 4026531840,
};
const ODD: NetnsId = NetnsId {
    dev: 4,
    inode: 4026532111,
};
/// A namespace name with every character the format must escape.
const ODD_NAME: &str = "ns \"quoted\" \\ back\nslash";

const POLICY: &str = r#"
mode = "enforce"
[guards]
max_destroys_per_minute = 1
[[rule]]
name = "cw"
states = ["close-wait"]
older_than = "1m"
action = "destroy"
"#;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn fake() -> FakeSystem {
    let api = Arc::new(Process {
        id: ProcessId {
            pid: Pid(4242),
            start_time: 7,
        },
        comm: "java".into(),
        cmdline: "java -jar api.jar".into(),
        exe: None,
        uid: 1000,
        unit: Some("api.service".into()),
        container: None,
        handle: Default::default(),
    });
    let socket = |cookie: u64, netns: NetnsId, state: TcpState| KernelSocket {
        netns,
        family: Family::Ipv4,
        state,
        local: SocketAddr::from(([10, 0, 0, 1], 8080)),
        remote: SocketAddr::from(([10, 0, 0, 2], 40000 + cookie as u16)),
        interface: 0,
        cookie: Cookie(cookie),
        inode: Inode(9000 + cookie),
        uid: 1000,
        recv_q: 0,
        send_q: 0,
        timer: None,
        tcp: None,
    };
    let mut owners = sockwarden::model::InodeMap::default();
    for cookie in 1..=3 {
        owners.insert(
            Inode(9000 + cookie),
            vec![Owner {
                process: Arc::clone(&api),
                fd: 10 + cookie as i32,
            }],
        );
    }
    FakeSystem {
        namespaces: vec![
            Netns::new(HOST, "host", PathBuf::from("/proc/self/ns/net")),
            Netns::new(ODD, ODD_NAME, PathBuf::from("/run/netns/odd")),
        ],
        sockets: vec![
            socket(1, HOST, TcpState::CloseWait),
            socket(2, HOST, TcpState::CloseWait),
            socket(3, HOST, TcpState::CloseWait),
            socket(4, ODD, TcpState::FinWait2),
        ],
        owners,
        uptime: Duration::from_secs(100_000),
        ..FakeSystem::default()
    }
}

/// One pass: scan with observed ages (cookies 1-3 seen 2 h, 10 min and 30 s ago), plan
/// under POLICY. Expected: two old CLOSE_WAITs, one destroy allowed, one held by the budget.
fn pass(sys: &FakeSystem) -> (Snapshot, Plan) {
    let mut seen = Observations::new();
    for (cookie, secs) in [(1, 7200), (2, 600), (3, 30)] {
        seen.insert(
            (HOST, Cookie(cookie), TcpState::CloseWait),
            now() - Duration::from_secs(secs),
        );
    }
    seen.insert(
        (ODD, Cookie(4), TcpState::FinWait2),
        now() - Duration::from_secs(45),
    );
    let filter = SocketFilter {
        netns: sockwarden::filter::NetnsSelector::All,
        ..SocketFilter::default()
    };
    let snap = scan::scan(sys, &filter, &seen, now()).expect("scan");
    let policies = load_str("test.toml", POLICY).expect("policy");
    let names: HashMap<NetnsId, String> = snap
        .namespaces
        .iter()
        .map(|n| (n.id, n.name.clone()))
        .collect();
    let history = History::default();
    let plan = engine::plan(&EngineInput {
        sockets: &snap.sockets,
        netns_names: &names,
        policies: &policies,
        history: &history,
        now: now(),
        options: RunOptions::new(Pid(1)),
    });
    (snap, plan)
}

fn destroyed(target: &str) -> ActionReport {
    ActionReport {
        rule: "cw".into(),
        action: "destroy".into(),
        target: sockwarden::actions::TargetText::Words(target.into()),
        action_ref: sockwarden::audit::Action::new(sockwarden::policy::ActionKind::Destroy),
        target_ref: sockwarden::record::TargetRef::Socket {
            netns_inode: 1,
            cookie: 1,
        },
        result: "destroyed".into(),
        errno: None,
        message: None,
        intent_seq: Some(1),
        age_secs: None,
    }
}

fn observed_metrics() -> Arc<Metrics> {
    let sys = fake();
    let (snap, plan) = pass(&sys);
    assert_eq!(snap.sockets.len(), 4, "{:?}", snap.warnings);
    let metrics = Metrics::new();
    metrics.set_capability("sock_destroy", true);
    metrics.set_capability("systemd", false);
    metrics.observe_pass(
        &snap,
        &plan,
        &[destroyed("socket 0x1")],
        Duration::from_micros(1500),
    );
    metrics
}

// ---- HTTP ------------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw.as_bytes()).expect("send");
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).expect("read the whole response");
    let text = String::from_utf8(bytes).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts
        .next()
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("header");
            (k.to_string(), v.to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Response {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"),
    )
}

fn serve(metrics: &Arc<Metrics>) -> SocketAddr {
    let (addr, _thread) = metrics
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("serve on loopback");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    addr
}

#[test]
fn get_metrics_answers_with_the_expected_series() {
    let metrics = observed_metrics();
    let addr = serve(&metrics);
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    let fams = parse(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));

    let stuck = "sockwarden_stuck_sockets";
    assert_eq!(kind(&fams, stuck), "gauge");
    assert_eq!(
        value(
            &fams,
            stuck,
            &[
                ("state", "close-wait"),
                ("netns", "host"),
                ("unit", "api.service")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &fams,
            stuck,
            &[("state", "fin-wait-2"), ("netns", ODD_NAME), ("unit", "")]
        ),
        Some(1.0),
        "an escaped namespace name reads back as itself"
    );

    // The snapshot's ages are gauges (the oldest per group), not a histogram.
    let oldest = "sockwarden_stuck_oldest_age_seconds";
    assert_eq!(kind(&fams, oldest), "gauge");
    assert_eq!(
        value(
            &fams,
            oldest,
            &[
                ("state", "close-wait"),
                ("netns", "host"),
                ("unit", "api.service")
            ]
        ),
        Some(7200.0)
    );
    // Events are a histogram: the socket destroyed was 7200 s old.
    let events = "sockwarden_destroyed_socket_age_seconds";
    assert_eq!(kind(&fams, events), "histogram");
    assert_eq!(
        value(&fams, &format!("{events}_bucket"), &[("le", "3600")]),
        Some(0.0)
    );
    assert_eq!(
        value(&fams, &format!("{events}_bucket"), &[("le", "21600")]),
        Some(1.0)
    );
    assert_eq!(value(&fams, &format!("{events}_count"), &[]), Some(1.0));

    // The agent's own process, as every exporter has it.
    for (name, k) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(kind(&fams, name), k, "{name}");
    }
    let rss = value(&fams, "process_resident_memory_bytes", &[]).unwrap_or(0.0);
    assert!(rss > 1e6, "{rss}");

    assert_eq!(kind(&fams, "sockwarden_actions_total"), "counter");
    assert_eq!(
        value(
            &fams,
            "sockwarden_actions_total",
            &[
                ("action", "destroy"),
                ("rule", "cw"),
                ("outcome", "destroyed")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(kind(&fams, "sockwarden_guard_refusals_total"), "counter");
    assert_eq!(
        value(
            &fams,
            "sockwarden_guard_refusals_total",
            &[("guard", "budget:max_destroys_per_minute"), ("rule", "cw")]
        ),
        Some(1.0),
        "the planner held the second old socket by the destroy budget"
    );
    assert_eq!(kind(&fams, "sockwarden_scan_duration_seconds"), "histogram");
    assert_eq!(
        value(
            &fams,
            "sockwarden_scan_duration_seconds_bucket",
            &[("le", "0.0025")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &fams,
            "sockwarden_scan_duration_seconds_bucket",
            &[("le", "0.001")]
        ),
        Some(0.0)
    );
    assert_eq!(value(&fams, "sockwarden_passes_total", &[]), Some(1.0));
    assert_eq!(
        value(&fams, "sockwarden_last_pass_timestamp_seconds", &[]),
        Some(1_800_000_000.0)
    );
    assert_eq!(
        value(
            &fams,
            "sockwarden_capability",
            &[("capability", "sock_destroy")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&fams, "sockwarden_capability", &[("capability", "systemd")]),
        Some(0.0)
    );
    assert_eq!(
        value(&fams, "sockwarden_mode", &[("mode", "enforce")]),
        Some(1.0)
    );
    for (name, fam) in &fams {
        // Ours, or the standard process_* series every exporter has.
        assert!(
            name.starts_with("sockwarden_") || name.starts_with("process_"),
            "{name}"
        );
        assert!(
            fam.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name}: no HELP"
        );
        assert_eq!(name.ends_with("_total"), fam.kind == "counter", "{name}");
    }

    // A second pass while serving: counters add up, the gauge is replaced.
    let sys = fake();
    let (snap, plan) = pass(&sys);
    metrics.observe_pass(
        &snap,
        &plan,
        &[destroyed("socket 0x1")],
        Duration::from_millis(2),
    );
    let fams = parse(&get(addr, "/metrics").body).expect("valid");
    assert_eq!(
        value(
            &fams,
            "sockwarden_actions_total",
            &[
                ("action", "destroy"),
                ("rule", "cw"),
                ("outcome", "destroyed")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(value(&fams, "sockwarden_passes_total", &[]), Some(2.0));
    assert_eq!(
        value(
            &fams,
            stuck,
            &[
                ("state", "close-wait"),
                ("netns", "host"),
                ("unit", "api.service")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&fams, "sockwarden_scan_duration_seconds_count", &[]),
        Some(2.0)
    );
}

#[test]
fn other_paths_methods_and_garbage() {
    let addr = serve(&Metrics::new());
    for path in ["/", "/metrics/", "/metricsx", "/favicon.ico"] {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body.contains("/metrics"), "{path}: {}", r.body);
    }
    assert_eq!(get(addr, "/metrics?name[]=x").status, 200);
    let r = request(
        addr,
        "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = request(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.header("Content-Length").is_some_and(|n| n != "0"));
    assert_eq!(request(addr, "hello\r\n\r\n").status, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(request(addr, &huge).status, 431);
    // Still serving after all that.
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn a_slow_client_does_not_wedge_the_endpoint() {
    let addr = serve(&Metrics::new());
    // One client says nothing, another trickles a request it never finishes.
    let mut silent = TcpStream::connect(addr).expect("connect");
    let trickler = TcpStream::connect(addr).expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = Arc::clone(&stop);
        let mut s = trickler;
        std::thread::spawn(move || {
            for b in "GET /metrics HTTP/1.1\r\nX: "
                .bytes()
                .chain(std::iter::repeat(b'a'))
            {
                if stop.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(get(addr, "/metrics").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a scrape waited {:?} behind slow clients",
        started.elapsed()
    );
    // The silent client is cut off at the request deadline (5 s), not kept forever.
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let cut = Instant::now();
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "{:?}",
        cut.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    trickle.join().expect("trickler");
}

#[test]
fn textfile_has_the_same_content_and_is_replaced_atomically() {
    let metrics = observed_metrics();
    let addr = serve(&metrics);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sockwarden.prom");
    metrics.write_textfile(&path).expect("write textfile");
    let body = get(addr, "/metrics").body;
    let file = std::fs::read_to_string(&path).expect("read textfile");
    // The endpoint adds the agent's process_* series; the rest is the same.
    let (ours, process) = body
        .split_once("# HELP process_cpu_seconds_total")
        .expect("process series on the endpoint");
    assert_eq!(file, ours);
    assert!(!file.contains("process_") && process.contains("process_open_fds"));
    parse(&file).expect("the textfile parses too");

    // A reader never sees a partial file while the writer keeps replacing it.
    let writer = {
        let metrics = Arc::clone(&metrics);
        let path = path.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                metrics.write_textfile(&path).expect("rewrite");
            }
        })
    };
    while !writer.is_finished() {
        let seen = std::fs::read_to_string(&path).expect("the file always exists");
        assert_eq!(seen, ours, "a reader saw a partial textfile");
    }
    writer.join().expect("writer");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["sockwarden.prom"], "temporary files left behind");
}

/// An error says each cause once: the errno of a taken port or a missing file is not
/// repeated by the context around it.
#[test]
fn a_taken_metrics_port_and_a_missing_namespace_file_are_each_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.toml");
    let log = dir.path().join("audit.jsonl");
    let (code, _, err) = crate::support::run(&[
        "run",
        "--config",
        "/dev/null",
        "--policy",
        policy,
        "--metrics-listen",
        &addr,
        "--audit-log",
        log.to_str().expect("path"),
        "--state-dir",
        dir.path().to_str().expect("path"),
        "--netns",
        "host",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("bind {addr}")), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");

    let (code, _, err) = crate::support::run(&["scan", "--netns", "/nonexistent"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn healthz_fails_when_the_loop_stops_passing_and_readyz_waits_for_the_first_pass() {
    let metrics = Metrics::new();
    metrics.set_interval(Duration::from_millis(100));
    let addr = serve(&metrics);
    let r = get(addr, "/readyz");
    assert_eq!(r.status, 503, "no pass yet: {}", r.body);
    assert_eq!(get(addr, "/healthz").status, 200, "starting up is alive");

    let sys = fake();
    let (snap, plan) = pass(&sys);
    metrics.observe_pass(&snap, &plan, &[], Duration::from_millis(1));
    let r = get(addr, "/readyz");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ready: 1 pass(es) completed\n")
    );
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with("ok: the last completed pass"),
        "{}",
        r.body
    );

    // No pass for more than three intervals: the port still answers, the loop is stuck.
    std::thread::sleep(Duration::from_millis(350));
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.starts_with("stuck:"), "{}", r.body);
    assert_eq!(
        get(addr, "/readyz").status,
        200,
        "readiness is not liveness"
    );
    let r = request(addr, "HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((r.status, r.body.as_str()), (503, ""));
}
