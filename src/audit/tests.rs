//! Tests of the audit trail: chain, tampering, torn tails, rotation, concurrent writers,
//! filters, summary and history.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::engine::{OwnerKey, PastAction, PastOutcome, TargetKey};
use crate::model::{AgeSource, Cookie, Family, Pid, ProcessId, TcpState};
use crate::policy::Pattern;
use crate::record::{OwnerRecord, SocketRecord};
use std::os::unix::fs::DirBuilderExt;

fn actor() -> Actor {
    Actor {
        kind: ActorKind::Cli,
        uid: 0,
        user: Some("root".into()),
        pid: 4242,
        sudo_user: None,
    }
}

fn socket(cookie: u64, comm: &str, unit: Option<&str>) -> SocketRecord {
    SocketRecord {
        netns_inode: 4026531840,
        netns: "host".into(),
        family: Family::Ipv4,
        state: TcpState::CloseWait,
        local: "127.0.0.1:8080".parse().expect("addr"),
        remote: "127.0.0.1:40000".parse().expect("addr"),
        recv_q: 0,
        send_q: 0,
        cookie,
        inode: 1000 + cookie,
        uid: 1000,
        age_secs: 720,
        age_source: AgeSource::TcpInfo,
        age_is_lower_bound: false,
        owners: vec![OwnerRecord {
            pid: 300,
            start_time: 12345,
            fd: 7,
            comm: comm.into(),
            cmdline: format!("/usr/bin/{comm} --serve"),
            uid: 1000,
            unit: unit.map(str::to_string),
            container: None,
        }],
    }
}

fn destroy_intent(cookie: u64) -> NewRecord {
    NewRecord::intent(
        actor(),
        Mode::Enforce,
        Action::new(ActionKind::Destroy),
        "close-wait for 12m > 10m",
    )
    .rule("api-leak", "sha256:feed")
    .target(socket(cookie, "java", Some("api.service")))
}

fn note(detail: &str) -> NewRecord {
    NewRecord::note(actor(), Mode::Observe, NoteEvent::Start, detail)
}

/// The live file in a fresh private directory (writers never create the directory).
fn log_in(dir: &Path) -> PathBuf {
    let audit = dir.join("audit");
    std::fs::DirBuilder::new()
        .mode(0o750)
        .create(&audit)
        .expect("mkdir");
    audit.join("audit.jsonl")
}

fn broken(report: &VerifyReport) -> &BadRecord {
    match &report.failure {
        Some(VerifyFailure::Broken(bad)) => bad,
        other => panic!("expected a broken chain, got {other:?}\n{report}"),
    }
}

#[test]
fn records_chain_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    assert_eq!(
        fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o640
    );
    let start = log.append(note("agent started")).expect("append");
    let intent = log.append(destroy_intent(7)).expect("append");
    let outcome = log
        .append(NewRecord::outcome_of(
            &intent,
            actor(),
            Outcome {
                result: "destroyed".into(),
                errno: None,
                message: None,
            },
        ))
        .expect("append");
    assert_eq!((start.seq, intent.seq, outcome.seq), (1, 2, 3));
    assert_eq!(start.prev, GENESIS_PREV);
    assert_eq!(outcome.intent_seq, Some(2));
    assert_eq!(outcome.target, None, "an outcome carries only the result");
    let read = read_trail(&path).expect("read").records;
    assert_eq!(
        read[2].target, intent.target,
        "readers join it to its intent"
    );

    let text = fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(intent.prev, line_hash(lines[0].as_bytes()));
    assert_eq!(outcome.prev, line_hash(lines[1].as_bytes()));
    assert!(
        lines[1].contains(r#""kind":"intent""#) && lines[1].contains(r#""age_source":"tcp-info""#)
    );

    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (3, Some(1), Some(3))
    );
    assert_eq!(
        report.head_hash.as_deref(),
        Some(line_hash(lines[2].as_bytes()).as_str())
    );
    assert_eq!(report.exit_code(), 0);

    let trail = read_trail(&path).expect("read");
    assert_eq!(trail.records, joined(vec![start, intent, outcome]));
    assert!(trail.skipped.is_empty());
}

#[test]
fn a_streamed_append_larger_than_its_buffer_is_one_chain_and_made_one_record_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    let made = std::cell::Cell::new(0u64);
    let mut seen = Vec::new();
    // Each intent is ~0.5 kB: 5,000 of them span several STREAM_BUFFERs.
    let records = (0..5000).map(|c| {
        made.set(made.get() + 1);
        destroy_intent(c)
    });
    log.append_streamed(records, |r| {
        // A record is handed back only after it was made, and never ahead of its turn.
        assert!(r.seq <= made.get());
        seen.push(r.seq);
    })
    .expect("streamed");
    assert_eq!(seen, (1..=5000).collect::<Vec<_>>());
    assert!(fs::metadata(&path).expect("meta").len() > 2 * writer::STREAM_BUFFER as u64);
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 5000);
}

#[test]
fn a_batch_of_1000_chains_with_single_appends_and_rotates_only_between_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open").with_max_size(100_000);
    assert_eq!(log.append_batch(Vec::new()).expect("empty"), []);
    assert!(!path.exists() || fs::metadata(&path).expect("meta").len() == 0);

    let start = log.append(note("before")).expect("append");
    let intents = log
        .append_batch((0..1000).map(destroy_intent).collect())
        .expect("batch");
    assert_eq!(
        intents.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (2..=1001).collect::<Vec<_>>()
    );
    let outcomes: Vec<NewRecord> = intents
        .iter()
        .map(|i| {
            NewRecord::outcome_of(
                i,
                actor(),
                Outcome {
                    result: "destroyed".into(),
                    errno: None,
                    message: None,
                },
            )
        })
        .collect();
    let outcomes = log.append_batch(outcomes).expect("batch");
    assert_eq!(outcomes[999].intent_seq, Some(1001));
    let end = log.append(note("after")).expect("append");
    assert_eq!(end.seq, 2002);

    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 2002);
    let trail = read_trail(&path).expect("read");
    assert_eq!(trail.records.len(), 2002);
    assert_eq!(trail.records[1], intents[0]);
    let read = &trail.records[2000];
    assert_eq!(
        (read.seq, &read.hash, &read.outcome),
        (
            outcomes[999].seq,
            &outcomes[999].hash,
            &outcomes[999].outcome
        )
    );
    assert_eq!(read.target, intents[999].target, "joined to its intent");

    // Both batches carried the live file past 100 kB; rotation waited for the next append,
    // so each rotated file starts at a batch boundary.
    let rotated = rotated_files(&path).expect("list");
    assert_eq!(
        rotated,
        [rotated_name(&path, 1), rotated_name(&path, 1002)],
        "rotated at the batch boundaries"
    );
    let first = fs::read_to_string(&rotated[0]).expect("read");
    let first_line = first.lines().next().expect("a line");
    assert_eq!(start.seq, 1);
    assert_eq!(intents[0].prev, line_hash(first_line.as_bytes()));
}

#[test]
fn every_flipped_byte_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    log.append(note("a")).expect("append");
    log.append(destroy_intent(1)).expect("append");
    log.append(note("b")).expect("append");
    log.append(note("c")).expect("append");
    let original = fs::read(&path).expect("read");
    // Which record (0-based) each byte belongs to; a newline belongs to the line it ends.
    let mut owner_of = Vec::with_capacity(original.len());
    let mut record = 0u64;
    for b in &original {
        owner_of.push(record);
        if *b == b'\n' {
            record += 1;
        }
    }
    let tampered = dir.path().join("t").join("audit.jsonl");
    fs::create_dir_all(tampered.parent().expect("parent")).expect("mkdir");
    let mut checked = 0;
    for (i, owner) in owner_of.iter().enumerate() {
        for flip in [
            |b: u8| b ^ 0x01,
            |b: u8| if b == b'x' { b'y' } else { b'x' },
        ] {
            let mut bytes = original.clone();
            bytes[i] = flip(bytes[i]);
            fs::write(&tampered, &bytes).expect("write");
            let report = verify(&tampered);
            let bad = broken(&report);
            assert_eq!(
                bad.line,
                owner + 1,
                "byte {i} ({:?}) of record {owner}: {report}",
                original[i] as char
            );
            assert_eq!(report.exit_code(), 1);
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} positions");
}

#[test]
fn removed_and_reordered_records_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    for i in 0..5 {
        log.append(note(&format!("n{i}"))).expect("append");
    }
    let text = fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();

    let without_third: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    fs::write(&path, without_third).expect("write");
    let report = verify(&path);
    let bad = broken(&report);
    assert_eq!((bad.line, bad.seq), (3, Some(4)));
    assert!(
        bad.problem.contains("seq 4 where 3 was expected"),
        "{}",
        bad.problem
    );
    assert_eq!(report.records, 2);

    let without_first: String = lines[1..].iter().map(|l| format!("{l}\n")).collect();
    fs::write(&path, without_first).expect("write");
    let bad_report = verify(&path);
    assert!(
        broken(&bad_report)
            .problem
            .contains("trail starts at seq 2"),
        "{bad_report}"
    );

    let swapped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]);
    fs::write(&path, swapped).expect("write");
    let swapped_report = verify(&path);
    assert_eq!(broken(&swapped_report).line, 2);
}

#[test]
fn a_torn_prefix_is_reported_then_repaired_without_losing_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    for i in 0..3 {
        log.append(note(&format!("n{i}"))).expect("append");
    }
    // A crash mid-write: the first 80 bytes of what would have been record 4.
    let mut next =
        note("never finished").into_record(4, SystemTime::now(), "h".into(), "x".repeat(64));
    let full = seal(&mut next).expect("seal");
    let torn = &full[..80];
    let mut bytes = fs::read(&path).expect("read");
    let torn_offset = bytes.len() as u64;
    bytes.extend_from_slice(torn);
    fs::write(&path, &bytes).expect("write");

    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    let t = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(
        (t.line, t.offset, t.len, t.complete),
        (4, torn_offset, 80, false)
    );
    assert_eq!(report.records, 3);
    let shown = report.to_string();
    assert!(
        shown.contains("torn final line")
            && shown.contains("crash mid-write")
            && shown.contains("3 records before it verify"),
        "{shown}"
    );

    let after = log.append(note("next")).expect("append repairs");
    assert_eq!(after.seq, 5, "the repair note takes seq 4");
    let trail = read_trail(&path).expect("read");
    let repair = &trail.records[3];
    let torn_note = repair
        .note
        .as_ref()
        .and_then(|n| n.torn.as_ref())
        .expect("repair note");
    assert_eq!(
        repair.note.as_ref().map(|n| n.event),
        Some(NoteEvent::Repair)
    );
    assert_eq!((torn_note.offset, torn_note.len), (torn_offset, 80));
    assert_eq!(torn_note.sha256, sha256_hex(torn));
    assert_eq!(torn_note.text.as_bytes(), torn);
    assert_eq!(fs::read(&torn_note.saved_to).expect("side file"), torn);
    let report = verify(&path);
    assert!(report.is_intact() && report.torn_tail.is_none(), "{report}");
    assert_eq!(report.records, 5);
}

#[test]
fn a_record_missing_only_its_newline_is_completed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    for i in 0..3 {
        log.append(note(&format!("n{i}"))).expect("append");
    }
    let mut bytes = fs::read(&path).expect("read");
    bytes.pop();
    fs::write(&path, &bytes).expect("write");
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.torn_tail.as_ref().map(|t| t.complete), Some(true));
    assert_eq!(report.records, 3);

    assert_eq!(log.append(note("n3")).expect("append").seq, 4);
    let report = verify(&path);
    assert!(report.is_intact() && report.torn_tail.is_none(), "{report}");
    assert_eq!(report.records, 4);
    assert!(read_trail(&path)
        .expect("read")
        .records
        .iter()
        .all(|r| r.kind == RecordKind::Note
            && r.note.as_ref().is_some_and(|n| n.event == NoteEvent::Start)));
}

#[test]
fn nul_filled_tail_after_a_crash_is_torn_not_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    log.append(note("n0")).expect("append");
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0u8; 300]);
    fs::write(&path, &bytes).expect("write");
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.torn_tail.as_ref().map(|t| t.len), Some(300));
    log.append(note("n1")).expect("append repairs");
    let report = verify(&path);
    assert!(report.is_intact() && report.torn_tail.is_none(), "{report}");
    assert_eq!(report.records, 3);
}

#[test]
fn a_damaged_last_record_stops_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    log.append(note("n0")).expect("append");
    log.append(note("n1")).expect("append");
    let edited = fs::read_to_string(&path).expect("read").replace("n1", "n9");
    fs::write(&path, &edited).expect("write");
    let err = log.append(destroy_intent(3)).expect_err("must refuse");
    let msg = err.to_string();
    assert!(matches!(err, AuditError::Damaged { .. }), "{msg}");
    assert!(
        msg.contains("no action was taken") && msg.contains("audit verify"),
        "{msg}"
    );
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        edited,
        "nothing appended"
    );
}

#[test]
fn write_errors_say_no_action_was_taken_and_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, "").expect("write");
    let err = AuditLog::open(&blocker.join("audit.jsonl")).expect_err("cannot open under a file");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("audit log: {}", blocker.display())),
        "{msg}"
    );
    assert!(
        msg.contains("nothing can be acted on until the audit log is writable"),
        "{msg}"
    );

    // The directory is held open from `open`: replacing it afterwards cannot redirect the
    // writes elsewhere; the append fails and says no action was taken.
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open");
    fs::remove_dir_all(path.parent().expect("parent")).expect("rm");
    fs::write(path.parent().expect("parent"), "").expect("replace the dir by a file");
    let err = log.append(destroy_intent(1)).expect_err("open fails");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot open") && msg.contains("no action was taken"),
        "{msg}"
    );
    assert_eq!(err.errno(), Some(libc::ENOENT));
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open").with_max_size(2000);
    for i in 0..40 {
        log.append(if i % 3 == 0 {
            destroy_intent(i)
        } else {
            note(&format!("n{i}"))
        })
        .expect("append");
    }
    let rotated = rotated_files(&path).expect("list");
    assert!(rotated.len() >= 5, "{rotated:?}");
    for file in &rotated {
        assert!(
            fs::metadata(file).expect("meta").len() < 2000 + 2000,
            "{file:?} not much above the limit"
        );
        let first: AuditRecord = serde_json::from_str(
            fs::read_to_string(file)
                .expect("read")
                .lines()
                .next()
                .expect("a line"),
        )
        .expect("parse");
        assert_eq!(
            file,
            &rotated_name(&path, first.seq),
            "named after its first seq"
        );
    }
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(
        (report.records, report.files.len()),
        (40, rotated.len() + 1)
    );
    let seqs: Vec<u64> = read_trail(&path)
        .expect("read")
        .records
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());

    // Tampering inside a rotated file names that file.
    let victim = &rotated[1];
    let original = fs::read_to_string(victim).expect("read");
    fs::write(victim, original.replacen("\"host\":\"", "\"host\":\"X", 1)).expect("write");
    let report = verify(&path);
    let bad = broken(&report);
    assert_eq!((&bad.file, bad.line), (victim, 1));
    fs::write(victim, &original).expect("restore");

    // A whole rotated file removed from the middle.
    fs::rename(victim, dir.path().join("elsewhere")).expect("move away");
    let report = verify(&path);
    let bad = broken(&report);
    assert_eq!((&bad.file, bad.line), (&rotated[2], 1));
    assert!(bad.problem.contains("was expected"), "{}", bad.problem);
}

#[test]
fn a_fresh_live_file_continues_the_chain_of_the_rotated_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open").with_max_size(1);
    let a = log.append(note("a")).expect("append");
    let b = log.append(note("b")).expect("append rotates");
    assert_eq!(
        b.prev,
        line_hash(
            fs::read_to_string(rotated_name(&path, 1))
                .expect("read")
                .trim_end()
                .as_bytes()
        )
    );
    assert_eq!((a.seq, b.seq), (1, 2));
    assert!(verify(&path).is_intact());
}

#[test]
fn concurrent_writers_lose_nothing() {
    for max_size in [DEFAULT_MAX_SIZE, 16 * 1024] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_in(dir.path());
        AuditLog::open(&path).expect("open");
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each thread has its own handle: flock is per open file, as between processes.
                    let mut log = AuditLog::open(&path).expect("open").with_max_size(max_size);
                    for i in 0..200 {
                        log.append(note(&format!("writer {w} record {i}")))
                            .expect("append");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread");
        }
        let report = verify(&path);
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.records, 400);
        let trail = read_trail(&path).expect("read");
        for w in 0..2 {
            let mine: Vec<String> = trail
                .records
                .iter()
                .filter_map(|r| r.note.as_ref()?.detail.clone())
                .filter(|d| d.starts_with(&format!("writer {w} ")))
                .collect();
            let expected: Vec<String> =
                (0..200).map(|i| format!("writer {w} record {i}")).collect();
            assert_eq!(mine, expected, "writer {w}, max_size {max_size}");
        }
    }
}

// ---- queries over records built in memory ----

const T0: u64 = 1_795_442_400; // 2026-11-23T14:00:00Z

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

/// A small incident: two destroys on api (one destroyed, one already gone), a restart of
/// api an hour later that failed, a signal to worker without an outcome, and a dry run.
fn incident() -> Vec<AuditRecord> {
    let mut seq = 0;
    let mut out: Vec<AuditRecord> = Vec::new();
    let mut push = |r: NewRecord, t: SystemTime, out: &mut Vec<AuditRecord>| {
        seq += 1;
        let rec = r.into_record(seq, t, "h".into(), GENESIS_PREV.into());
        out.push(rec.clone());
        rec
    };
    let outcome = |i: &AuditRecord, result: &str| {
        NewRecord::outcome_of(
            i,
            actor(),
            Outcome {
                result: result.into(),
                errno: None,
                message: None,
            },
        )
    };
    push(note("start"), at(0), &mut out);
    let i1 = push(destroy_intent(1), at(60), &mut out);
    push(outcome(&i1, "destroyed"), at(61), &mut out);
    let i2 = push(destroy_intent(2), at(120), &mut out);
    push(outcome(&i2, "already-gone"), at(121), &mut out);
    let mut restart = Action::new(ActionKind::Restart);
    restart.unit = Some("api.service".into());
    let i3 = push(
        NewRecord::intent(actor(), Mode::Enforce, restart, "api keeps leaking")
            .rule("api-escalate", "d")
            .unit("api.service"),
        at(3700),
        &mut out,
    );
    push(outcome(&i3, "failed"), at(3705), &mut out);
    let mut signal = Action::new(ActionKind::Signal);
    signal.signal = Some("SIGHUP".into());
    push(
        NewRecord::intent(actor(), Mode::Enforce, signal, "worker leak")
            .rule("worker-hup", "d")
            .process(ProcessRecord {
                pid: 77,
                start_time: 5,
                comm: "python3".into(),
                cmdline: None,
                unit: Some("worker.service".into()),
            }),
        at(3800),
        &mut out,
    );
    push(
        NewRecord::dry_run(
            actor(),
            Mode::Observe,
            Action::new(ActionKind::Destroy),
            "would destroy",
        )
        .rule("api-leak", "d")
        .target(socket(9, "nginx", None)),
        at(7300),
        &mut out,
    );
    // As readers see them: each outcome joined to its intent.
    joined(out)
}

fn seqs(records: &[&AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

#[test]
fn parse_when_reads_durations_and_times() {
    let now = at(7200);
    assert_eq!(parse_when("2h", now), Ok(at(0)));
    assert_eq!(parse_when("90m", now), Ok(at(1800)));
    assert_eq!(parse_when("2026-11-23 14:00", now), Ok(at(0)));
    assert_eq!(parse_when("2026-11-23T15:00:00Z", now), Ok(at(3600)));
    assert_eq!(
        parse_when("2026-11-23", now),
        Ok(at(0) - Duration::from_secs(14 * 3600))
    );
    let err = parse_when("yesterday-ish", now).expect_err("bad");
    assert!(
        err.contains("2h") && err.contains("2026-11-23 14:00"),
        "{err}"
    );
}

#[test]
fn filters_keep_what_they_say() {
    let records = incident();
    let all = Filter::default();
    assert_eq!(all.apply(&records).len(), records.len());

    let f = Filter {
        since: Some(at(100)),
        until: Some(at(3700)),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [4, 5, 6]);

    let f = Filter {
        actions: vec![ActionKind::Restart, ActionKind::Signal],
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [6, 7, 8]);

    // An outcome filter keeps the outcome and the intent it answers.
    let f = Filter {
        outcome: Some("already-gone".into()),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [4, 5]);

    let f = Filter {
        process: Some(Pattern::new("py*").expect("glob")),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [8]);
    let f = Filter {
        process: Some(Pattern::new("nginx").expect("glob")),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [9]);

    let f = Filter {
        unit: Some(Pattern::new("api*").expect("glob")),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [2, 3, 4, 5, 6, 7]);

    let f = Filter {
        rule: Some(Pattern::new("api-leak").expect("glob")),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [2, 3, 4, 5, 9]);

    let f = Filter {
        rule: Some(Pattern::new("api-*").expect("glob")),
        actions: vec![ActionKind::Destroy],
        outcome: Some("destroyed".into()),
        ..Filter::default()
    };
    assert_eq!(seqs(&f.apply(&records)), [2, 3]);
}

#[test]
fn summary_counts_by_rule_unit_outcome_and_hour() {
    let records = incident();
    let kept = Filter::default().apply(&records);
    let s = summarize(&kept, &records);
    assert_eq!(
        (s.records, s.intents, s.outcomes, s.dry_runs, s.notes),
        (9, 4, 3, 1, 1)
    );
    let rules: Vec<(&str, u64)> = s
        .per_rule
        .iter()
        .map(|t| (t.key.as_str(), t.actions))
        .collect();
    assert_eq!(
        rules,
        [("api-leak", 2), ("api-escalate", 1), ("worker-hup", 1)]
    );
    let api = &s.per_rule[0];
    assert_eq!(api.by_outcome.get("destroyed"), Some(&1));
    assert_eq!(api.by_outcome.get("already-gone"), Some(&1));
    let units: Vec<(&str, u64)> = s
        .per_unit
        .iter()
        .map(|t| (t.key.as_str(), t.actions))
        .collect();
    assert_eq!(units, [("api.service", 3), ("worker.service", 1)]);
    assert_eq!(
        s.per_unit[1].by_outcome.get("no-outcome"),
        Some(&1),
        "an unanswered intent shows"
    );
    let outcomes: Vec<(&str, u64)> = s
        .per_outcome
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        outcomes,
        [("already-gone", 1), ("destroyed", 1), ("failed", 1)]
    );
    assert_eq!(s.dry_runs_per_rule.get("api-leak"), Some(&1));
    let timeline: Vec<(&str, u64, u64)> = s
        .timeline
        .iter()
        .map(|h| (h.hour.as_str(), h.actions, h.dry_runs))
        .collect();
    assert_eq!(
        timeline,
        [
            ("2026-11-23T14:00:00Z", 2, 0),
            ("2026-11-23T15:00:00Z", 2, 0),
            ("2026-11-23T16:00:00Z", 0, 1)
        ]
    );

    // Filtered to the second hour, outcomes are still found through the whole trail.
    let kept = Filter {
        since: Some(at(3600)),
        ..Filter::default()
    }
    .apply(&records);
    let s = summarize(&kept, &records);
    assert_eq!(s.intents, 2);
    assert_eq!(
        s.per_rule
            .iter()
            .find(|t| t.key == "api-escalate")
            .and_then(|t| t.by_outcome.get("failed")),
        Some(&1)
    );
}

/// One intent (or dry run) answered by an outcome with `result`, as history sees it.
fn past_of(record: NewRecord, result: Option<&str>) -> Vec<PastAction> {
    let intent = record.into_record(1, at(60), "h".into(), GENESIS_PREV.into());
    let mut records = vec![intent.clone()];
    if let Some(result) = result {
        let outcome = NewRecord::outcome_of(
            &intent,
            actor(),
            Outcome {
                result: result.into(),
                errno: None,
                message: None,
            },
        );
        records.push(outcome.into_record(2, at(61), "h".into(), GENESIS_PREV.into()));
    }
    past_actions_from(&records, at(0))
}

/// Three sockets of namespace `netns_inode` for a batch, each with its rule: cookies 1
/// (java, api.service), 2 (java) and 3 (py), each its own process.
fn batch_sockets(netns_inode: u64) -> Vec<(String, crate::model::StuckSocket)> {
    [
        (1, "java", Some("api.service")),
        (2, "java", None),
        (3, "py", None),
    ]
    .into_iter()
    .map(|(cookie, comm, unit)| {
        let process = std::sync::Arc::new(crate::model::Process {
            id: ProcessId {
                pid: Pid(300 + cookie as i32),
                start_time: 12345,
            },
            comm: comm.into(),
            cmdline: format!("/usr/bin/{comm} --serve"),
            exe: None,
            uid: 1000,
            unit: unit.map(str::to_string),
            container: None,
            handle: Default::default(),
        });
        let netns = crate::model::NetnsId {
            dev: 4,
            inode: netns_inode,
        };
        let socket = crate::sys::fake::socket(netns, cookie, TcpState::CloseWait);
        let stuck = crate::sys::fake::stuck(socket, &[&process], 720);
        (format!("rule-{}", cookie % 2), stuck)
    })
    .collect()
}

/// A batch writes what all its targets share once, and each distinct explanation once;
/// read back, every target is whole, as it is from a batch written whole (before
/// `shared`). A change to a shared field breaks the seal.
#[test]
fn a_batch_writes_what_its_targets_share_once_and_reads_back_whole() {
    let host = batch_sockets(4026531840);
    let pod = batch_sockets(4026532000);
    let sockets = [&host[0], &host[2], &pod[2]];
    let batch = Batch::of(sockets.iter().map(|(_, stuck)| {
        BatchEntry {
            rule: "leak",
            escalated: false,
            why: if stuck.socket.cookie.0 == 1 {
                "old"
            } else {
                "older"
            }
            .into(),
            netns: if stuck.socket.netns.inode == 4026532000 {
                "pod"
            } else {
                "host"
            }
            .into(),
            socket: stuck,
        }
    }));
    let json = serde_json::to_value(&batch).expect("json");
    let shared = &json["shared"];
    assert_eq!(shared["rule"], "leak", "{json}");
    assert_eq!(shared["state"], "close-wait", "{json}");
    assert!(shared.get("netns").is_none(), "two namespaces: {json}");
    assert_eq!(json["whys"], serde_json::json!(["old", "older"]));
    let targets = json["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3);
    assert!(targets
        .iter()
        .all(|t| t.get("rule").is_none() && t.get("state").is_none()));
    assert_eq!(
        targets.iter().map(|t| &t["why"]).collect::<Vec<_>>(),
        [0, 1, 1]
    );
    assert_eq!(targets[2]["netns"], "pod");
    let read: Batch = serde_json::from_value(json.clone()).expect("read back");
    assert_eq!(read, batch);

    // Written whole, each target with every field and its own explanation: the same.
    let whole: Vec<serde_json::Value> = batch
        .targets
        .iter()
        .map(|t| {
            serde_json::json!({
                "rule": t.rule, "why": t.why, "netns_inode": t.netns_inode,
                "netns": t.netns, "family": t.family, "state": t.state, "local": t.local,
                "remote": t.remote, "recv_q": t.recv_q, "send_q": t.send_q,
                "cookie": t.cookie, "inode": t.inode, "uid": t.uid, "age_secs": t.age_secs,
                "age_source": t.age_source, "age_is_lower_bound": t.age_is_lower_bound,
                "owners": t.owners,
            })
        })
        .collect();
    let old = serde_json::json!({"processes": json["processes"], "targets": whole});
    assert_eq!(serde_json::from_value::<Batch>(old).expect("whole"), batch);

    // A target with no rule of its own or shared is not a batch sockwarden wrote.
    let mut no_rule = json.clone();
    no_rule["shared"]
        .as_object_mut()
        .expect("shared")
        .remove("rule");
    let err = serde_json::from_value::<Batch>(no_rule).expect_err("no rule");
    assert!(err.to_string().contains("`rule`"), "{err}");

    // The seal covers what is shared.
    let record = NewRecord::batch(
        RecordKind::Intent,
        actor(),
        Mode::Enforce,
        Action::new(ActionKind::Destroy),
        "sha256:feed",
        batch,
    );
    let mut record = record.into_record(1, at(60), "h".into(), GENESIS_PREV.into());
    let line = String::from_utf8(seal_with(&mut record, None).expect("seal")).expect("utf8");
    assert!(open_line(line.as_bytes()).is_ok());
    // The history's reader takes the shared rule as each target's.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, format!("{line}\n")).expect("write");
    let from_file = past_actions(&path, at(0)).expect("history");
    assert_eq!(from_file.len(), 3);
    assert_eq!(
        from_file,
        past_actions_from(std::slice::from_ref(&record), at(0))
    );
    let edited = line.replacen("\"state\":\"close-wait\"", "\"state\":\"last-ack\"", 1);
    assert_ne!(edited, line);
    assert_eq!(open_line(edited.as_bytes()).err(), Some(LineError::BadSeal));

    // Their outcomes: each distinct one written once, a result naming its index; read
    // back, or written whole, the same. The history reads both.
    let outcome = |result: &str| Outcome {
        result: result.into(),
        errno: None,
        message: Some("kernel ACK".into()),
    };
    let results = Batch::results(vec![
        outcome("destroyed"),
        outcome("failed"),
        outcome("destroyed"),
    ]);
    let json = serde_json::to_value(&results).expect("json");
    assert_eq!(json["results"], serde_json::json!([0, 1, 0]), "{json}");
    assert_eq!(json["outcomes"].as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(
        serde_json::from_value::<Batch>(json).expect("read"),
        results
    );
    let whole = serde_json::json!({"results": results.results});
    assert_eq!(
        serde_json::from_value::<Batch>(whole).expect("whole"),
        results
    );
    let answered = NewRecord::outcomes_of(1, Mode::Enforce, actor(), results.results.clone())
        .into_record(2, at(61), "h".into(), GENESIS_PREV.into());
    let answered_line = serde_json::to_string(&answered).expect("json");
    let whole_line = answered_line.replacen(
        r#""outcomes":[{"result":"destroyed","message":"kernel ACK"},{"result":"failed","message":"kernel ACK"}],"results":[0,1,0]"#,
        r#""results":[{"result":"destroyed","message":"kernel ACK"},{"result":"failed","message":"kernel ACK"},{"result":"destroyed","message":"kernel ACK"}]"#,
        1,
    );
    assert_ne!(whole_line, answered_line, "{answered_line}");
    let expected = past_actions_from(&[record.clone(), answered], at(0));
    assert_eq!(expected.len(), 3);
    for outcomes in [answered_line, whole_line] {
        std::fs::write(&path, format!("{line}\n{outcomes}\n")).expect("write");
        assert_eq!(past_actions(&path, at(0)).expect("history"), expected);
    }
}

/// A batch is read for the history entry by entry, without a record made of each: the
/// same past actions as from its entries one by one (what `audit show` expands it into).
#[test]
fn a_batch_gives_the_history_of_its_entries() {
    let sockets = batch_sockets(4026531840);
    let entries = sockets.iter().map(|(rule, stuck)| BatchEntry {
        rule,
        escalated: stuck.socket.cookie.0 == 3,
        why: "old".into(),
        netns: "host".into(),
        socket: stuck,
    });
    let intent = NewRecord::batch(
        RecordKind::Intent,
        actor(),
        Mode::Enforce,
        Action::new(ActionKind::Destroy),
        "sha256:feed",
        Batch::of(entries),
    )
    .into_record(1, at(60), "h".into(), GENESIS_PREV.into());
    let results = ["destroyed", "already-gone", "skipped"]
        .into_iter()
        .map(|r| Outcome {
            result: r.into(),
            errno: None,
            message: None,
        })
        .collect();
    let outcome = NewRecord::outcomes_of(1, Mode::Enforce, actor(), results).into_record(
        2,
        at(61),
        "h".into(),
        GENESIS_PREV.into(),
    );
    let whole = past_actions_from(&[intent.clone(), outcome.clone()], at(0));
    let expanded: Vec<AuditRecord> = intent
        .clone()
        .entries()
        .into_iter()
        .chain(outcome.clone().entries())
        .collect();
    let one_by_one = past_actions_from(&expanded, at(0));
    assert_eq!(whole.len(), 3);
    assert_eq!(whole, one_by_one);
    // Read from a file, a batch is read as the few fields the history needs: the same.
    // A second intent left unanswered counts as done, as it would whole.
    let mut unanswered = intent.clone();
    unanswered.seq = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let lines: Vec<String> = [&intent, &outcome, &unanswered]
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let from_file = past_actions(&path, at(0)).expect("history");
    let read_whole = past_actions_from(&[intent.clone(), outcome.clone(), unanswered], at(0));
    assert_eq!(from_file.len(), 6);
    assert_eq!(from_file, read_whole);
    assert_eq!(&from_file[..3], &whole[..]);
    // A dry-run batch too.
    let mut dry = intent;
    dry.kind = RecordKind::DryRun;
    assert_eq!(
        past_actions_from(std::slice::from_ref(&dry), at(0)),
        past_actions_from(&dry.entries(), at(0))
    );
}

#[test]
fn history_weighs_each_outcome_result() {
    use PastOutcome::*;
    let table: &[(Option<&str>, PastOutcome)] = &[
        (None, Unknown),
        (Some("destroyed"), Done),
        (Some("delivered"), Done),
        (Some("restarted"), Done),
        (Some("exited-0"), Done),
        (Some("logged"), Done),
        (Some("skipped"), Held),
        (Some("already-gone"), Held),
        (Some("tuple-reused"), Held),
        (Some("pid-reused"), Held),
        (Some("exited"), Held),
        (Some("already-in-progress"), Held),
        (Some("failed"), Failed),
        (Some("not-permitted"), Failed),
        (Some("unsupported"), Failed),
        (Some("not-confirmed"), Failed),
    ];
    for (result, want) in table {
        let got: Vec<PastOutcome> = past_of(destroy_intent(1), *result)
            .iter()
            .map(|a| a.outcome)
            .collect();
        assert_eq!(got, [*want], "outcome {result:?}");
    }
    let dry = NewRecord::dry_run(
        actor(),
        Mode::Observe,
        Action::new(ActionKind::Destroy),
        "would destroy",
    )
    .rule("api-leak", "d")
    .target(socket(9, "nginx", None));
    assert_eq!(past_of(dry.clone(), None)[0].outcome, DryRun);
    assert_eq!(past_of(dry, Some("destroyed"))[0].outcome, DryRun);
}

#[test]
fn history_derives_target_owner_and_escalation() {
    let proc_rec = |unit: Option<&str>| ProcessRecord {
        pid: 77,
        start_time: 5,
        comm: "python3".into(),
        cmdline: None,
        unit: unit.map(str::to_string),
    };
    let pid77 = ProcessId {
        pid: Pid(77),
        start_time: 5,
    };
    let owner300 = ProcessId {
        pid: Pid(300),
        start_time: 12345,
    };
    let intent = |kind: ActionKind| {
        NewRecord::intent(actor(), Mode::Enforce, Action::new(kind), "why").rule("r", "d")
    };
    let restart_of = |unit: &str| {
        let mut a = Action::new(ActionKind::Restart);
        a.unit = Some(unit.into());
        NewRecord::intent(actor(), Mode::Enforce, a, "why").rule("r", "d")
    };
    let unit = |u: &str| Some(TargetKey::Unit(u.into()));
    let owner_unit = |u: &str| Some(OwnerKey::Unit(u.into()));
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, NewRecord, Option<TargetKey>, Option<OwnerKey>)> = vec![
        (
            "restart: the action's unit",
            restart_of("api.service").target(socket(1, "java", Some("api.service"))),
            unit("api.service"),
            owner_unit("api.service"),
        ),
        (
            "unit target without an action unit",
            intent(ActionKind::Restart).unit("db.service"),
            unit("db.service"),
            owner_unit("db.service"),
        ),
        (
            "signal: the process, owned by its unit",
            intent(ActionKind::Signal).process(proc_rec(Some("worker.service"))),
            Some(TargetKey::Process(pid77)),
            owner_unit("worker.service"),
        ),
        (
            "signal: the process, owned by itself outside a unit",
            intent(ActionKind::Signal).process(proc_rec(None)),
            Some(TargetKey::Process(pid77)),
            Some(OwnerKey::Process(pid77)),
        ),
        (
            "destroy: the socket, owned by its owner's unit",
            destroy_intent(7),
            Some(TargetKey::Socket(Cookie(7))),
            owner_unit("api.service"),
        ),
        (
            "destroy: the socket, owned by its first owner outside a unit",
            intent(ActionKind::Destroy).target(socket(8, "nc", None)),
            Some(TargetKey::Socket(Cookie(8))),
            Some(OwnerKey::Process(owner300)),
        ),
        (
            "destroy: an ownerless socket",
            intent(ActionKind::Destroy).target(SocketRecord {
                owners: Vec::new(),
                ..socket(9, "x", None)
            }),
            Some(TargetKey::Socket(Cookie(9))),
            None,
        ),
        (
            "no target at all: not history",
            intent(ActionKind::Log),
            None,
            None,
        ),
    ];
    for (case, record, target, owner) in table {
        let got = past_of(record, Some("destroyed"));
        assert_eq!(
            got.first().map(|a| a.target.clone()),
            target,
            "target: {case}"
        );
        assert_eq!(
            got.first().and_then(|a| a.owner.clone()),
            owner,
            "owner: {case}"
        );
    }

    // Only intents and dry runs of a rule, at or after `since`, with the escalation flag.
    let escalated = past_of(restart_of("api.service").escalated(true), Some("restarted"));
    assert_eq!(
        escalated
            .iter()
            .map(|a| (a.rule.as_ref(), a.action, a.escalated))
            .collect::<Vec<_>>(),
        [("r", ActionKind::Restart, true)]
    );
    assert!(!past_of(destroy_intent(1), None)[0].escalated);
    let no_rule = NewRecord::intent(
        actor(),
        Mode::Enforce,
        Action::new(ActionKind::Destroy),
        "ad hoc",
    )
    .target(socket(1, "java", None));
    assert!(past_of(no_rule, None).is_empty());
    assert!(past_of(note("start"), None).is_empty());
    let records = incident();
    let h = past_actions_from(&records, at(100));
    assert_eq!(
        h.iter()
            .map(|a| (a.rule.as_ref(), a.action, a.outcome))
            .collect::<Vec<_>>(),
        [
            ("api-leak", ActionKind::Destroy, PastOutcome::Held),
            ("api-escalate", ActionKind::Restart, PastOutcome::Failed),
            ("worker-hup", ActionKind::Signal, PastOutcome::Unknown),
            ("api-leak", ActionKind::Destroy, PastOutcome::DryRun),
        ],
        "the first destroy (at 60 s) is before `since`"
    );
}

#[test]
fn history_reads_the_trail_across_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    assert!(past_actions(&path, SystemTime::UNIX_EPOCH)
        .expect("no trail yet")
        .is_empty());
    let mut log = AuditLog::open(&path).expect("open").with_max_size(3000);
    let mut cookies = Vec::new();
    for i in 0..10 {
        let intent = log.append(destroy_intent(i)).expect("append");
        log.append(NewRecord::outcome_of(
            &intent,
            actor(),
            Outcome {
                result: "destroyed".into(),
                errno: None,
                message: None,
            },
        ))
        .expect("append");
        cookies.push(TargetKey::Socket(Cookie(i)));
    }
    assert!(!rotated_files(&path).expect("list").is_empty());
    let h = past_actions(&path, SystemTime::now() - Duration::from_secs(3600)).expect("history");
    assert_eq!(
        h.iter().map(|p| p.target.clone()).collect::<Vec<_>>(),
        cookies
    );
    assert!(h.iter().all(|p| p.outcome == PastOutcome::Done));
    assert!(
        past_actions(&path, SystemTime::now() + Duration::from_secs(60))
            .expect("history")
            .is_empty()
    );
}

// ---- the trail tells the whole truth -------------------------------------------------

fn write_records(path: &Path, n: u64) -> AuditLog {
    let mut log = AuditLog::open(path).expect("open");
    for cookie in 0..n {
        log.append(destroy_intent(cookie)).expect("append");
    }
    log
}

fn truncated(report: &VerifyReport) -> &str {
    match &report.failure {
        Some(VerifyFailure::Truncated { problem }) => problem,
        other => panic!("expected a truncated trail, got {other:?}\n{report}"),
    }
}

/// Lines of the live file, each with its newline.
fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read")
        .split_inclusive('\n')
        .map(str::to_string)
        .collect()
}

/// Regression (trust issue): deleting the last records or emptying the live file verified
/// as intact. The anchor names the head; a shorter trail fails and says how much is gone,
/// and no writer extends it.
#[test]
fn a_trail_shorter_than_its_anchor_fails_and_is_not_extended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = write_records(&path, 5);
    assert_eq!(log.head().map(|(s, _)| s), Some(5));
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.anchor_seq, Some(5));

    let lines = lines_of(&path);
    fs::write(&path, lines[..3].concat()).expect("cut the last two records");
    let report = verify(&path);
    assert_eq!(report.exit_code(), 1, "{report}");
    let problem = truncated(&report);
    assert!(problem.contains("2 record(s) are missing"), "{problem}");
    let err = log.append(destroy_intent(9)).expect_err("refuses");
    assert!(err.to_string().contains("removed from its end"), "{err}");
    assert!(err.to_string().contains("no action was taken"), "{err}");

    fs::write(&path, "").expect("empty the live file");
    let report = verify(&path);
    assert!(
        truncated(&report).contains("5 record(s) are missing"),
        "{report}"
    );
    assert!(log.append(destroy_intent(9)).is_err());
}

/// Regression: cutting the last line short read as a crash and was then "repaired". A torn
/// line is a crash only when the anchor agrees (it names the record before the torn line).
#[test]
fn a_torn_line_is_a_crash_only_if_the_anchor_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = write_records(&path, 3);
    let lines = lines_of(&path);
    // Tampering: the last whole record cut in half.
    let cut = format!("{}{}", lines[..2].concat(), &lines[2][..lines[2].len() / 2]);
    fs::write(&path, &cut).expect("cut");
    let report = verify(&path);
    let problem = truncated(&report);
    assert!(problem.contains("not a crash"), "{problem}");
    let err = log.append(destroy_intent(9)).expect_err("no repair");
    assert!(
        err.to_string().contains("cut after it was written"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&path).expect("read"), cut, "untouched");

    // A crash: a record half written after the anchor named seq 3.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = write_records(&path, 3);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    use std::io::Write as _;
    f.write_all(b"{\"seq\":4,\"time\":\"2026").expect("write");
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert!(report.torn_tail.is_some());
    log.append(destroy_intent(9))
        .expect("repaired and appended");
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
}

/// Deleting the anchor cannot hide a cut: verify fails without one, and the writer that
/// finds none says so in the chain, where the next verify shows it.
#[test]
fn a_missing_anchor_fails_verify_and_is_recorded_when_a_new_one_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = write_records(&path, 2);
    let anchor = path.with_file_name(anchor_name(&path));
    fs::remove_file(&anchor).expect("rm anchor");
    let report = verify(&path);
    assert!(truncated(&report).contains("no anchor file"), "{report}");
    let relaxed = verify_with(
        &path,
        &VerifyOptions {
            no_anchor: true,
            ..VerifyOptions::default()
        },
    );
    assert!(relaxed.is_intact(), "{relaxed}");

    log.append(destroy_intent(9)).expect("append");
    let report = verify(&path);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.anchor_restarts, [3], "{report}");
    assert!(report.to_string().contains("started a new one"), "{report}");
    let records = read_trail(&path).expect("read").records;
    assert_eq!(
        records[2].note.as_ref().map(|n| n.event),
        Some(NoteEvent::Anchor)
    );
}

fn key(byte: u8) -> AuditKey {
    AuditKey::from_bytes(vec![byte; 32])
}

/// Keyed mode: records sealed with an HMAC. Anyone who can write the file but lacks the key
/// cannot reseal an edit, cannot pass keyed records off as unkeyed, and cannot append.
#[test]
fn a_keyed_trail_catches_a_reseal_without_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open").with_key(Some(key(7)));
    for cookie in 0..3 {
        log.append(destroy_intent(cookie)).expect("append");
    }
    let with_key = VerifyOptions {
        key: Some(key(7)),
        ..VerifyOptions::default()
    };
    let report = verify_with(&path, &with_key);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.keyed_records, 3);
    let without = verify(&path);
    assert_eq!(without.exit_code(), 2, "{without}");
    assert!(without.to_string().contains("--audit-key"), "{without}");

    // An unkeyed rewrite of the whole trail (what a plain sha256 chain allows).
    let records = read_trail(&path).expect("read").records;
    let mut prev = GENESIS_PREV.to_string();
    let mut forged = String::new();
    for mut r in records {
        r.why = Some("nothing to see".into());
        r.prev = prev.clone();
        let line = seal(&mut r).expect("seal");
        prev = line_hash(&line);
        forged.push_str(&String::from_utf8(line).expect("utf8"));
        forged.push('\n');
    }
    fs::write(&path, &forged).expect("write forged");
    let report = verify_with(&path, &with_key);
    assert_eq!(report.exit_code(), 1, "{report}");

    // A writer without the key (or with another) refuses to extend a keyed trail.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut keyed = AuditLog::open(&path).expect("open").with_key(Some(key(7)));
    keyed.append(destroy_intent(1)).expect("append");
    let err = AuditLog::open(&path)
        .expect("open")
        .append(destroy_intent(2))
        .expect_err("no key");
    assert!(err.to_string().contains("--audit-key"), "{err}");
    let err = AuditLog::open(&path)
        .expect("open")
        .with_key(Some(key(8)))
        .append(destroy_intent(2))
        .expect_err("other key");
    assert!(err.to_string().contains("the key given is"), "{err}");
}

/// Retention: removing old rotated files by hand leaves a trail that never verifies again;
/// `prune` removes them with a checkpoint that the chain attests, so the rest verifies. A
/// checkpoint file without a prune note in the chain is a forgery.
#[test]
fn prune_removes_old_files_and_what_remains_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open").with_max_size(1500);
    for cookie in 0..12 {
        log.append(destroy_intent(cookie)).expect("append");
    }
    let rotated = rotated_files(&path).expect("list");
    assert!(rotated.len() >= 3, "{rotated:?}");
    let report = prune(
        &mut log,
        SystemTime::now() + Duration::from_secs(60),
        actor(),
        Mode::Enforce,
    )
    .expect("prune");
    assert_eq!(report.removed.len(), rotated.len(), "{report:?}");
    let starts = report.starts_at.expect("starts");
    assert!(starts > 1);
    let verified = verify(&path);
    assert!(verified.is_intact(), "{verified}");
    assert_eq!(verified.pruned_before, Some(starts));
    assert_eq!(verified.first_seq, Some(starts));
    log.append(destroy_intent(99)).expect("the chain goes on");
    assert!(verify(&path).is_intact());

    // Files removed by hand, with a forged checkpoint: nothing in the chain attests it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let mut log = AuditLog::open(&path).expect("open").with_max_size(1500);
    for cookie in 0..12 {
        log.append(destroy_intent(cookie)).expect("append");
    }
    let rotated = rotated_files(&path).expect("list");
    fs::remove_file(&rotated[0]).expect("rm");
    let report = verify(&path);
    assert_eq!(report.exit_code(), 1, "{report}");
    assert!(report.to_string().contains("--from-seq"), "{report}");
    let first = read_trail(&path).expect("read").records[0].clone();
    let checkpoint = Checkpoint {
        seq: first.seq,
        prev: first.prev.clone(),
        time: "2026-12-01T00:00:00.000Z".into(),
        removed: vec![],
    };
    fs::write(
        path.with_file_name(checkpoint_name(&path)),
        serde_json::to_string(&checkpoint).expect("json"),
    )
    .expect("forge");
    let report = verify(&path);
    assert!(truncated(&report).contains("no `prune` note"), "{report}");
    // A copy that starts later is checked from where it starts.
    let copy = verify_with(
        &path,
        &VerifyOptions {
            from_seq: Some(first.seq),
            ..VerifyOptions::default()
        },
    );
    assert!(copy.is_intact(), "{copy}");
}

/// Refused like sshd's StrictModes: a log directory others can write, a symlink where the
/// log should be (a dangling one planted to make root create its target), a missing
/// directory (a mistyped path must not start a second trail).
#[test]
fn unsafe_log_locations_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_in(dir.path());
    let audit_dir = path.parent().expect("parent").to_path_buf();
    fs::set_permissions(&audit_dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = AuditLog::open(&path).expect_err("world-writable dir");
    assert!(err.to_string().contains("writable by others"), "{err}");
    assert!(err.to_string().contains("chmod go-w"), "{err}");
    fs::set_permissions(&audit_dir, fs::Permissions::from_mode(0o750)).expect("chmod");

    let planted = dir.path().join("planted-target");
    std::os::unix::fs::symlink(&planted, &path).expect("symlink");
    let err = AuditLog::open(&path).expect_err("symlink");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!planted.exists(), "root created the link's target");

    let mistyped = dir.path().join("nonexistent/dir/x.jsonl");
    let err = AuditLog::open(&mistyped).expect_err("missing dir");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!dir.path().join("nonexistent").exists());
}

/// The line's hash taken while sealing is the hash of the line as written, keyed or not,
/// and the line opens as its own seal says.
#[test]
fn a_sealed_line_s_hash_is_the_hash_of_the_line() {
    for key in [None, Some(key(9))] {
        let mut record = destroy_intent(5).into_record(7, at(60), "h".into(), GENESIS_PREV.into());
        let (line, hash) = record::seal_line(&mut record, key.as_ref()).expect("seal");
        assert_eq!(hash, line_hash(&line));
        let opened = record::open_line_with(&line, key.as_ref()).expect("opens");
        assert_eq!(opened.seq, 7);
        assert_eq!(seal_with(&mut record, key.as_ref()).expect("seal"), line);
    }
}

/// A trail in `dir` holding `n` destroy intents, and its writer.
fn trail_of_destroys(dir: &Path, n: u64) -> (PathBuf, AuditLog) {
    let path = log_in(dir);
    let mut log = AuditLog::open(&path).expect("open");
    for cookie in 0..n {
        log.append(destroy_intent(cookie)).expect("append");
    }
    (path, log)
}

/// A history read at plan time, brought up to date at act time: what another writer
/// appended since (even across a rotation) is added, and nothing read before is counted
/// twice; with the marked file gone the trail is read again whole.
#[test]
fn a_history_catches_up_with_what_was_appended_since_its_mark() {
    use crate::engine::Keep;
    let destroys =
        |h: &crate::engine::History| h.count(ActionKind::Destroy, SystemTime::now(), 3600);
    let since = SystemTime::now() - Duration::from_secs(3600);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut log) = trail_of_destroys(dir.path(), 2);
    let read = history_marked(&path, since, Keep::all()).expect("history");
    assert_eq!(destroys(&read.history), 2);

    // Nothing appended: the same.
    let same = catch_up(&path, since, read.clone()).expect("catch up");
    assert_eq!(destroys(&same), 2);

    // Another writer's destroy, then a rotation, then one more.
    log.append(destroy_intent(2)).expect("append");
    let mut small = AuditLog::open(&path).expect("open").with_max_size(1);
    small.append(destroy_intent(3)).expect("append");
    assert!(!rotated_files(&path).expect("list").is_empty(), "rotated");
    let caught = catch_up(&path, since, read.clone()).expect("catch up");
    assert_eq!(destroys(&caught), 4);
    assert_eq!(
        destroys(&caught),
        destroys(&history(&path, since, Keep::all()).expect("whole"))
    );

    // The marked file pruned away: read again whole (the files left).
    for file in rotated_files(&path).expect("list") {
        std::fs::remove_file(file).expect("remove");
    }
    let whole = history(&path, since, Keep::all()).expect("whole");
    let again = catch_up(&path, since, read).expect("catch up");
    assert_eq!(destroys(&again), destroys(&whole));
}

/// With the budgets lifted and no rule that has a cooldown or an escalation, nothing of the
/// trail is asked about: it is not read (a trail of earlier mass cleanups is 50 MB each).
/// A cooldown rule, or budgets in force, still read it.
#[test]
fn a_history_nothing_asks_about_is_not_read() {
    use crate::engine::Keep;
    let since = SystemTime::now() - Duration::from_secs(3600);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _log) = trail_of_destroys(dir.path(), 2);
    let rule = |extra: &str| {
        let text = format!(
            "[[rule]]\nname = \"api-leak\"\nstates = [\"close-wait\"]\nolder_than = \"10m\"\naction = \"destroy\"\n{extra}"
        );
        crate::policy::load_str("t", &text).expect("policy")
    };
    let plain = rule("");
    let with_cooldown = rule("cooldown = \"1h\"\n");
    let read = |policies: &crate::policy::PolicySet, lifted: bool| {
        let keep = Keep::for_policies(policies, false).budgets_lifted(lifted);
        history_marked(&path, since, keep).expect("history")
    };
    let lifted = read(&plain, true);
    assert!(lifted.history.keep().nothing());
    assert_eq!(lifted.mark, None, "not read");
    assert_eq!(
        lifted
            .history
            .count(ActionKind::Destroy, SystemTime::now(), 3600),
        0
    );
    let counted = read(&plain, false);
    assert_eq!(
        counted
            .history
            .count(ActionKind::Destroy, SystemTime::now(), 3600),
        2
    );
    let cooled = read(&with_cooldown, true);
    assert!(cooled.mark.is_some(), "read for the cooldown");
    assert!(cooled
        .history
        .latest("api-leak", &TargetKey::Socket(Cookie(1)))
        .is_some());
}
