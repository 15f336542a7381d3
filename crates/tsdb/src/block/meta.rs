//! `meta.json`: the block's identity, time range, statistics and
//! compaction lineage (format in `docs/format/meta.md`).
//!
//! The JSON uses Prometheus' field names so Prometheus-ecosystem tools can
//! read it. Parents are written as `{"ulid": ...}` objects, the shape
//! Prometheus uses for `parents`. Because JSON has no checksum of its own,
//! we add one under the extra key `"stratus": {"crc32c": N}`: the CRC-32C of
//! the canonical compact serialization of all other fields. A reader
//! re-serializes what it parsed and compares, so any bit flip that changes
//! a value is caught. The file is written to `meta.json.tmp`, fsynced,
//! renamed over `meta.json`, and the directory fsynced.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::error::{
    CreateFileSnafu, Error, MetaInvalidSnafu, MetaJsonSnafu, ReadSnafu, RenameSnafu, Result,
    SyncSnafu, WriteSnafu,
};
use super::fsync_dir;

/// Name of the meta file inside a block directory.
pub const META_FILENAME: &str = "meta.json";

/// The only `meta.json` version written and read.
pub const META_VERSION: u32 = 1;

/// Block statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockStats {
    pub num_samples: u64,
    pub num_series: u64,
    pub num_chunks: u64,
    pub num_tombstones: u64,
    /// Bytes of the chunk segments plus the index.
    pub num_bytes: u64,
}

/// Compaction lineage of a block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockCompaction {
    /// 1 for a block cut from the head; a merge is one more than its
    /// highest input.
    pub level: u32,
    /// The level-1 blocks whose data this block holds.
    pub sources: Vec<ulid::Ulid>,
    /// The blocks merged to produce this one.
    pub parents: Vec<ulid::Ulid>,
    /// Marked for deletion (e.g. compacted into another block).
    pub deletable: bool,
}

/// The content of `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    pub ulid: ulid::Ulid,
    /// Inclusive lower bound of the sample timestamps (ms).
    pub min_time: i64,
    /// Exclusive upper bound of the sample timestamps (ms).
    pub max_time: i64,
    pub stats: BlockStats,
    pub compaction: BlockCompaction,
    pub version: u32,
    /// Who wrote the block (Thanos/Mimir's `thanos` section): `None` for a
    /// single-node block, the ingester's id for a block an ingester
    /// shipped to a shared bucket, `source: "compactor"` for a compactor's
    /// output.
    pub thanos: Option<ThanosMeta>,
}

/// The `thanos` section of `meta.json` (the shape Thanos and Mimir use):
/// external labels of the uploader and what produced the block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ThanosMeta {
    /// Labels of the uploader (Stratus writes `__ingester_id__` for
    /// ingester uploads).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// What produced the block: `ingester` or `compactor`.
    #[serde(default)]
    pub source: String,
}

/// The `thanos.labels` key naming the ingester that uploaded a block.
pub const INGESTER_ID_LABEL: &str = "__ingester_id__";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsJson {
    num_samples: u64,
    num_series: u64,
    num_chunks: u64,
    num_tombstones: u64,
    num_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct ParentJson {
    ulid: String,
}

#[derive(Serialize, Deserialize)]
struct CompactionJson {
    level: u32,
    sources: Vec<String>,
    parents: Vec<ParentJson>,
    deletable: bool,
}

#[derive(Serialize, Deserialize)]
struct ExtJson {
    crc32c: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaJson {
    ulid: String,
    min_time: i64,
    max_time: i64,
    stats: StatsJson,
    compaction: CompactionJson,
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thanos: Option<ThanosMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stratus: Option<ExtJson>,
}

impl BlockMeta {
    fn to_json(&self) -> MetaJson {
        MetaJson {
            ulid: self.ulid.to_string(),
            min_time: self.min_time,
            max_time: self.max_time,
            stats: StatsJson {
                num_samples: self.stats.num_samples,
                num_series: self.stats.num_series,
                num_chunks: self.stats.num_chunks,
                num_tombstones: self.stats.num_tombstones,
                num_bytes: self.stats.num_bytes,
            },
            compaction: CompactionJson {
                level: self.compaction.level,
                sources: self
                    .compaction
                    .sources
                    .iter()
                    .map(|u| u.to_string())
                    .collect(),
                parents: self
                    .compaction
                    .parents
                    .iter()
                    .map(|u| ParentJson {
                        ulid: u.to_string(),
                    })
                    .collect(),
                deletable: self.compaction.deletable,
            },
            version: self.version,
            thanos: self.thanos.clone(),
            stratus: None,
        }
    }

    /// Serializes to the bytes of `meta.json` (pretty JSON with checksum).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut j = self.to_json();
        // Serializing plain structs of strings and integers cannot fail.
        let canonical = serde_json::to_vec(&j).unwrap_or_default();
        j.stratus = Some(ExtJson {
            crc32c: crc32c::crc32c(&canonical),
        });
        let mut out = serde_json::to_vec_pretty(&j).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses and validates the bytes of `meta.json`; `path` is for errors.
    pub(crate) fn from_bytes(path: &Path, data: &[u8]) -> Result<Self> {
        let mut j: MetaJson = serde_json::from_slice(data).context(MetaJsonSnafu { path })?;
        let invalid = |reason: String| MetaInvalidSnafu { path, reason }.fail();
        let Some(ext) = j.stratus.take() else {
            return invalid("missing \"stratus\" checksum".into());
        };
        let canonical = serde_json::to_vec(&j).unwrap_or_default();
        let computed = crc32c::crc32c(&canonical);
        if computed != ext.crc32c {
            return invalid(format!(
                "checksum mismatch: stored {:#010x}, computed {computed:#010x}",
                ext.crc32c
            ));
        }
        if j.version != META_VERSION {
            return invalid(format!("unsupported version {}", j.version));
        }
        if j.min_time > j.max_time {
            return invalid(format!(
                "minTime {} after maxTime {}",
                j.min_time, j.max_time
            ));
        }
        let parse =
            |s: &str| ulid::Ulid::from_string(s).map_err(|e| format!("bad ULID {s:?}: {e}"));
        let ulid = match parse(&j.ulid) {
            Ok(u) => u,
            Err(e) => return invalid(e),
        };
        let mut sources = Vec::with_capacity(j.compaction.sources.len());
        for s in &j.compaction.sources {
            match parse(s) {
                Ok(u) => sources.push(u),
                Err(e) => return invalid(e),
            }
        }
        let mut parents = Vec::with_capacity(j.compaction.parents.len());
        for p in &j.compaction.parents {
            match parse(&p.ulid) {
                Ok(u) => parents.push(u),
                Err(e) => return invalid(e),
            }
        }
        Ok(Self {
            ulid,
            min_time: j.min_time,
            max_time: j.max_time,
            stats: BlockStats {
                num_samples: j.stats.num_samples,
                num_series: j.stats.num_series,
                num_chunks: j.stats.num_chunks,
                num_tombstones: j.stats.num_tombstones,
                num_bytes: j.stats.num_bytes,
            },
            compaction: BlockCompaction {
                level: j.compaction.level,
                sources,
                parents,
                deletable: j.compaction.deletable,
            },
            version: j.version,
            thanos: j.thanos,
        })
    }

    /// Reads and validates `dir/meta.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILENAME);
        let data = fs::read(&path).context(ReadSnafu { path: &path })?;
        Self::from_bytes(&path, &data)
    }

    /// Atomically writes `dir/meta.json`: write a temporary file, fsync it,
    /// rename it into place, fsync the directory.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILENAME);
        write_atomic(dir, &path, &self.to_bytes())
    }
}

/// Writes `data` to `path` through `path.tmp` + fsync + rename + fsync of
/// `dir`.
pub(crate) fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp).context(CreateFileSnafu { path: &tmp })?;
    f.write_all(data).context(WriteSnafu { path: &tmp })?;
    f.sync_all().context(SyncSnafu { path: &tmp })?;
    drop(f);
    fs::rename(&tmp, path).context(RenameSnafu { path })?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlockMeta {
        BlockMeta {
            ulid: ulid::Ulid::from_parts(1_700_000_000_000, 42),
            min_time: 1000,
            max_time: 7_201_000,
            stats: BlockStats {
                num_samples: 1234,
                num_series: 12,
                num_chunks: 24,
                num_tombstones: 0,
                num_bytes: 4096,
            },
            compaction: BlockCompaction {
                level: 2,
                sources: vec![ulid::Ulid::from_parts(1, 1), ulid::Ulid::from_parts(2, 2)],
                parents: vec![ulid::Ulid::from_parts(3, 3)],
                deletable: false,
            },
            version: META_VERSION,
            thanos: None,
        }
    }

    #[test]
    fn meta_round_trip_and_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        assert_eq!(BlockMeta::read(dir.path()).unwrap(), m);
        let raw = fs::read_to_string(dir.path().join(META_FILENAME)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["ulid"], m.ulid.to_string());
        assert_eq!(v["minTime"], 1000);
        assert_eq!(v["maxTime"], 7_201_000);
        assert_eq!(v["version"], 1);
        for k in [
            "numSamples",
            "numSeries",
            "numChunks",
            "numTombstones",
            "numBytes",
        ] {
            assert!(v["stats"][k].is_u64(), "{k}");
        }
        assert_eq!(v["stats"]["numSamples"], 1234);
        assert_eq!(v["compaction"]["level"], 2);
        assert_eq!(
            v["compaction"]["sources"][1],
            m.compaction.sources[1].to_string()
        );
        assert_eq!(
            v["compaction"]["parents"][0]["ulid"],
            m.compaction.parents[0].to_string()
        );
        assert_eq!(v["compaction"]["deletable"], false);
        assert!(!dir.path().join("meta.json.tmp").exists());
    }

    #[test]
    fn meta_corruption_is_detected() {
        let m = sample();
        let good = m.to_bytes();
        let p = Path::new("meta.json");
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                match BlockMeta::from_bytes(p, &b) {
                    Err(_) => {}
                    // A flip may only survive when it does not change the
                    // meaning (e.g. the case of a ULID letter).
                    Ok(got) => assert_eq!(got, m, "flip at {i} bit {bit} changed the meta"),
                }
            }
        }
        for n in 0..good.len() - 1 {
            assert!(
                BlockMeta::from_bytes(p, &good[..n]).is_err(),
                "truncated at {n}"
            );
        }
    }
}
