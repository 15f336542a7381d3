//! Tests of the write-ahead log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use stratus_model::{Labels, STALE_NAN_BITS};

use super::reader::{Item, read_segment};
use super::segment::{checkpoint_name, segment_name};
use super::*;

fn cfg(segment_size: u64) -> WalConfig {
    WalConfig {
        segment_size,
        fsync: FsyncPolicy::Never,
    }
}

fn ser(sref: u64) -> RefSeries {
    RefSeries {
        sref,
        labels: Labels::from_pairs([("__name__", "up"), ("job", "j"), ("i", &*sref.to_string())]),
    }
}

fn smp(sref: u64, t: i64, v: f64) -> RefSample {
    RefSample { sref, t, v }
}

fn replay_all(dir: &Path, repair: bool) -> Result<(Vec<Record>, ReplayStats), Error> {
    let mut recs = Vec::new();
    let stats = replay(dir, &ReplayOptions { repair }, &mut |r| {
        recs.push(r);
        Ok(())
    })?;
    Ok((recs, stats))
}

fn all_samples(recs: &[Record]) -> Vec<(u64, i64, u64)> {
    recs.iter()
        .flat_map(|r| match r {
            Record::Samples(s) => s.iter().map(|s| (s.sref, s.t, s.v.to_bits())).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn all_series(recs: &[Record]) -> Vec<RefSeries> {
    recs.iter()
        .flat_map(|r| match r {
            Record::Series(s) => s.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn all_tombstones(recs: &[Record]) -> Vec<RefTombstone> {
    recs.iter()
        .flat_map(|r| match r {
            Record::Tombstones(t) => t.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// Start offsets of every valid record in a segment file.
fn record_offsets(path: &Path) -> Vec<u64> {
    let data = std::fs::read(path).unwrap();
    let mut offs = Vec::new();
    let mut f = |_: Item, off: u64| {
        offs.push(off);
        Ok(())
    };
    let stop = read_segment(&data[..], data.len() as u64, path, false, &mut f).unwrap();
    assert!(stop.is_none(), "{stop:?}");
    offs
}

fn seg_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(segment_name(i))
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 1 << bit;
    std::fs::write(path, data).unwrap();
}

#[test]
fn round_trip_every_record_type() {
    let tmp = tempfile::tempdir().unwrap();
    let nan_payload = f64::from_bits(0x7ff8_dead_beef_0001);
    let samples = vec![
        smp(5, 1000, 1.5),
        smp(3, 999, f64::from_bits(STALE_NAN_BITS)),
        smp(u64::MAX, i64::MIN, nan_payload),
        smp(0, i64::MAX, -0.0),
        smp(7, -5, f64::NEG_INFINITY),
        smp(1 << 40, 0, f64::NAN),
    ];
    let series = vec![
        ser(1),
        ser(u64::MAX),
        RefSeries {
            sref: 9,
            labels: Labels::empty(),
        },
        RefSeries {
            sref: 10,
            labels: Labels::from_pairs([("ünï", "çødé ✓"), ("a", "\n\"")]),
        },
    ];
    let tombs = vec![
        RefTombstone {
            sref: 1,
            mint: i64::MIN,
            maxt: i64::MAX,
        },
        RefTombstone {
            sref: 2,
            mint: -10,
            maxt: 10,
        },
    ];
    {
        let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
        wal.log(&series, &samples).unwrap();
        wal.log(&[], &samples[..1]).unwrap();
        wal.log(&series[..1], &[]).unwrap();
        wal.log(&[], &[]).unwrap();
        wal.log_tombstones(&tombs).unwrap();
        wal.log_tombstones(&[]).unwrap();
    }
    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(stats.records, 5);
    assert_eq!(stats.samples, 7);
    assert_eq!(stats.series, 5);
    assert_eq!(stats.tombstones, 2);
    assert!(matches!(&recs[0], Record::Series(s) if *s == series));
    let want: Vec<_> = samples
        .iter()
        .chain(&samples[..1])
        .map(|s| (s.sref, s.t, s.v.to_bits()))
        .collect();
    assert_eq!(all_samples(&recs), want);
    assert!(matches!(&recs[3], Record::Series(s) if *s == series[..1]));
    assert_eq!(all_tombstones(&recs), tombs);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn samples_encoding_round_trips(raw in prop::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 1..200)) {
        let samples: Vec<_> = raw.iter().map(|&(r, t, b)| smp(r, t, f64::from_bits(b))).collect();
        let mut buf = Vec::new();
        record::encode_samples(&mut buf, &samples).unwrap();
        let rec = record::decode(buf[4], &buf[record::FRAME_HEADER_LEN..]).unwrap();
        let Record::Samples(got) = rec else { panic!("wrong type") };
        let got: Vec<_> = got.iter().map(|s| (s.sref, s.t, s.v.to_bits())).collect();
        prop_assert_eq!(got, raw);
    }

    #[test]
    fn series_encoding_round_trips(raw in prop::collection::vec((any::<u64>(), prop::collection::vec(("[a-z_]{1,8}", "\\PC{1,12}"), 0..6)), 1..20)) {
        let series: Vec<_> = raw.iter().map(|(r, l)| RefSeries { sref: *r, labels: Labels::from_pairs(l.clone()) }).collect();
        let mut buf = Vec::new();
        record::encode_series(&mut buf, &series).unwrap();
        let rec = record::decode(buf[4], &buf[record::FRAME_HEADER_LEN..]).unwrap();
        let Record::Series(got) = rec else { panic!("wrong type") };
        prop_assert_eq!(got, series);
    }
}

#[test]
fn rotates_by_size_and_replays_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let seg_size = 4096;
    {
        let wal = Wal::open(tmp.path(), cfg(seg_size)).unwrap();
        assert_eq!(wal.current_segment(), 1);
        for b in 0..50i64 {
            let batch: Vec<_> = (0..100)
                .map(|i| smp(i, b * 100 + i as i64, b as f64))
                .collect();
            wal.log(&[], &batch).unwrap();
        }
        assert!(wal.current_segment() > 5, "{}", wal.current_segment());
        assert!(wal.size_bytes() > 50 * 100 * 10);
        let before = wal.current_segment();
        assert_eq!(wal.rotate().unwrap(), before + 1);
    }
    let listing = segment::list_dir(tmp.path()).unwrap();
    for (_, p) in &listing.segments {
        assert!(std::fs::metadata(p).unwrap().len() <= seg_size);
    }
    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.segments, listing.segments.len());
    let ts: Vec<i64> = all_samples(&recs).iter().map(|s| s.1).collect();
    assert_eq!(ts, (0..5000).collect::<Vec<_>>());
}

#[test]
fn oversized_record_gets_its_own_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), cfg(256)).unwrap();
    let big: Vec<_> = (0..100).map(|i| smp(1, i, 0.0)).collect();
    wal.log(&[], &big).unwrap();
    wal.log(&[], &big).unwrap();
    drop(wal);
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(all_samples(&recs).len(), 200);
}

#[test]
fn open_never_appends_to_an_existing_segment() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
        assert_eq!(wal.current_segment(), round + 1);
        wal.log(&[ser(round)], &[smp(round, round as i64, 1.0)])
            .unwrap();
    }
    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.segments, 3);
    assert_eq!(all_samples(&recs).len(), 3);
}

/// Segment 1: records A, B. Segment 2 (last): records C, D, E.
fn two_segment_wal(dir: &Path) {
    let wal = Wal::open(dir, cfg(1 << 20)).unwrap();
    wal.log(&[ser(1), ser(2)], &[smp(1, 1, 1.0)]).unwrap();
    wal.rotate().unwrap();
    wal.log(&[], &[smp(1, 2, 2.0), smp(2, 2, 2.0)]).unwrap();
    wal.log_tombstones(&[RefTombstone {
        sref: 2,
        mint: 0,
        maxt: 1,
    }])
    .unwrap();
    wal.log(
        &[ser(3)],
        &[smp(3, 3, 3.0), smp(1, 3, 3.0), smp(2, 4, f64::NAN)],
    )
    .unwrap();
}

#[test]
fn torn_tail_at_every_offset_of_last_record() {
    let src = tempfile::tempdir().unwrap();
    two_segment_wal(src.path());
    let seg1 = std::fs::read(seg_path(src.path(), 1)).unwrap();
    let seg2 = std::fs::read(seg_path(src.path(), 2)).unwrap();
    let offs = record_offsets(&seg_path(src.path(), 2));
    let last = *offs.last().unwrap();
    let (full, _) = replay_all(src.path(), false).unwrap();
    let want_samples = all_samples(&full[..full.len() - 2]);
    for cut in last..seg2.len() as u64 {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(seg_path(tmp.path(), 1), &seg1).unwrap();
        std::fs::write(seg_path(tmp.path(), 2), &seg2[..cut as usize]).unwrap();
        let (recs, stats) = replay_all(tmp.path(), false).unwrap();
        // The last log() wrote two records (series + samples); the samples
        // record is the torn one.
        assert_eq!(recs.len(), full.len() - 1, "cut at {cut}");
        assert_eq!(all_samples(&recs), want_samples, "cut at {cut}");
        assert_eq!(stats.truncated_bytes, cut - last);
        let len = std::fs::metadata(seg_path(tmp.path(), 2)).unwrap().len();
        assert_eq!(len, last);
        // A second replay is clean; then the WAL continues.
        let (again, stats) = replay_all(tmp.path(), false).unwrap();
        assert_eq!(again.len(), recs.len());
        assert_eq!(stats.truncated_bytes, 0);
        if cut % 4 == 0 || cut + 1 == seg2.len() as u64 {
            let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
            wal.log(&[], &[smp(9, 99, 9.0)]).unwrap();
            drop(wal);
            let (after, _) = replay_all(tmp.path(), false).unwrap();
            assert_eq!(after.len(), recs.len() + 1);
            assert_eq!(all_samples(&after).last(), Some(&(9, 99, 9.0f64.to_bits())));
        }
    }
}

#[test]
fn torn_tail_is_cut_by_open_before_starting_a_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    two_segment_wal(tmp.path());
    let p = seg_path(tmp.path(), 2);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    // Open (without replay first) must not turn the torn tail into
    // mid-log corruption.
    let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
    wal.log(&[], &[smp(1, 100, 1.0)]).unwrap();
    drop(wal);
    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.segments, 3);
    assert_eq!(all_samples(&recs).last().unwrap().1, 100);
}

#[test]
fn empty_or_short_header_last_segment() {
    for len in 0..segment::HEADER_LEN {
        let tmp = tempfile::tempdir().unwrap();
        two_segment_wal(tmp.path());
        let h = segment::header();
        std::fs::write(seg_path(tmp.path(), 3), &h[..len as usize]).unwrap();
        let (recs, stats) = replay_all(tmp.path(), false).unwrap();
        assert_eq!(recs.len(), 6);
        assert_eq!(stats.truncated_bytes, len);
        let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
        assert_eq!(wal.current_segment(), 4);
    }
}

#[test]
fn bit_flip_in_last_segment_tail_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    two_segment_wal(tmp.path());
    let p = seg_path(tmp.path(), 2);
    let offs = record_offsets(&p);
    let last = *offs.last().unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    // Flip a bit in the payload, the type byte and the length.
    for (at, bit) in [(len - 1, 3u8), (last + 4, 0), (last, 1), (last + 6, 7)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(seg_path(tmp.path(), 1), seg_path(dir.path(), 1)).unwrap();
        std::fs::copy(&p, seg_path(dir.path(), 2)).unwrap();
        flip_bit(&seg_path(dir.path(), 2), at, bit);
        let (recs, stats) = replay_all(dir.path(), false).unwrap();
        assert_eq!(recs.len(), 5, "flip at {at}");
        assert_eq!(stats.truncated_bytes, len - last);
        assert_eq!(
            std::fs::metadata(seg_path(dir.path(), 2)).unwrap().len(),
            last
        );
    }
}

#[test]
fn bit_flip_in_earlier_segment_is_corruption_unless_repair() {
    let tmp = tempfile::tempdir().unwrap();
    two_segment_wal(tmp.path());
    let p1 = seg_path(tmp.path(), 1);
    let offs = record_offsets(&p1);
    assert_eq!(offs.len(), 2);
    flip_bit(&p1, offs[1] + 12, 2);
    let err = replay_all(tmp.path(), false).unwrap_err();
    match &err {
        Error::Corruption { path, offset, .. } => {
            assert_eq!(path, &p1);
            assert_eq!(*offset, offs[1]);
        }
        e => panic!("unexpected {e:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("00000001") && msg.contains("repair"), "{msg}");
    // Nothing was truncated by the failed strict replay.
    let (recs, stats) = replay_all(tmp.path(), true).unwrap();
    assert_eq!(stats.repaired, 1);
    // Series of segment 1 survive, its samples record is gone, segment 2 is intact.
    assert_eq!(recs.len(), 1 + 4);
    assert_eq!(std::fs::metadata(&p1).unwrap().len(), offs[1]);
    let (again, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(again.len(), 5);
    assert_eq!(stats.repaired, 0);
}

#[test]
fn unknown_record_type_is_corruption_even_at_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    two_segment_wal(tmp.path());
    let p = seg_path(tmp.path(), 2);
    // Append a checksum-valid frame of unassigned type 9.
    let mut data = std::fs::read(&p).unwrap();
    let at = data.len() as u64;
    let payload = [1u8, 2, 3];
    let mut frame = Vec::new();
    frame.extend_from_slice(&3u32.to_le_bytes());
    frame.push(9);
    let crc = record::frame_crc(&frame[..5], &payload);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(&payload);
    data.extend_from_slice(&frame);
    std::fs::write(&p, &data).unwrap();
    let err = replay_all(tmp.path(), false).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { offset, reason, .. } if *offset == at && reason.contains("unknown record type")),
        "{err}"
    );
    let (recs, _) = replay_all(tmp.path(), true).unwrap();
    assert_eq!(recs.len(), 6);
}

#[test]
fn missing_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    two_segment_wal(tmp.path());
    let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
    wal.log(&[], &[smp(1, 50, 1.0)]).unwrap();
    drop(wal);
    std::fs::remove_file(seg_path(tmp.path(), 2)).unwrap();
    let err = replay_all(tmp.path(), false).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    let (recs, stats) = replay_all(tmp.path(), true).unwrap();
    assert_eq!(stats.repaired, 1);
    assert_eq!(all_samples(&recs).len(), 2);
}

#[test]
fn callback_error_stops_replay() {
    let tmp = tempfile::tempdir().unwrap();
    two_segment_wal(tmp.path());
    let mut n = 0;
    let err = replay(tmp.path(), &ReplayOptions::default(), &mut |_| {
        n += 1;
        if n == 3 {
            return Err(crate::Error::Index {
                message: "boom".into(),
            });
        }
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, Error::Callback { .. }), "{err}");
    assert!(err.to_string().contains("boom"));
}

#[test]
fn checkpoint_keeps_exactly_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), cfg(2048)).unwrap();
    let series: Vec<_> = (1..=10).map(ser).collect();
    wal.log(&series, &[]).unwrap();
    for t in 0..100i64 {
        let batch: Vec<_> = (1..=10).map(|r| smp(r, t, t as f64)).collect();
        wal.log(&[], &batch).unwrap();
    }
    wal.log_tombstones(&[
        RefTombstone {
            sref: 1,
            mint: 0,
            maxt: 5,
        },
        RefTombstone {
            sref: 2,
            mint: 0,
            maxt: 5,
        },
    ])
    .unwrap();
    let through = wal.rotate().unwrap() - 1;
    assert!(through >= 3);
    wal.log(&[ser(11)], &[smp(11, 1, 1.0), smp(1, 1, 1.0)])
        .unwrap();

    let keep = |r: u64| r % 2 == 0;
    let err = wal
        .checkpoint(wal.current_segment(), &keep, 50)
        .unwrap_err();
    assert!(matches!(err, Error::CheckpointOpenSegment { .. }));
    let st = wal.checkpoint(through, &keep, 50).unwrap();
    assert_eq!(st.through, through);
    assert_eq!(st.series_kept, 5);
    assert_eq!(st.series_dropped, 5);
    assert_eq!(st.samples_kept, 5 * 50);
    assert_eq!(st.samples_dropped, 1000 - 250);
    assert_eq!(st.tombstones_kept, 1);
    assert_eq!(st.tombstones_dropped, 1);
    assert_eq!(st.segments_deleted as u64, through);
    assert!(tmp.path().join(checkpoint_name(through)).is_dir());
    let listing = segment::list_dir(tmp.path()).unwrap();
    assert_eq!(listing.segments.first().unwrap().0, through + 1);

    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.checkpoint, Some(through));
    let got_series: Vec<u64> = all_series(&recs).iter().map(|s| s.sref).collect();
    assert_eq!(got_series, vec![2, 4, 6, 8, 10, 11]);
    let s = all_samples(&recs);
    let (cp, rest) = s.split_at(250);
    assert!(cp.iter().all(|(r, t, _)| r % 2 == 0 && *t >= 50));
    // Checkpoint first, then the later segment, in log order.
    assert_eq!(cp.first().unwrap().1, 50);
    assert_eq!(cp.last().unwrap().1, 99);
    assert_eq!(rest, &[(11, 1, 1.0f64.to_bits()), (1, 1, 1.0f64.to_bits())]);
    assert_eq!(
        all_tombstones(&recs),
        vec![RefTombstone {
            sref: 2,
            mint: 0,
            maxt: 5
        }]
    );

    // A second checkpoint folds in the first and removes it.
    assert!(matches!(
        wal.checkpoint(through, &keep, 0).unwrap_err(),
        Error::CheckpointNotNewer { .. }
    ));
    let through2 = wal.rotate().unwrap() - 1;
    let st2 = wal.checkpoint(through2, &|r| r != 4, 60).unwrap();
    assert_eq!(st2.checkpoints_deleted, 1);
    assert!(!tmp.path().join(checkpoint_name(through)).exists());
    drop(wal);
    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.checkpoint, Some(through2));
    let got_series: Vec<u64> = all_series(&recs).iter().map(|s| s.sref).collect();
    assert_eq!(got_series, vec![2, 6, 8, 10, 11]);
    assert_eq!(all_samples(&recs).len(), 4 * 40);
    // The next open starts after the checkpoint.
    let wal = Wal::open(tmp.path(), cfg(2048)).unwrap();
    assert_eq!(wal.current_segment(), through2 + 2);
}

#[test]
fn crash_leftovers_of_a_checkpoint_are_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
    wal.log(&[ser(1), ser(2)], &[smp(1, 1, 1.0), smp(2, 1, 1.0)])
        .unwrap();
    wal.rotate().unwrap();
    wal.log(&[], &[smp(1, 2, 2.0)]).unwrap();
    wal.rotate().unwrap();
    wal.log(&[], &[smp(1, 3, 3.0)]).unwrap();
    let saved: Vec<_> = [1, 2]
        .iter()
        .map(|&i| std::fs::read(seg_path(tmp.path(), i)).unwrap())
        .collect();
    wal.checkpoint(2, &|r| r == 1, 0).unwrap();
    drop(wal);
    // Crash before the old segments were deleted: they are still there.
    for (i, d) in saved.iter().enumerate() {
        std::fs::write(seg_path(tmp.path(), i as u64 + 1), d).unwrap();
    }
    // A half-written newer checkpoint with garbage inside.
    let tmp_cp = tmp
        .path()
        .join(format!("{}{}", checkpoint_name(3), segment::TMP_SUFFIX));
    std::fs::create_dir(&tmp_cp).unwrap();
    std::fs::write(tmp_cp.join(segment_name(1)), b"garbage!garbage!").unwrap();

    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.checkpoint, Some(2));
    assert_eq!(stats.segments, 1);
    assert_eq!(all_series(&recs).len(), 1);
    let ts: Vec<i64> = all_samples(&recs).iter().map(|s| s.1).collect();
    assert_eq!(ts, vec![1, 2, 3]);

    let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
    assert!(!tmp_cp.exists());
    assert_eq!(wal.current_segment(), 4);
    // Checkpointing again cleans up the stale segments too.
    let st = wal.checkpoint(3, &|_| true, 0).unwrap();
    assert_eq!(st.segments_deleted, 3);
    drop(wal);
    let (recs2, _) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(all_samples(&recs2), all_samples(&recs));
}

#[test]
fn concurrent_writers_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(tmp.path(), cfg(16 << 10)).unwrap());
    let threads = 4u64;
    let per = 200i64;
    let handles: Vec<_> = (0..threads)
        .map(|th| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..per {
                    let batch: Vec<_> = (0..20).map(|k| smp(th * 1000 + k, i, i as f64)).collect();
                    let series = if i == 0 { vec![ser(th)] } else { vec![] };
                    wal.log(&series, &batch).unwrap();
                    if i % 50 == 0 {
                        wal.sync_if_due().unwrap();
                    }
                }
            })
        })
        .collect();
    // Checkpoint concurrently with the writers.
    let mut checkpoints = 0;
    while handles.iter().any(|h| !h.is_finished()) {
        let cur = wal.current_segment();
        if cur > 2 && wal.checkpoint(cur - 1, &|_| true, i64::MIN).is_ok() {
            checkpoints += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    for h in handles {
        h.join().unwrap();
    }
    drop(wal);
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    for th in 0..threads {
        let ts: Vec<i64> = all_samples(&recs)
            .iter()
            .filter(|s| s.0 == th * 1000)
            .map(|s| s.1)
            .collect();
        assert_eq!(
            ts,
            (0..per).collect::<Vec<_>>(),
            "thread {th} ({checkpoints} checkpoints)"
        );
    }
    assert_eq!(all_samples(&recs).len() as i64, threads as i64 * per * 20);
    assert_eq!(all_series(&recs).len() as u64, threads);
}

#[test]
fn fsync_policies() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(std::time::Duration::ZERO),
        FsyncPolicy::default(),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let wal = Wal::open(
            tmp.path(),
            WalConfig {
                fsync: policy,
                ..WalConfig::default()
            },
        )
        .unwrap();
        wal.log(&[ser(1)], &[smp(1, 1, 1.0)]).unwrap();
        wal.sync_if_due().unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.dir(), tmp.path());
        drop(wal);
        assert_eq!(replay_all(tmp.path(), false).unwrap().0.len(), 2);
    }
    assert_eq!(WalConfig::default().segment_size, 128 << 20);
}

/// A tiny deterministic PRNG for the fuzz test (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn fuzz_reader_never_panics() {
    let src = tempfile::tempdir().unwrap();
    two_segment_wal(src.path());
    let valid = std::fs::read(seg_path(src.path(), 2)).unwrap();
    // A second base segment with exemplar records.
    let ex_dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(ex_dir.path(), cfg(1 << 20)).unwrap();
        wal.log(&[ser(1)], &[smp(1, 1, 1.0)]).unwrap();
        wal.log_exemplars(&(0..3).map(exm).collect::<Vec<_>>())
            .unwrap();
        wal.log_exemplars(&[exm(7)]).unwrap();
    }
    let valid_ex = std::fs::read(seg_path(ex_dir.path(), 1)).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut inputs = Vec::new();
    for _ in 0..1500 {
        let len = rng.below(200);
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 {
            // Valid header, random body.
            let h = segment::header();
            let n = h.len().min(d.len());
            d[..n].copy_from_slice(&h[..n]);
        }
        inputs.push(d);
    }
    for i in 0..3000 {
        let mut d = if i % 2 == 0 {
            valid.clone()
        } else {
            valid_ex.clone()
        };
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 if !d.is_empty() => {
                    let i = rng.below(d.len());
                    d[i] ^= 1 << rng.below(8);
                }
                1 => d.truncate(rng.below(d.len() + 1)),
                2 => {
                    let i = rng.below(d.len() + 1);
                    d.insert(i, rng.next() as u8);
                }
                3 if !d.is_empty() => {
                    let i = rng.below(d.len());
                    d.remove(i);
                }
                _ => {
                    // Overwrite a length field with something large.
                    let i = rng.below(d.len().saturating_sub(4));
                    if i + 4 <= d.len() {
                        d[i..i + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                    }
                }
            }
        }
        inputs.push(d);
    }
    for d in &inputs {
        fuzz_wal_read(d);
    }
    // A sample of them through the full replay path on disk, strict and repair.
    for d in inputs.iter().step_by(40) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(seg_path(dir.path(), 1), d).unwrap();
        std::fs::write(seg_path(dir.path(), 2), d).unwrap();
        let _ = replay_all(dir.path(), false);
        let _ = replay_all(dir.path(), true);
    }
}

#[test]
fn metadata_records_round_trip() {
    use crate::metadata::{MetricMetadata, MetricType};
    let m = vec![
        (
            "a".to_string(),
            MetricMetadata {
                kind: MetricType::StateSet,
                help: "h\u{e9}".into(),
                unit: "s".into(),
            },
        ),
        ("b".to_string(), MetricMetadata::default()),
    ];
    let mut buf = Vec::new();
    super::record::encode_metadata(&mut buf, &m).unwrap();
    let payload = &buf[super::record::FRAME_HEADER_LEN..];
    match super::record::decode(super::record::TYPE_METADATA, payload).unwrap() {
        Record::Metadata(got) => assert_eq!(got, m),
        other => panic!("unexpected {other:?}"),
    }
    let mut bad = payload.to_vec();
    if let Some(last) = bad.last_mut() {
        *last = 99;
    }
    assert!(super::record::decode(super::record::TYPE_METADATA, &bad).is_err());
}

fn hist(i: u64) -> stratus_model::Histogram {
    stratus_model::Histogram {
        reset_hint: (i % 4) as u8,
        schema: if i % 5 == 0 { -53 } else { (i % 9) as i32 - 4 },
        zero_threshold: if i % 2 == 0 { 0.0 } else { 1e-128 },
        zero_count: i,
        count: u64::MAX - i,
        sum: f64::from_bits(0x7ff8_0000_0000_0000 | i),
        positive_spans: vec![stratus_model::BucketSpan {
            offset: -(i as i32),
            length: 2,
        }],
        positive_deltas: vec![i as i64, i64::MIN],
        negative_spans: Vec::new(),
        negative_deltas: Vec::new(),
        custom_values: if i % 5 == 0 {
            vec![0.5, -0.0]
        } else {
            Vec::new()
        },
    }
}

#[test]
fn histogram_records_round_trip_and_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let hs: Vec<RefHistogram> = (0..10)
        .map(|i| RefHistogram {
            sref: 1 + i % 2,
            t: i as i64 * 1000 - 3000,
            h: hist(i),
        })
        .collect();
    let fhs: Vec<RefFloatHistogram> = (0..10)
        .map(|i| {
            let mut h = hist(i).to_float();
            h.zero_count = f64::from_bits(STALE_NAN_BITS);
            RefFloatHistogram {
                sref: 2,
                t: i64::MAX - i as i64,
                h,
            }
        })
        .collect();
    {
        let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
        wal.log_with_histograms(&[ser(1), ser(2)], &[smp(1, 5, 1.0)], &hs, &fhs)
            .unwrap();
        wal.log_with_histograms(&[], &[], &hs[..1], &[]).unwrap();
        wal.rotate().unwrap();
    }
    let (recs, stats) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(stats.samples, 1 + 10 + 10 + 1);
    let got_h: Vec<&RefHistogram> = recs
        .iter()
        .flat_map(|r| match r {
            Record::Histograms(v) => v.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(got_h.len(), 11);
    for (a, b) in got_h.iter().zip(hs.iter().chain(&hs[..1])) {
        assert_eq!((a.sref, a.t), (b.sref, b.t));
        assert!(a.h.bit_eq(&b.h));
    }
    let got_f: Vec<&RefFloatHistogram> = recs
        .iter()
        .flat_map(|r| match r {
            Record::FloatHistograms(v) => v.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(got_f.len(), 10);
    for (a, b) in got_f.iter().zip(&fhs) {
        assert_eq!((a.sref, a.t), (b.sref, b.t));
        assert!(a.h.bit_eq(&b.h));
    }
    // Checkpoint: series 1 dropped, samples before t = 0 dropped.
    let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
    let st = wal
        .checkpoint(wal.current_segment() - 1, &|r| r == 2, 0)
        .unwrap();
    assert!(st.samples_dropped > 0);
    drop(wal);
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    for r in &recs {
        match r {
            Record::Histograms(v) => assert!(v.iter().all(|h| h.sref == 2 && h.t >= 0)),
            Record::FloatHistograms(v) => assert_eq!(v.len(), 10),
            _ => {}
        }
    }
    assert!(
        recs.iter()
            .any(|r| matches!(r, Record::Histograms(v) if !v.is_empty()))
    );
    // Corrupt payloads are errors, never panics.
    let mut buf = Vec::new();
    super::record::encode_histograms(&mut buf, &hs).unwrap();
    let payload = buf[super::record::FRAME_HEADER_LEN..].to_vec();
    for cut in 0..payload.len() {
        let _ = super::record::decode(super::record::TYPE_HISTOGRAMS, &payload[..cut]);
        let _ = super::record::decode(super::record::TYPE_FLOAT_HISTOGRAMS, &payload[..cut]);
        let mut m = payload.clone();
        m[cut] ^= 0xff;
        let _ = super::record::decode(super::record::TYPE_HISTOGRAMS, &m);
    }
}

#[test]
fn version_2_segments_are_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
        wal.log(&[ser(1)], &[smp(1, 5, 1.0)]).unwrap();
    }
    let p = seg_path(tmp.path(), 1);
    let mut data = std::fs::read(&p).unwrap();
    assert_eq!(data[4], 4);
    data[4] = 2;
    std::fs::write(&p, &data).unwrap();
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(all_samples(&recs), vec![(1, 5, 1.0f64.to_bits())]);
    data[4] = 3;
    std::fs::write(&p, &data).unwrap();
    assert_eq!(replay_all(tmp.path(), false).unwrap().0.len(), 2);
    data[4] = 5;
    std::fs::write(&p, &data).unwrap();
    assert!(replay_all(tmp.path(), false).is_err());
}

fn exm(i: i64) -> (Labels, stratus_model::Exemplar) {
    (
        Labels::from_pairs([("__name__", "req_total"), ("i", &*(i % 3).to_string())]),
        stratus_model::Exemplar {
            labels: Labels::from_pairs([("trace_id", &*format!("t{i}"))]),
            value: if i == 7 {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                i as f64 * 0.5
            },
            t: 1000 * i - 5000,
        },
    )
}

fn all_exemplars(recs: &[Record]) -> Vec<(Labels, i64, u64, Labels)> {
    recs.iter()
        .flat_map(|r| match r {
            Record::Exemplars(v) => v
                .iter()
                .map(|(s, e)| (s.clone(), e.t, e.value.to_bits(), e.labels.clone()))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn exemplar_records_round_trip_and_checkpoint_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let exs: Vec<_> = (0..20).map(exm).collect();
    let want = |r: std::ops::Range<usize>| all_exemplars(&[Record::Exemplars(exs[r].to_vec())]);
    {
        let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
        wal.log(&[ser(1)], &[smp(1, 5, 1.0)]).unwrap();
        wal.log_exemplars(&exs[..12]).unwrap();
        wal.log_exemplars(&[]).unwrap();
        wal.rotate().unwrap();
        wal.log_exemplars(&exs[12..]).unwrap();
        wal.rotate().unwrap();
    }
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(all_exemplars(&recs), want(0..20));
    // A checkpoint of the first segment keeps its newest 5 exemplars,
    // after its other records; the second segment follows.
    let wal = Wal::open(tmp.path(), cfg(1 << 20)).unwrap();
    let st = wal
        .checkpoint_with_exemplars(1, &|_| true, i64::MIN, 5)
        .unwrap();
    assert_eq!((st.exemplars_kept, st.exemplars_dropped), (5, 7));
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    assert!(matches!(recs.last(), Some(Record::Exemplars(_))));
    let mut w = want(7..12);
    w.extend(want(12..20));
    assert_eq!(all_exemplars(&recs), w);
    assert_eq!(all_samples(&recs).len(), 1);
    // The next checkpoint (over the old one and segment 2) keeps 10;
    // with 0 none.
    let st = wal
        .checkpoint_with_exemplars(2, &|_| true, i64::MIN, 10)
        .unwrap();
    assert_eq!(st.exemplars_kept, 10);
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    assert_eq!(all_exemplars(&recs), want(10..20));
    wal.rotate().unwrap();
    let st = wal
        .checkpoint_with_exemplars(3, &|_| true, i64::MIN, 0)
        .unwrap();
    assert_eq!(st.exemplars_kept, 0);
    let (recs, _) = replay_all(tmp.path(), false).unwrap();
    assert!(all_exemplars(&recs).is_empty());
    // Corrupt payloads are errors, never panics.
    let mut buf = Vec::new();
    super::record::encode_exemplars(&mut buf, &exs).unwrap();
    let payload = buf[super::record::FRAME_HEADER_LEN..].to_vec();
    assert!(super::record::decode(super::record::TYPE_EXEMPLARS, &payload).is_ok());
    for cut in 0..payload.len() {
        let _ = super::record::decode(super::record::TYPE_EXEMPLARS, &payload[..cut]);
        let mut m = payload.clone();
        m[cut] ^= 0xff;
        let _ = super::record::decode(super::record::TYPE_EXEMPLARS, &m);
    }
    // Unsorted exemplar labels are corruption.
    let mut buf = Vec::new();
    // Encode by hand: the encoder debug-asserts sorted labels.
    let start = buf.len();
    buf.extend_from_slice(&[0u8; super::record::FRAME_HEADER_LEN]);
    let p = &mut buf;
    super::record::put_uvarint(p, 1);
    for s in ["a", "1"] {
        super::record::put_uvarint(p, s.len() as u64);
        p.extend_from_slice(s.as_bytes());
    }
    super::record::put_uvarint(p, 2);
    p.extend_from_slice(&1f64.to_bits().to_le_bytes());
    super::record::put_uvarint(p, 2);
    for s in ["z", "1", "a", "2"] {
        super::record::put_uvarint(p, s.len() as u64);
        p.extend_from_slice(s.as_bytes());
    }
    let err = super::record::decode(
        super::record::TYPE_EXEMPLARS,
        &buf[start + super::record::FRAME_HEADER_LEN..],
    )
    .unwrap_err();
    assert!(err.contains("not sorted"), "{err}");
}
