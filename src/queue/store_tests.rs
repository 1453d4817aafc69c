//! Tests of `queue/store.rs`.

use super::*;

fn meta(endpoint: &str) -> Meta {
    Meta {
        endpoint: endpoint.into(),
        content_type: "application/json".into(),
        ..Default::default()
    }
}

fn limits(max: u64) -> Limits {
    Limits {
        max_bytes: max,
        dlq_max_bytes: max,
    }
}

#[test]
fn file_format_round_trips_and_detects_damage() {
    let m = Meta {
        id: "x".into(),
        status: Some(400),
        ..meta("/a")
    };
    let data = encode(&m, b"payload");
    assert_eq!(decode(&data).expect("decodes"), (m, b"payload".to_vec()));
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(decode(&bad), Err("checksum mismatch"));
    assert_eq!(decode(&data[..data.len() - 1]), Err("length mismatch"));
    assert_eq!(decode(b"nope"), Err("bad magic"));
}

#[test]
fn survives_reopen_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("open");
        for i in 0..5 {
            q.push(meta(&format!("/e{i}")), format!("p{i}").as_bytes())
                .expect("push");
        }
        let h = q.head().expect("head");
        q.ack(h.seq);
    }
    let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("reopen");
    assert_eq!(q.depth().pending, 4);
    let h = q.head().expect("head");
    let (m, p) = q.load(h.seq).expect("load");
    assert_eq!(
        (m.endpoint.as_str(), p.as_slice()),
        ("/e1", b"p1".as_slice())
    );
    // New payloads go after the old ones.
    q.push(meta("/new"), b"n").expect("push");
    assert!(q.head().expect("head").seq < q.depth().pending + 10);
}

#[test]
fn oldest_dropped_at_byte_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = encode(
        &Meta {
            id: "q-0-1".into(),
            created_ms: 1,
            ..meta("/a")
        },
        &[0u8; 100],
    )
    .len() as u64;
    let q = Queue::open(dir.path(), "q", limits(one * 3 + one / 2)).expect("open");
    let mut dropped = 0;
    for _ in 0..5 {
        dropped += q
            .push(
                Meta {
                    created_ms: 1,
                    ..meta("/a")
                },
                &[0u8; 100],
            )
            .expect("push");
    }
    assert_eq!(dropped, 2);
    assert_eq!(q.depth().pending, 3);
    assert_eq!(q.stats.dropped.load(Relaxed), 2);
    assert_eq!(q.head().expect("head").seq, 3);
    assert_eq!(
        fs::read_dir(dir.path().join("q/pending"))
            .expect("dir")
            .count(),
        3
    );
    assert!(matches!(
        q.push(meta("/a"), &vec![0u8; 10_000]),
        Err(QueueError::TooLarge { .. })
    ));
}

#[test]
fn reject_and_requeue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("open");
    q.push(meta("/a"), b"bad").expect("push");
    q.push(meta("/b"), b"good").expect("push");
    let h = q.head().expect("head");
    let (m, p) = q.load(h.seq).expect("load");
    q.reject(h.seq, m, &p, 400, "{\"errors\":[\"bad\"]}")
        .expect("reject");
    assert_eq!((q.depth().pending, q.depth().dlq), (1, 1));
    let dl = q.dead_letters(10);
    assert_eq!(dl[0].meta.status, Some(400));
    assert_eq!(
        dl[0].meta.response.as_deref(),
        Some("{\"errors\":[\"bad\"]}")
    );
    drop(q);
    let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("reopen");
    assert_eq!(q.depth().dlq, 1);
    assert_eq!(q.requeue_dead_letters().expect("requeue"), 1);
    assert_eq!((q.depth().pending, q.depth().dlq), (2, 0));
    let first = q.head().expect("head");
    q.ack(first.seq);
    let (m, p) = q.load(q.head().expect("head").seq).expect("load");
    assert_eq!(
        (m.endpoint.as_str(), p.as_slice()),
        ("/a", b"bad".as_slice())
    );
}

#[test]
fn damaged_file_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("open");
    q.push(meta("/a"), b"x").expect("push");
    let h = q.head().expect("head");
    fs::write(
        dir.path().join("q/pending").join(file_name(h.seq)),
        b"TQ01garbage-garbage",
    )
    .expect("damage");
    assert!(matches!(q.load(h.seq), Err(QueueError::Corrupt { .. })));
    assert_eq!(q.depth().pending, 0);
    assert_eq!(q.stats.corrupt.load(Relaxed), 1);
}

fn tmp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join("q/tmp"))
        .expect("tmp dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Replaces directory `sub` of queue `q` with a regular file, so writes there fail.
fn break_dir(dir: &Path, sub: &str) {
    let p = dir.join("q").join(sub);
    fs::remove_dir_all(&p).expect("remove dir");
    fs::write(&p, b"not a directory").expect("file in its place");
}

#[test]
fn a_failed_rename_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("open");
    q.push(meta("/a"), b"ok").expect("push");
    let ok = q.head().expect("head");
    q.ack(ok.seq);
    break_dir(dir.path(), "pending");
    for _ in 0..3 {
        let e = q.push(meta("/a"), b"lost").expect_err("pending/ is a file");
        assert!(matches!(e, QueueError::Io { .. }), "{e}");
    }
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
    assert_eq!(q.stats.write_errors.load(Relaxed), 3);
    assert_eq!(q.depth().pending, 0, "nothing was queued");
    assert_eq!(q.stats.enqueue_failed.load(Relaxed), 3);
    let losses = q.stats.recent_losses(unix_ms()).expect("recent losses");
    assert_eq!(losses.count, 3);
    assert!(losses.last_error.contains("/q/pending/"), "{losses:?}");
    assert!(losses.last_error.contains("Not a directory"), "{losses:?}");
}

#[test]
fn a_failed_create_or_a_too_large_payload_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), "q", limits(1000)).expect("open");
    assert!(matches!(
        q.push(meta("/a"), &[0u8; 2000]),
        Err(QueueError::TooLarge { .. })
    ));
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
    assert_eq!(
        q.stats.enqueue_failed.load(Relaxed),
        1,
        "too large is a loss"
    );
    break_dir(dir.path(), "tmp");
    let e = q.push(meta("/a"), b"lost").expect_err("tmp/ is a file");
    assert!(matches!(e, QueueError::Io { .. }), "{e}");
    assert!(
        dir.path().join("q/tmp").is_file(),
        "nothing created in its place"
    );
    assert_eq!(q.depth().pending, 0);
    assert_eq!(q.stats.enqueue_failed.load(Relaxed), 2);
}

/// A write that fails with ENOSPC part-way (the temporary file exists by then): the next file
/// name in `tmp/` is a symlink to `/dev/full`, which the create follows.
#[test]
fn a_full_disk_leaves_no_temporary_file() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full on this system");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), "q", limits(1 << 20)).expect("open");
    let next = lock(&q.index).next_seq;
    let link = dir.path().join("q/tmp").join(file_name(next));
    std::os::unix::fs::symlink("/dev/full", &link).expect("symlink");
    let e = q.push(meta("/a"), b"lost").expect_err("disk full");
    let QueueError::Io { ref source, .. } = e else {
        panic!("{e}")
    };
    assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
    assert!(Path::new("/dev/full").exists(), "only the link was removed");
    let losses = q.stats.recent_losses(unix_ms()).expect("recent losses");
    assert_eq!(losses.count, 1);
    assert!(losses.last_error.contains("No space left"), "{losses:?}");
    // The next payload goes through; the loss is still reported.
    q.push(meta("/a"), b"kept").expect("push");
    assert_eq!(q.depth().pending, 1);
    assert_eq!(q.stats.enqueue_failed.load(Relaxed), 1);
    assert!(q.stats.recent_losses(unix_ms()).is_some());
}
