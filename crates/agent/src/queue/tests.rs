//! Unit tests of the queue: round trips, restart, torn tails, corruption,
//! disk budget.

use super::*;
use std::io::Write;
use stratus_model::{Labels, Sample};

use crate::sink::SeriesSamples;

fn batch(i: i64, series: usize) -> Batch {
    Batch {
        series: (0..series)
            .map(|s| SeriesSamples {
                labels: Labels::from_pairs([("__name__", "m".to_string()), ("s", s.to_string())]),
                samples: vec![Sample::new(i, i as f64)],
            })
            .collect(),
        metadata: vec![],
    }
}

fn metrics() -> Arc<PushMetrics> {
    Arc::new(PushMetrics::unregistered())
}

fn open(dir: &Path, m: &Arc<PushMetrics>) -> Queue {
    Queue::open(QueueConfig::new(dir), "t", m).unwrap()
}

fn read_all(r: &mut QueueReader) -> Vec<QueuedBatch> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match r.next_batch().unwrap() {
            Some(b) => out.push(b),
            None => break,
        }
    }
    out
}

fn first_ts(b: &QueuedBatch) -> i64 {
    b.batch.series[0].samples[0].t
}

#[test]
fn append_read_commit_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    {
        let q = open(dir.path(), &m);
        for i in 0..10 {
            q.append_batch(&batch(i, 3)).unwrap();
        }
        let mut r = q.reader().unwrap();
        let got = read_all(&mut r);
        assert_eq!(got.len(), 10);
        assert_eq!(got[4].batch, batch(4, 3));
        // Acknowledge the first five only.
        q.commit(got[4].end);
    }
    let q = open(dir.path(), &m);
    let mut r = q.reader().unwrap();
    let got = read_all(&mut r);
    assert_eq!(
        got.iter().map(first_ts).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
    // Appends after a reopen continue behind the old records.
    q.append_batch(&batch(10, 1)).unwrap();
    let got = read_all(&mut r);
    assert_eq!(got.len(), 1);
    assert_eq!(first_ts(&got[0]), 10);
}

#[test]
fn segments_roll_and_sent_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let mut cfg = QueueConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    let q = Queue::open(cfg, "t", &m).unwrap();
    for i in 0..400 {
        q.append_batch(&batch(i, 60)).unwrap();
    }
    assert!(q.stats().segments > 3, "{:?}", q.stats());
    let mut r = q.reader().unwrap();
    let got = read_all(&mut r);
    assert_eq!(got.len(), 400);
    for (i, b) in got.iter().enumerate() {
        assert_eq!(first_ts(b), i as i64);
    }
    q.commit(got[399].end);
    assert_eq!(q.stats().segments, 1);
    assert_eq!(q.stats().unread_bytes, 0);
}

#[test]
fn torn_tail_is_truncated_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let path;
    {
        let q = open(dir.path(), &m);
        for i in 0..5 {
            q.append_batch(&batch(i, 4)).unwrap();
        }
        path = segment_path(dir.path(), q.stats().write.segment);
    }
    // Cut the last record in half, as kill -9 during a write would.
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let q = open(dir.path(), &m);
    let mut r = q.reader().unwrap();
    let got = read_all(&mut r);
    assert_eq!(
        got.iter().map(first_ts).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    q.append_batch(&batch(9, 1)).unwrap();
    let got = read_all(&mut r);
    assert_eq!(got.iter().map(first_ts).collect::<Vec<_>>(), vec![9]);
    assert_eq!(m.queue_corruptions("t"), 0);
}

#[test]
fn zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let path;
    {
        let q = open(dir.path(), &m);
        q.append_batch(&batch(1, 2)).unwrap();
        path = segment_path(dir.path(), q.stats().write.segment);
    }
    let f = OpenOptions::new().append(true).open(&path).unwrap();
    (&f).write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let q = open(dir.path(), &m);
    let mut r = q.reader().unwrap();
    assert_eq!(read_all(&mut r).len(), 1);
}

#[test]
fn corruption_in_the_middle_skips_to_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let mut cfg = QueueConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    let first;
    {
        let q = Queue::open(cfg.clone(), "t", &m).unwrap();
        for i in 0..300 {
            q.append_batch(&batch(i, 60)).unwrap();
        }
        first = q.stats().read.segment;
        assert!(q.stats().segments >= 3);
    }
    // Flip a byte in a record in the middle of the first segment.
    let path = segment_path(dir.path(), first);
    let mut data = fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    fs::write(&path, &data).unwrap();

    let q = Queue::open(cfg, "t", &m).unwrap();
    let mut r = q.reader().unwrap();
    let got = read_all(&mut r);
    assert_eq!(m.queue_corruptions("t"), 1);
    // Everything up to the bad record, then everything from the next
    // segment on, in order.
    let ts: Vec<i64> = got.iter().map(first_ts).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*ts.last().unwrap(), 299);
    assert!(ts.len() < 300 && ts.len() > 100, "{}", ts.len());
}

#[test]
fn garbage_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    fs::write(
        dir.path().join("0000000001.seg"),
        b"STRQ\x01\0\0\0\xff\xff\xff\x7f",
    )
    .unwrap();
    fs::write(
        dir.path().join("0000000002.seg"),
        b"garbage!garbage!garbage!",
    )
    .unwrap();
    fs::write(dir.path().join("0000000003.seg"), b"ST").unwrap();
    fs::write(dir.path().join(CURSOR_FILE), b"nonsense").unwrap();
    let q = open(dir.path(), &m);
    let mut r = q.reader().unwrap();
    let _ = read_all(&mut r);
    q.append_batch(&batch(5, 1)).unwrap();
    let got = read_all(&mut r);
    assert_eq!(got.iter().map(first_ts).collect::<Vec<_>>(), vec![5]);
}

#[test]
fn disk_budget_drops_the_oldest_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let mut cfg = QueueConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    cfg.max_bytes = 256 << 10;
    let q = Queue::open(cfg, "t", &m).unwrap();
    let n = 2000;
    for i in 0..n {
        q.append_batch(&batch(i, 10)).unwrap();
    }
    let st = q.stats();
    assert!(st.bytes <= (256 << 10) + (64 << 10), "{st:?}");
    let dropped = m.queue_dropped_samples("t");
    assert!(dropped > 0);
    let mut r = q.reader().unwrap();
    let got = read_all(&mut r);
    let kept: u64 = got.iter().map(|b| b.samples).sum();
    // Every sample is either still queued or counted as dropped.
    assert_eq!(kept + dropped, n as u64 * 10);
    let ts: Vec<i64> = got.iter().map(first_ts).collect();
    assert_eq!(*ts.last().unwrap(), n - 1);
    assert!(ts.windows(2).all(|w| w[0] + 1 == w[1]));
}

#[test]
fn budget_drop_under_an_active_reader_counts_only_unread() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let mut cfg = QueueConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    cfg.max_bytes = 256 << 10;
    let q = Queue::open(cfg, "t", &m).unwrap();
    let mut r = q.reader().unwrap();
    let mut read = 0u64;
    let n = 3000;
    for i in 0..n {
        q.append_batch(&batch(i, 10)).unwrap();
        if i % 3 == 0 {
            if let Some(b) = r.next_batch().unwrap() {
                read += b.samples;
            }
        }
    }
    read += read_all(&mut r).iter().map(|b| b.samples).sum::<u64>();
    assert_eq!(read + m.queue_dropped_samples("t"), n as u64 * 10);
}

#[test]
fn fan_out_writes_every_queue() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let m = metrics();
    let q1 = Queue::open(QueueConfig::new(d1.path()), "a", &m).unwrap();
    let q2 = Queue::open(QueueConfig::new(d2.path()), "b", &m).unwrap();
    let f = FanOut::new(vec![q1.clone(), q2.clone()]);
    f.append(batch(1, 2)).unwrap();
    assert_eq!(read_all(&mut q1.reader().unwrap()).len(), 1);
    assert_eq!(read_all(&mut q2.reader().unwrap()).len(), 1);
}

#[test]
fn cursor_round_trip_and_corruption() {
    let p = Position {
        segment: 7,
        offset: 1234,
    };
    let b = encode_cursor(p);
    assert_eq!(decode_cursor(&b), Some(p));
    for i in 0..b.len() {
        let mut c = b;
        c[i] ^= 1;
        assert_eq!(decode_cursor(&c), None);
    }
}

#[test]
fn a_directory_is_opened_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let q = open(dir.path(), &m);
    let second = Queue::open(QueueConfig::new(dir.path()), "t", &m);
    assert!(
        matches!(second, Err(QueueError::Locked { .. })),
        "{second:?}"
    );
    drop(q);
    let _again = open(dir.path(), &m);
}

#[test]
fn records_walk_as_the_batches_decode() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let q = open(dir.path(), &m);
    let mut b = batch(7, 4);
    b.metadata.push(Metadata {
        family: "m".into(),
        kind: crate::sink::MetricType::Gauge,
        help: "An m.".into(),
        unit: String::new(),
    });
    q.append_batch(&b).unwrap();
    q.append_batch(&batch(8, 2)).unwrap();
    let mut r = q.reader().unwrap();
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!((rec.samples, rec.start.offset), (4, SEGMENT_HEADER));
    let mut series = Vec::new();
    let meta = rec
        .walk(|table, refs, samples| {
            let labels = Labels::from_pairs(refs.iter().map(|&(n, v)| (table[n], table[v])));
            series.push(SeriesSamples {
                labels,
                samples: samples.to_vec(),
            });
        })
        .unwrap();
    assert_eq!(
        Batch {
            series,
            metadata: meta
        },
        b
    );
    // Records and batches read from the same positions.
    let next = r.next_batch().unwrap().unwrap();
    assert_eq!((next.start, next.batch), (rec.end, batch(8, 2)));
    assert!(r.next_record().unwrap().is_none());
}

#[test]
fn cursor_reaches_the_file_within_ticks_without_a_close() {
    // What a killed process leaves: the cursor file is rewritten by the
    // background thread (fsynced only at the data's cadence), so reading
    // it while the queue is still open finds the committed position.
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let q = open(dir.path(), &m);
    for i in 0..4 {
        q.append_batch(&batch(i, 2)).unwrap();
    }
    let mut r = q.reader().unwrap();
    let got = read_all(&mut r);
    q.commit(got[2].end);
    let mut found = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        found = fs::read(dir.path().join(CURSOR_FILE))
            .ok()
            .and_then(|b| read_cursor(&b))
            .map(|(p, _)| p);
        if found == Some(got[2].end) {
            break;
        }
    }
    assert_eq!(found, Some(got[2].end));
}

#[test]
fn next_record_with_walks_in_place_and_a_failing_walk_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let q = open(dir.path(), &m);
    q.append_batch(&batch(1, 3)).unwrap();
    q.append_batch(&batch(2, 2)).unwrap();
    let mut r = q.reader().unwrap();
    let (info, n) = r
        .next_record_with(|p| {
            let mut n = 0;
            p.walk(|_, _, s| n += s.len())?;
            Ok(n)
        })
        .unwrap()
        .unwrap();
    assert_eq!((info.samples, n, info.start.offset), (3, 3, SEGMENT_HEADER));
    // A closure error skips the rest of the segment, as a corrupt record.
    let none = r
        .next_record_with(|_| Err::<(), _>("bad".to_string()))
        .unwrap();
    assert!(none.is_none());
    assert_eq!(m.queue_corruptions("t"), 1);
}

#[test]
fn the_newer_valid_cursor_slot_wins() {
    let pos = |segment, offset| Position { segment, offset };
    let (a, b) = (pos(3, 100), pos(4, 8));
    let mut file = vec![0u8; CURSOR_SLOT_2 as usize + CURSOR_LEN];
    file[..CURSOR_LEN].copy_from_slice(&encode_cursor(a));
    // A file of the one-slot version.
    assert_eq!(read_cursor(&file[..CURSOR_LEN]), Some((a, 0)));
    assert_eq!(read_cursor(&file), Some((a, 0)));
    file[CURSOR_SLOT_2 as usize..].copy_from_slice(&encode_cursor(b));
    assert_eq!(read_cursor(&file), Some((b, CURSOR_SLOT_2)));
    // A torn newer slot: the older one is used.
    file[CURSOR_SLOT_2 as usize + 20] ^= 0xff;
    assert_eq!(read_cursor(&file), Some((a, 0)));
    file[3] ^= 0xff;
    assert_eq!(read_cursor(&file), None);
    assert_eq!(read_cursor(&[]), None);
}

#[test]
fn cursor_writes_alternate_slots_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let q = open(dir.path(), &m);
    for i in 0..4 {
        q.append_batch(&batch(i, 2)).unwrap();
    }
    let got = read_all(&mut q.reader().unwrap());
    let file = || fs::read(dir.path().join(CURSOR_FILE)).unwrap();
    q.commit(got[0].end);
    q.sync();
    let first = read_cursor(&file()).unwrap();
    assert_eq!(first.0, got[0].end);
    q.commit(got[1].end);
    q.sync();
    let second = read_cursor(&file()).unwrap();
    assert_eq!(second.0, got[1].end);
    assert_ne!(first.1, second.1, "slots alternate");
    // The older slot still holds the previous cursor.
    let older = if second.1 == 0 { CURSOR_SLOT_2 } else { 0 } as usize;
    assert_eq!(
        decode_cursor(&file()[older..older + CURSOR_LEN]),
        Some(got[0].end)
    );
    drop(q);
    let q = open(dir.path(), &m);
    let rest = read_all(&mut q.reader().unwrap());
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].start, got[1].end);
}
