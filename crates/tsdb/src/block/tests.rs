//! Tests of writing and reading whole blocks, corruption and fuzzing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::encoding::{Dec, put_be32};
use super::index_writer::TOC_LEN;
use super::*;
use crate::index::PostingsSource;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type OwnedChunk = (i64, i64, u8, Vec<u8>, u32);

/// Realistic series: metric names, jobs, instances, pods, some extra labels.
fn gen_series(n: usize, chunks_per_series: u64, seed: u64) -> BTreeMap<Labels, Vec<OwnedChunk>> {
    const METRICS: [&str; 12] = [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "process_resident_memory_bytes",
        "go_goroutines",
        "up",
        "kube_pod_status_phase",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "grpc_server_handled_total",
        "scrape_duration_seconds",
    ];
    const JOBS: [&str; 5] = ["api", "node", "kubelet", "cadvisor", "grpc"];
    const NS: [&str; 8] = [
        "default",
        "kube-system",
        "monitoring",
        "payments",
        "checkout",
        "search",
        "ingest",
        "auth",
    ];
    let mut rng = Rng(seed | 1);
    let mut out = BTreeMap::new();
    while out.len() < n {
        let m = METRICS[rng.below(METRICS.len() as u64) as usize];
        let mut b = stratus_model::LabelsBuilder::default();
        b.set("__name__", m);
        b.set("job", JOBS[rng.below(5) as usize]);
        b.set(
            "instance",
            format!("10.1.{}.{}:9100", rng.below(4), rng.below(60)),
        );
        b.set("namespace", NS[rng.below(8) as usize]);
        b.set(
            "pod",
            format!("app-{:x}-{:05x}", rng.below(40), rng.below(1 << 20)),
        );
        if m.ends_with("_bucket") {
            b.set(
                "le",
                ["0.1", "0.5", "1", "5", "+Inf"][rng.below(5) as usize],
            );
        }
        if m.starts_with("node_cpu") {
            b.set(
                "mode",
                ["idle", "user", "system", "iowait"][rng.below(4) as usize],
            );
            b.set("cpu", rng.below(16).to_string());
        }
        if m.starts_with("http") {
            b.set("code", ["200", "404", "500"][rng.below(3) as usize]);
            b.set("method", ["GET", "POST"][rng.below(2) as usize]);
        }
        let labels = b.build();
        let k = 1 + rng.below(chunks_per_series);
        let mut t = rng.below(1000) as i64 - 500;
        let mut chunks = Vec::new();
        for _ in 0..k {
            let mint = t;
            let maxt = mint + rng.below(100_000) as i64;
            let len = rng.below(120) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            chunks.push((
                mint,
                maxt,
                1 + rng.below(3) as u8,
                data,
                1 + rng.below(200) as u32,
            ));
            t = maxt + 1 + rng.below(30_000) as i64;
        }
        out.insert(labels, chunks);
    }
    out
}

fn write_block(
    dir: &Path,
    series: &BTreeMap<Labels, Vec<OwnedChunk>>,
    segment_size: Option<u64>,
) -> BlockMeta {
    let mut w = BlockWriter::create(dir, ulid::Ulid::from_parts(1, 7), -1000, 10_000_000).unwrap();
    if let Some(s) = segment_size {
        w = w.with_segment_size(s);
    }
    for (l, cs) in series {
        let inputs: Vec<ChunkInput<'_>> = cs
            .iter()
            .map(|(mint, maxt, enc, data, n)| ChunkInput {
                mint: *mint,
                maxt: *maxt,
                encoding: *enc,
                data,
                num_samples: *n,
            })
            .collect();
        w.add_series(l, &inputs).unwrap();
    }
    w.finish(BlockCompaction {
        level: 1,
        sources: vec![ulid::Ulid::from_parts(1, 7)],
        parents: vec![],
        deletable: false,
    })
    .unwrap()
}

/// Checks every series, chunk, label and postings list of the block
/// against what was written.
fn verify_block(r: &BlockReader, series: &BTreeMap<Labels, Vec<OwnedChunk>>) {
    let ids = r.all_postings().unwrap();
    assert_eq!(ids.len(), series.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut metas = Vec::new();
    let mut by_pair: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (&id, (labels, chunks)) in ids.iter().zip(series) {
        let got = r.series(id, &mut metas).unwrap();
        assert_eq!(&got, labels);
        assert_eq!(metas.len(), chunks.len());
        for (m, (mint, maxt, enc, data, _)) in metas.iter().zip(chunks) {
            assert_eq!((m.mint, m.maxt), (*mint, *maxt));
            let (e, d) = r.chunk(m.chunk_ref).unwrap();
            assert_eq!(e, *enc);
            assert_eq!(d, &data[..]);
        }
        for l in labels {
            by_pair
                .entry((l.name.to_string(), l.value.to_string()))
                .or_default()
                .push(id);
        }
    }
    let names: BTreeSet<String> = by_pair.keys().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        r.label_names().unwrap(),
        names.into_iter().collect::<Vec<_>>()
    );
    for name in r.label_names().unwrap() {
        let want: Vec<String> = by_pair
            .keys()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(r.label_values(&name).unwrap(), want);
        // for_each_value from the middle, stopping early.
        if want.len() > 2 {
            let from = &want[want.len() / 2];
            let mut got = Vec::new();
            r.for_each_value(&name, from, &mut |v| {
                got.push(v.to_string());
                got.len() < 2
            })
            .unwrap();
            assert_eq!(got, want[want.len() / 2..want.len() / 2 + 2].to_vec());
        }
    }
    for ((n, v), want) in &by_pair {
        assert_eq!(&r.postings(n, v).unwrap(), want, "{n}={v}");
    }
    assert!(r.postings("job", "nope").unwrap().is_empty());
    assert!(r.postings("nope", "api").unwrap().is_empty());
    assert!(r.postings("job", "").unwrap().is_empty());
    assert!(r.label_values("nope").unwrap().is_empty());
}

#[test]
fn block_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(ulid::Ulid::from_parts(1, 7).to_string());
    let series = gen_series(3000, 5, 42);
    let meta = write_block(&dir, &series, None);
    assert_eq!(meta.stats.num_series, 3000);
    assert_eq!(
        meta.stats.num_chunks,
        series.values().map(|c| c.len() as u64).sum::<u64>()
    );
    assert_eq!(
        meta.stats.num_samples,
        series
            .values()
            .flatten()
            .map(|c| u64::from(c.4))
            .sum::<u64>()
    );
    let r = BlockReader::open(&dir).unwrap();
    assert_eq!(r.meta(), &meta);
    assert_eq!(r.dir(), dir);
    assert!(r.tombstones().is_empty());
    assert_eq!(r.num_segments(), 1);
    verify_block(&r, &series);

    // Label strings are shared between series through the symbol cache.
    let ids = r.all_postings().unwrap();
    let mut m = Vec::new();
    let a = r.series(ids[0], &mut m).unwrap();
    let b = r.series(ids[1], &mut m).unwrap();
    assert!(Arc::ptr_eq(&a.as_slice()[0].name, &b.as_slice()[0].name));
    assert!(r.series(u64::MAX, &mut m).is_err());
    assert!(r.series(ids[0] + 1, &mut m).is_err());
    assert!(r.chunk(0).is_err());
    assert!(r.chunk(5 << 32).is_err());

    // Send + Sync, shareable.
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    assert_send_sync(&Arc::new(r));
}

#[test]
fn block_multi_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let series = gen_series(400, 4, 7);
    write_block(&dir, &series, Some(2048));
    let r = BlockReader::open(&dir).unwrap();
    assert!(r.num_segments() > 10, "{} segments", r.num_segments());
    for i in 0..r.num_segments() {
        let len = fs::metadata(dir.join("chunks").join(format!("{:06}", i + 1)))
            .unwrap()
            .len();
        assert!(len <= 2048 + 200, "segment {i} has {len} bytes");
    }
    verify_block(&r, &series);
}

#[test]
fn block_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    let w = BlockWriter::create(&dir, ulid::Ulid::from_parts(2, 2), 0, 1).unwrap();
    let meta = w.finish(BlockCompaction::default()).unwrap();
    assert_eq!(meta.stats.num_series, 0);
    let r = BlockReader::open(&dir).unwrap();
    assert!(r.all_postings().unwrap().is_empty());
    assert!(r.label_names().unwrap().is_empty());
    assert!(r.postings("a", "b").unwrap().is_empty());
    assert_eq!(r.num_segments(), 0);
}

#[test]
fn writer_rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let mut w = BlockWriter::create(&dir, ulid::Ulid::from_parts(3, 3), 0, 100).unwrap();
    assert!(matches!(
        BlockWriter::create(&dir, ulid::Ulid::from_parts(3, 3), 0, 100),
        Err(Error::DirExists { .. })
    ));
    let c = |mint, maxt| ChunkInput {
        mint,
        maxt,
        encoding: 1,
        data: b"abc",
        num_samples: 3,
    };
    let b = Labels::from_pairs([("a", "2")]);
    w.add_series(&b, &[c(0, 10)]).unwrap();
    // Empty series are skipped, even out of order.
    w.add_series(&Labels::from_pairs([("a", "1")]), &[])
        .unwrap();
    assert!(matches!(
        w.add_series(&Labels::from_pairs([("a", "1")]), &[c(0, 1)]),
        Err(Error::SeriesOrder { .. })
    ));
    assert!(matches!(
        w.add_series(&b, &[c(0, 1)]),
        Err(Error::SeriesOrder { .. })
    ));
    let d = Labels::from_pairs([("a", "3")]);
    assert!(matches!(
        w.add_series(&d, &[c(5, 1)]),
        Err(Error::InvalidChunk { .. })
    ));
    assert!(matches!(
        w.add_series(&d, &[c(5, 6), c(1, 2)]),
        Err(Error::InvalidChunk { .. })
    ));
    w.add_series(&d, &[c(1, 2), c(1, 3)]).unwrap();
    let meta = w.finish(BlockCompaction::default()).unwrap();
    assert_eq!(meta.stats.num_series, 2);
    let r = BlockReader::open(&dir).unwrap();
    let mut m = Vec::new();
    let ids = r.all_postings().unwrap();
    assert_eq!(r.series(ids[1], &mut m).unwrap(), d);
    assert_eq!(m.len(), 2);
}

#[test]
fn extreme_times_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    let mut w =
        BlockWriter::create(&dir, ulid::Ulid::from_parts(3, 3), i64::MIN, i64::MAX).unwrap();
    let c = |mint, maxt| ChunkInput {
        mint,
        maxt,
        encoding: 1,
        data: b"",
        num_samples: 0,
    };
    let chunks = [
        c(i64::MIN, i64::MAX),
        c(i64::MIN + 5, -1),
        c(i64::MAX, i64::MAX),
    ];
    w.add_series(&Labels::empty(), &chunks).unwrap();
    w.finish(BlockCompaction::default()).unwrap();
    let r = BlockReader::open(&dir).unwrap();
    let mut m = Vec::new();
    assert_eq!(r.series(0, &mut m).unwrap(), Labels::empty());
    let got: Vec<(i64, i64)> = m.iter().map(|c| (c.mint, c.maxt)).collect();
    assert_eq!(
        got,
        vec![
            (i64::MIN, i64::MAX),
            (i64::MIN + 5, -1),
            (i64::MAX, i64::MAX)
        ]
    );
    assert_eq!(r.chunk(m[2].chunk_ref).unwrap(), (1, &b""[..]));
}

#[test]
fn block_tombstones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let series = gen_series(20, 2, 3);
    write_block(&dir, &series, None);
    let ids = BlockReader::open(&dir).unwrap().all_postings().unwrap();
    let mut t = Tombstones::new();
    t.add(ids[3], 10, 20);
    t.add(ids[3], 0, 5);
    t.add(ids[7], -5, 100);
    write_tombstones(&dir, &t).unwrap();
    let r = BlockReader::open(&dir).unwrap();
    assert_eq!(r.tombstones(), &t);
    assert_eq!(r.tombstones().get(ids[3]), &[(0, 5), (10, 20)]);
    drop(r);
    let mut raw = fs::read(dir.join(TOMBSTONES_FILENAME)).unwrap();
    raw[9] ^= 4;
    fs::write(dir.join(TOMBSTONES_FILENAME), &raw).unwrap();
    assert!(BlockReader::open(&dir).is_err());
}

/// Opens the block and reads everything; the first error, if any.
fn read_everything(dir: &Path) -> Result<()> {
    let r = BlockReader::open(dir)?;
    walk_reader(&r)
}

fn walk_reader(r: &BlockReader) -> Result<()> {
    let mut m = Vec::new();
    for id in r.index.all_postings()? {
        r.series(id, &mut m)?;
        for c in &m {
            r.chunk(c.chunk_ref)?;
        }
    }
    walk_index(&r.index)
}

/// Walks every label name, value and postings list of an index.
fn walk_index(ix: &IndexReader) -> Result<()> {
    let mut m = Vec::new();
    for id in ix.all_postings()? {
        ix.series(id, &mut m)?;
    }
    for n in ix.label_names() {
        let mut vals = Vec::new();
        ix.for_each_value(&n, "", &mut |v| {
            vals.push(v.to_string());
            true
        })?;
        for v in vals {
            for id in ix.postings(&n, &v)? {
                ix.series(id, &mut m)?;
            }
        }
    }
    Ok(())
}

fn small_block() -> (
    tempfile::TempDir,
    PathBuf,
    BTreeMap<Labels, Vec<OwnedChunk>>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let series = gen_series(40, 3, 11);
    write_block(&dir, &series, None);
    (tmp, dir, series)
}

#[test]
fn index_corruption_is_detected() {
    let (_tmp, dir, _) = small_block();
    let good = fs::read(dir.join(INDEX_FILENAME)).unwrap();
    let open = |b: Vec<u8>| -> Result<()> {
        let ix = IndexReader::from_backing(PathBuf::from("index"), Backing::Owned(b))?;
        walk_index(&ix)
    };
    open(good.clone()).unwrap();
    for i in 0..good.len() {
        for bit in [i % 8, (i + 3) % 8] {
            let mut b = good.clone();
            b[i] ^= 1 << bit;
            assert!(open(b).is_err(), "flip at {i} bit {bit} undetected");
        }
    }
    for n in 0..good.len() {
        assert!(open(good[..n].to_vec()).is_err(), "truncation at {n}");
    }
    // On disk, through BlockReader: a few flips and truncations.
    let path = dir.join(INDEX_FILENAME);
    for i in (0..good.len()).step_by(good.len() / 17) {
        let mut b = good.clone();
        b[i] ^= 0x10;
        fs::write(&path, &b).unwrap();
        let e = read_everything(&dir).unwrap_err();
        assert!(e.to_string().contains("index"), "{e}");
        fs::write(&path, &good[..i]).unwrap();
        assert!(read_everything(&dir).is_err());
    }
    fs::write(&path, &good).unwrap();
    read_everything(&dir).unwrap();
}

#[test]
fn segment_corruption_is_detected() {
    let (_tmp, dir, _) = small_block();
    let r = BlockReader::open(&dir).unwrap();
    let mut refs = Vec::new();
    let mut m = Vec::new();
    for id in r.all_postings().unwrap() {
        r.series(id, &mut m).unwrap();
        refs.extend(m.iter().map(|c| c.chunk_ref));
    }
    drop(r);
    let chunks_dir = dir.join(CHUNKS_DIRNAME);
    let read_all = || -> Result<()> {
        let s = Segments::open(&chunks_dir)?;
        for &r in &refs {
            s.chunk(r)?;
        }
        Ok(())
    };
    let path = chunks_dir.join("000001");
    let good = fs::read(&path).unwrap();
    read_all().unwrap();
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 1 << (i % 8);
        fs::write(&path, &b).unwrap();
        assert!(read_all().is_err(), "flip at {i} undetected");
    }
    for n in (0..good.len())
        .step_by(5)
        .chain(good.len() - 20..good.len())
    {
        fs::write(&path, &good[..n]).unwrap();
        assert!(read_all().is_err(), "truncation at {n} undetected");
    }
    // The same through the block reader, at a few offsets.
    for i in (0..good.len()).step_by(good.len() / 13) {
        let mut b = good.clone();
        b[i] ^= 0x40;
        fs::write(&path, &b).unwrap();
        let e = read_everything(&dir).unwrap_err();
        assert!(e.to_string().contains("000001"), "{e}");
    }
    fs::write(&path, &good).unwrap();
    read_everything(&dir).unwrap();
}

#[test]
fn meta_and_tombstone_files_corruption_on_open() {
    let (_tmp, dir, _) = small_block();
    let mpath = dir.join(META_FILENAME);
    let good = fs::read(&mpath).unwrap();
    for i in (0..good.len()).step_by(7) {
        fs::write(&mpath, &good[..i]).unwrap();
        assert!(BlockReader::open(&dir).is_err());
    }
    fs::write(&mpath, &good).unwrap();
    let mut t = Tombstones::new();
    t.add(0, 1, 2);
    write_tombstones(&dir, &t).unwrap();
    let tpath = dir.join(TOMBSTONES_FILENAME);
    let tgood = fs::read(&tpath).unwrap();
    for i in 0..tgood.len() {
        let mut b = tgood.clone();
        b[i] ^= 1 << (i % 8);
        fs::write(&tpath, &b).unwrap();
        assert!(BlockReader::open(&dir).is_err(), "tombstone flip {i}");
        fs::write(&tpath, &tgood[..i]).unwrap();
        assert!(BlockReader::open(&dir).is_err(), "tombstone truncation {i}");
    }
    fs::write(&tpath, &tgood).unwrap();
    read_everything(&dir).unwrap();
}

/// Recomputes every CRC of an index (best effort) so that mutated bytes
/// reach the decoders behind the checksums.
fn refix_crcs(b: &mut [u8]) {
    if b.len() < 8 + TOC_LEN {
        return;
    }
    let toc = b.len() - TOC_LEN;
    let mut d = Dec::new(&b[toc..], 0);
    let mut secs = Vec::new();
    for _ in 0..4 {
        let (Ok(o), Ok(l)) = (d.be_u64(), d.be_u64()) else {
            return;
        };
        let (o, l) = (o as usize, l as usize);
        if o.checked_add(l).is_none_or(|e| e > toc) {
            return;
        }
        secs.push(o..o + l);
    }
    let fix_section = |b: &mut [u8], r: &std::ops::Range<usize>| {
        if r.len() >= 4 {
            let c = crc32c::crc32c(&b[r.start..r.end - 4]);
            b[r.end - 4..r.end].copy_from_slice(&c.to_be_bytes());
        }
    };
    let fix_entries = |b: &mut [u8], r: &std::ops::Range<usize>| {
        let mut at = r.start;
        while at < r.end {
            let mut d = Dec::new(&b[at..r.end], 0);
            let Ok(n) = d.uvarint() else { return };
            let body = at + (d.offset() as usize);
            let Some(end) = body.checked_add(n as usize).filter(|e| e + 4 <= r.end) else {
                return;
            };
            let c = crc32c::crc32c(&b[body..end]);
            b[end..end + 4].copy_from_slice(&c.to_be_bytes());
            at = end + 4;
        }
    };
    fix_section(b, &secs[0]);
    fix_entries(b, &secs[1]);
    fix_entries(b, &secs[2]);
    fix_section(b, &secs[3]);
    let c = crc32c::crc32c(&b[toc..b.len() - 4]);
    let l = b.len();
    b[l - 4..].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn fuzz_block_index_no_panics() {
    let (_tmp, dir, _) = small_block();
    let good = fs::read(dir.join(INDEX_FILENAME)).unwrap();
    // The CRC fixer itself leaves a valid index valid.
    let mut same = good.clone();
    refix_crcs(&mut same);
    assert_eq!(same, good);
    let mut rng = Rng(0x1234_5678);
    // Random inputs, some with a valid header.
    for i in 0..2000 {
        let len = rng.below(400) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && b.len() >= 8 {
            b[..8].copy_from_slice(&good[..8]);
        }
        fuzz_block_index(&b);
    }
    // Mutations of a valid index, with and without fixed-up checksums.
    let mut deep_ok = 0;
    let mut both_ok = 0;
    for i in 0..4000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(6) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.next() as u8,
                2 => b[at] = [0, 0x7f, 0x80, 0xff][rng.below(4) as usize],
                3 => {
                    b.insert(at, rng.next() as u8);
                }
                4 => {
                    b.remove(at);
                }
                _ => b.truncate(at.max(1)),
            }
        }
        if i % 2 == 0 {
            refix_crcs(&mut b);
            let ix = IndexReader::from_backing(PathBuf::from("f"), Backing::Owned(b.clone()));
            if ix.is_ok_and(|ix| walk_index(&ix).is_ok()) {
                deep_ok += 1;
            }
            // Through an index header: where both readers answer, they
            // answer the same.
            let full = IndexReader::from_backing(PathBuf::from("f"), Backing::Owned(b.clone()))
                .and_then(|ix| collect_all(&ix));
            let hdr = index_header::header_of(Path::new("f"), &b).map(|h| {
                let remote = MemIndex::new(b.clone(), None);
                IndexReader::from_header_bytes(PathBuf::from("h"), h, remote)
                    .and_then(|ix| collect_all(&ix))
            });
            if let (Ok(f), Some(Ok(h))) = (full, hdr) {
                assert_eq!(f, h, "mutation {i}");
                both_ok += 1;
            }
        }
        fuzz_block_index(&b);
    }
    // Some checksum-fixed mutations decode fine (e.g. a changed chunk
    // time); the rest are errors, and none panicked.
    eprintln!(
        "checksum-fixed mutations that still decode: {deep_ok} of 2000, \
         {both_ok} through both the index and its header"
    );
    assert!(both_ok > 0);
    assert!(deep_ok < 2000);
}

#[test]
fn index_size_per_series() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, chunks) in [(10_000usize, 1u64), (10_000, 4)] {
        let dir = tmp.path().join(format!("s{n}-{chunks}"));
        let series = gen_series(n, chunks, 99);
        let nchunks: usize = series.values().map(Vec::len).sum();
        let labels: usize = series.keys().map(Labels::len).sum();
        write_block(&dir, &series, None);
        let r = BlockReader::open(&dir).unwrap();
        let size = r.index_size();
        eprintln!(
            "index: {n} series, {:.1} labels/series, {:.2} chunks/series: {size} bytes, {:.1} bytes/series",
            labels as f64 / n as f64,
            nchunks as f64 / n as f64,
            size as f64 / n as f64
        );
        assert!(size as f64 / (n as f64) < 200.0);
    }
}

#[test]
fn tombstone_file_framing() {
    // A valid empty file is header + count 0 + CRC.
    let b = Tombstones::new().encode();
    let mut want = TOMBSTONES_MAGIC.to_be_bytes().to_vec();
    want.extend_from_slice(&[1, 0, 0, 0, 0]);
    put_be32(&mut want, crc32c::crc32c(&[0]));
    assert_eq!(b, want);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Arbitrary (unicode) label sets and chunk times round-trip.
        #[test]
        fn arbitrary_blocks_round_trip(
            sets in proptest::collection::vec(
                proptest::collection::vec(("[a-c_]{0,3}|\\PC{0,4}", "\\PC{1,5}"), 0..4),
                1..30,
            ),
            times in proptest::collection::vec((any::<i64>(), 0u64..1 << 40), 1..4),
        ) {
            let mut series: BTreeMap<Labels, Vec<OwnedChunk>> = BTreeMap::new();
            for set in sets {
                let labels = Labels::from_pairs(set);
                let mut chunks: Vec<OwnedChunk> = times
                    .iter()
                    .map(|&(t, d)| (t, t.saturating_add(d as i64), 1, t.to_be_bytes().to_vec(), 1))
                    .collect();
                chunks.sort_by_key(|c| c.0);
                series.insert(labels, chunks);
            }
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("p");
            write_block(&dir, &series, Some(256));
            let r = BlockReader::open(&dir).unwrap();
            verify_block(&r, &series);
        }

        /// `Tombstones::add` matches a brute-force model of deleted points.
        #[test]
        fn tombstones_match_model(ivs in proptest::collection::vec((0u64..3, -20i64..20, 0i64..8), 0..20)) {
            let mut t = Tombstones::new();
            let mut model = BTreeSet::new();
            for &(id, a, len) in &ivs {
                t.add(id, a, a + len);
                for x in a..=a + len {
                    model.insert((id, x));
                }
            }
            let mut got = BTreeSet::new();
            for (id, list) in t.iter() {
                prop_assert!(!list.is_empty());
                for w in list.windows(2) {
                    prop_assert!(w[0].1 + 1 < w[1].0, "not merged: {:?}", list);
                }
                for &(a, b) in list {
                    for x in a..=b {
                        got.insert((id, x));
                    }
                }
            }
            prop_assert_eq!(got, model);
            let back = Tombstones::decode(Path::new("t"), &t.encode()).unwrap();
            prop_assert_eq!(back, t);
        }
    }
}

/// A block's index served from memory as a [`RemoteIndex`], counting
/// reads; `damage` flips a byte of every answer at that offset.
#[derive(Debug)]
struct MemIndex {
    data: Vec<u8>,
    name: PathBuf,
    reads: std::sync::atomic::AtomicU64,
    cache: parking_lot::Mutex<std::collections::HashMap<u64, Arc<[u8]>>>,
    damage: Option<u64>,
}

impl MemIndex {
    fn new(data: Vec<u8>, damage: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            data,
            name: PathBuf::from("mem/index"),
            reads: Default::default(),
            cache: Default::default(),
            damage,
        })
    }
    fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl RemoteIndex for MemIndex {
    fn read(&self, ranges: &[std::ops::Range<u64>]) -> crate::Result<Vec<bytes::Bytes>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ranges
            .iter()
            .map(|r| {
                let mut b = self
                    .data
                    .get(r.start as usize..r.end as usize)
                    .ok_or_else(|| crate::Error::Remote {
                        message: "out of range".into(),
                    })?
                    .to_vec();
                if let Some(d) = self.damage.filter(|d| r.contains(d)) {
                    b[(d - r.start) as usize] ^= 0x40;
                }
                Ok(bytes::Bytes::from(b))
            })
            .collect()
    }
    fn cached(&self, at: u64) -> Option<Arc<[u8]>> {
        self.cache.lock().get(&at).cloned()
    }
    fn cache(&self, at: u64, body: Arc<[u8]>) {
        self.cache.lock().insert(at, body);
    }
    fn name(&self) -> &Path {
        &self.name
    }
}

/// Builds `dir/index-header` from `dir/index` as a store does.
fn build_header_file(dir: &Path) -> Vec<u8> {
    let index = std::fs::read(dir.join(INDEX_FILENAME)).unwrap();
    let len = index.len() as u64;
    let name = Path::new("mem/index");
    let toc_r = toc_range(name, len).unwrap();
    let toc = &index[toc_r.start as usize..toc_r.end as usize];
    let p = index_header_plan(name, toc, len).unwrap();
    let slice = |r: std::ops::Range<u64>| &index[r.start as usize..r.end as usize];
    write_header(
        &dir.join(INDEX_HEADER_FILENAME),
        len,
        toc,
        slice(p.head_and_symbols),
        slice(p.labels),
    )
    .unwrap();
    index
}

#[test]
fn index_header_answers_like_the_whole_index() {
    use stratus_model::{MatchType, Matcher};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let series = gen_series(3000, 3, 11);
    write_block(&dir, &series, None);
    let index = build_header_file(&dir);
    let header_len = std::fs::metadata(dir.join(INDEX_HEADER_FILENAME))
        .unwrap()
        .len();
    assert!(
        header_len * 3 < index.len() as u64,
        "{header_len} vs {}",
        index.len()
    );
    let full = IndexReader::open(&dir.join(INDEX_FILENAME)).unwrap();
    let remote = MemIndex::new(index.clone(), None);
    let hdr = IndexReader::open_header(&dir.join(INDEX_HEADER_FILENAME), remote.clone()).unwrap();

    assert_eq!(hdr.label_names(), full.label_names());
    let all = full.all_postings().unwrap();
    assert_eq!(hdr.all_postings().unwrap(), all);
    // Every series, in one batch: one read (the entries are contiguous,
    // so everything coalesces; the remote sees one call).
    let before = remote.reads();
    let mut got = Vec::new();
    hdr.for_each_series(&all, |id, l, m| {
        got.push((id, l, m.to_vec()));
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(remote.reads() - before <= 2, "{}", remote.reads() - before);
    let mut metas = Vec::new();
    for (id, l, m) in &got {
        assert_eq!(&full.series(*id, &mut metas).unwrap(), l);
        assert_eq!(&metas, m);
    }
    assert_eq!(got.len(), series.len());
    // Cached now: no more reads.
    let before = remote.reads();
    for id in all.iter().step_by(97) {
        hdr.series(*id, &mut metas).unwrap();
    }
    assert_eq!(remote.reads(), before);
    // Every pair's postings, singly and batched per name.
    for name in full.label_names() {
        let mut values = Vec::new();
        full.for_each_value(&name, "", &mut |v| {
            values.push(v.to_string());
            true
        })
        .unwrap();
        let mut hv = Vec::new();
        hdr.for_each_value(&name, "", &mut |v| {
            hv.push(v.to_string());
            true
        })
        .unwrap();
        assert_eq!(hv, values);
        let refs: Vec<&str> = values
            .iter()
            .map(String::as_str)
            .chain(["zz-none"])
            .collect();
        let want = full.postings_many(&name, &refs).unwrap();
        assert_eq!(hdr.postings_many(&name, &refs).unwrap(), want, "{name}");
        for (v, w) in refs.iter().zip(&want).step_by(7) {
            assert_eq!(&hdr.postings(&name, v).unwrap(), w);
        }
    }
    assert!(hdr.postings("nope", "x").unwrap().is_empty());
    // Matchers of all four types through the selection code.
    let src_full = BlockReader::open(&dir).unwrap();
    let src_hdr =
        BlockReader::open_with_header(&dir, MemIndex::new(index.clone(), None), Arc::new(NoChunks))
            .unwrap();
    let m = |t, n: &str, v: &str| Matcher::new(t, n, v).unwrap();
    use MatchType::*;
    let sets = [
        vec![m(Equal, "job", "api")],
        vec![m(Equal, "job", "api"), m(NotEqual, "code", "200")],
        vec![m(RegexMatch, "pod", "app-1.*")],
        vec![
            m(RegexMatch, "__name__", "http.+|up"),
            m(RegexNoMatch, "namespace", "kube.*|auth"),
        ],
        vec![m(NotEqual, "namespace", "default")],
        vec![
            m(RegexMatch, "instance", "10\\.1\\.[0-2]\\..*"),
            m(Equal, "le", ""),
        ],
        vec![m(RegexNoMatch, "job", "api|node")],
        vec![m(Equal, "job", "nope")],
        vec![m(RegexMatch, "cpu", "1|3|5"), m(Equal, "mode", "idle")],
    ];
    for ms in &sets {
        let want = crate::index::select_postings(&src_full, ms).unwrap();
        assert_eq!(
            crate::index::select_postings(&src_hdr, ms).unwrap(),
            want,
            "{ms:?}"
        );
    }
}

/// A chunk source for index-only tests.
#[derive(Debug)]
struct NoChunks;

impl RemoteChunks for NoChunks {
    fn fetch(&self, _: &[u64]) -> crate::Result<Vec<(u8, Arc<[u8]>)>> {
        Err(crate::Error::Remote {
            message: "no chunks".into(),
        })
    }
    fn num_segments(&self) -> usize {
        0
    }
}

#[test]
fn damaged_index_headers_and_remote_entries_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let series = gen_series(200, 2, 5);
    write_block(&dir, &series, None);
    let index = build_header_file(&dir);
    let path = dir.join(INDEX_HEADER_FILENAME);
    let good = std::fs::read(&path).unwrap();
    let remote = MemIndex::new(index.clone(), None);
    // Every flipped byte and every truncation is caught at open.
    for i in (0..good.len())
        .step_by(good.len() / 200 + 1)
        .chain([good.len() - 1])
    {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            IndexReader::open_header(&path, remote.clone()).is_err(),
            "byte {i}"
        );
    }
    for n in [0, 10, 95, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..n]).unwrap();
        let e = IndexReader::open_header(&path, remote.clone()).unwrap_err();
        assert!(e.to_string().contains("index-header"), "{e}");
    }
    std::fs::write(&path, &good).unwrap();
    let hdr = IndexReader::open_header(&path, remote).unwrap();
    let all = hdr.all_postings().unwrap();
    assert_eq!(all.len(), 200);
    // Damaged series and postings bytes in the bucket: CRC errors naming
    // the remote object, never a panic.
    let full = IndexReader::open(&dir.join(INDEX_FILENAME)).unwrap();
    for at in [
        full.series_section().start as u64 + all[5] + 3,
        full.postings_section().start as u64 + 2,
    ] {
        let bad = MemIndex::new(index.clone(), Some(at));
        let h = IndexReader::open_header(&path, bad).unwrap();
        let r1 = h.for_each_series(&all, |_, _, _| Ok::<_, Error>(()));
        let r2 = h.all_postings();
        let e = r1.err().or(r2.err()).expect("damage noticed");
        assert!(e.to_string().contains("mem/index"), "{e}");
    }
    // Out of range ids and a remote that fails.
    let h = IndexReader::open_header(&path, MemIndex::new(vec![], None)).unwrap();
    assert!(h.series(u64::MAX, &mut Vec::new()).is_err());
    let e = h.all_postings().unwrap_err().to_string();
    assert!(e.contains("reading from the bucket"), "{e}");
}

type Everything = (
    Vec<u64>,
    Vec<(String, Vec<String>, Vec<Vec<u64>>)>,
    Vec<(Labels, Vec<ChunkMeta>)>,
);

/// Everything an index answers: all postings, per name its values and
/// their postings, every series.
fn collect_all(ix: &IndexReader) -> Result<Everything> {
    let all = ix.all_postings()?;
    let mut per_name = Vec::new();
    for name in ix.label_names() {
        let mut values = Vec::new();
        ix.for_each_value(&name, "", &mut |v| {
            values.push(v.to_string());
            true
        })?;
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let lists = ix.postings_many(&name, &refs)?;
        per_name.push((name, values, lists));
    }
    let mut series = Vec::new();
    ix.for_each_series(&all, |_, l, m| {
        series.push((l, m.to_vec()));
        Ok::<_, Error>(())
    })?;
    Ok((all, per_name, series))
}
