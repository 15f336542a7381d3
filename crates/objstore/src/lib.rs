//! Object-store access for Stratus.
//!
//! Blocks live in an object store (the `object_store` crate): the local
//! filesystem by default, in memory for tests, S3-compatible storage in a
//! cluster. This crate wraps a store in a [`Bucket`] with a key prefix (one
//! per tenant) and the few operations the storage engine needs: upload and
//! download of whole block directories (streamed, so multi-GiB files never
//! sit in memory), listing "directories", and deleting a prefix.
//!
//! When the backend is the local filesystem, [`Bucket::local_path`] tells
//! where an object lives on disk so that readers can memory-map it in place
//! instead of keeping a second, cached copy.
//!
//! [`Bucket::s3`] opens an S3-compatible bucket from an [`S3Config`]
//! (module `s3`).

mod s3;

pub use s3::{BucketLookup, REDACTED, S3Config, Secret, StorageBackend};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use snafu::{ResultExt, Snafu};
use tokio::io::AsyncReadExt;

/// Errors of object-store access.
#[derive(Debug, Snafu)]
pub enum Error {
    #[snafu(display("object store {op} {key}: {source}"))]
    Store {
        op: &'static str,
        key: String,
        source: object_store::Error,
    },
    #[snafu(display("local file {}: {source}", path.display()))]
    LocalIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[snafu(display("invalid S3 settings: {message}"))]
    S3Config { message: String },
    #[snafu(display("object store {location} is not usable: {source}"))]
    Unusable {
        location: String,
        source: object_store::Error,
    },
    #[snafu(display("invalid object key {key:?}: {source}"))]
    Key {
        key: String,
        source: object_store::path::Error,
    },
}

impl Error {
    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Part size for streamed uploads.
const UPLOAD_PART: usize = 8 << 20;

/// A handle to a prefix of an object store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// Root directory when the backend is the local filesystem.
    local_root: Option<PathBuf>,
    /// Key prefix without trailing slash ("" for the root).
    prefix: String,
    /// What the store is, for messages (`s3://bucket at endpoint`, a
    /// directory, `memory`); never holds a credential.
    location: String,
}

impl Bucket {
    /// A bucket on the local filesystem rooted at `root` (created if absent).
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).context(LocalIoSnafu { path: root })?;
        let root = root.canonicalize().context(LocalIoSnafu { path: root })?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .context(StoreSnafu {
                op: "open",
                key: root.display().to_string(),
            })?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(fs),
            location: root.display().to_string(),
            local_root: Some(root),
            prefix: String::new(),
        })
    }

    /// An in-memory bucket (tests).
    pub fn memory() -> Self {
        let mut b = Self::from_store(Arc::new(InMemory::new()));
        b.location = "memory".to_string();
        b
    }

    /// Wraps any object store (S3, GCS, Azure...).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            prefix: String::new(),
            location: "object store".to_string(),
        }
    }

    /// The same store under `prefix/` (e.g. one tenant's blocks).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = match (self.prefix.is_empty(), prefix.is_empty()) {
            (_, true) => self.prefix.clone(),
            (true, false) => prefix.to_string(),
            (false, false) => format!("{}/{}", self.prefix, prefix),
        };
        Self {
            store: self.store.clone(),
            local_root: self.local_root.clone(),
            prefix,
            location: self.location.clone(),
        }
    }

    /// What the store is (`s3://bucket/prefix at endpoint`, a local
    /// directory, `memory`), for messages; holds no credential.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Makes one listing request under this bucket's prefix, so a wrong
    /// endpoint, bucket or credential is reported at startup with
    /// context instead of at the first block upload.
    pub async fn check(&self) -> Result<()> {
        let base = self.full("")?;
        let base = (!base.as_ref().is_empty()).then_some(base);
        self.store
            .list_with_delimiter(base.as_ref())
            .await
            .context(UnusableSnafu {
                location: self.location.clone(),
            })?;
        Ok(())
    }

    /// The full key of `key` under this bucket's prefix.
    fn full(&self, key: &str) -> Result<ObjPath> {
        let key = key.trim_matches('/');
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, key),
        };
        ObjPath::parse(&full).context(KeySnafu { key: full })
    }

    /// Where `key` lives on disk, when the backend is the local filesystem.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        let mut p = root.clone();
        for part in self.prefix.split('/').chain(key.split('/')) {
            if !part.is_empty() {
                p.push(part);
            }
        }
        Some(p)
    }

    /// Whether the backend is the local filesystem.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Stores `data` at `key` (atomically).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let p = self.full(key)?;
        self.store
            .put(&p, PutPayload::from(data))
            .await
            .context(StoreSnafu { op: "put", key })?;
        Ok(())
    }

    /// Reads the whole object at `key`; `Ok(None)` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let p = self.full(key)?;
        match self.store.get(&p).await {
            Ok(r) => Ok(Some(
                r.bytes().await.context(StoreSnafu { op: "get", key })?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Store {
                op: "get",
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Reads bytes `range` of the object at `key` (one ranged GET). A
    /// missing object is an error; a range past the object's end is an
    /// error (the caller knows the object's size from a listing).
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let p = self.full(key)?;
        self.store.get_range(&p, range).await.context(StoreSnafu {
            op: "get range",
            key,
        })
    }

    /// Reads several byte ranges of the object at `key`, as given (no
    /// merging: the caller coalesces), at most `concurrency` GETs in
    /// flight; the answers are in the order of `ranges`.
    pub async fn get_ranges(
        &self,
        key: &str,
        ranges: &[std::ops::Range<u64>],
        concurrency: usize,
    ) -> Result<Vec<Bytes>> {
        use futures::StreamExt;
        futures::stream::iter(ranges.iter().cloned())
            .map(|r| self.get_range(key, r))
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }

    /// Downloads the object at `key` into the local file `path` (streamed,
    /// fsynced). `Ok(false)` when the object does not exist (no file is
    /// created then).
    pub async fn download_file(&self, key: &str, path: &Path) -> Result<bool> {
        let p = self.full(key)?;
        let got = match self.store.get(&p).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(source) => {
                return Err(Error::Store {
                    op: "get",
                    key: key.to_string(),
                    source,
                });
            }
        };
        let mut stream = got.into_stream();
        let mut f = tokio::fs::File::create(path)
            .await
            .context(LocalIoSnafu { path })?;
        while let Some(chunk) = stream
            .try_next()
            .await
            .context(StoreSnafu { op: "get", key })?
        {
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                .await
                .context(LocalIoSnafu { path })?;
        }
        f.sync_all().await.context(LocalIoSnafu { path })?;
        Ok(true)
    }

    /// Uploads a local file to `key`, streaming it in parts.
    pub async fn upload_file(&self, key: &str, file: &Path) -> Result<()> {
        let p = self.full(key)?;
        let mut f = tokio::fs::File::open(file)
            .await
            .context(LocalIoSnafu { path: file })?;
        let upload = self
            .store
            .put_multipart(&p)
            .await
            .context(StoreSnafu { op: "put", key })?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .context(LocalIoSnafu { path: file })?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4)
                .await
                .context(StoreSnafu { op: "put", key })?;
            w.write(&buf[..n]);
        }
        w.finish().await.context(StoreSnafu { op: "put", key })?;
        Ok(())
    }

    /// Uploads every file under local `dir` to `prefix/<relative path>`.
    /// Files whose relative path is in `last` are uploaded after all
    /// others, in that order (e.g. `meta.json`, which marks a complete block).
    pub async fn upload_dir(&self, prefix: &str, dir: &Path, last: &[&str]) -> Result<()> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        files.sort();
        let (late, early): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|rel| last.contains(&rel.as_str()));
        for rel in early.iter().chain(
            last.iter()
                .filter_map(|l| late.iter().find(|r| r.as_str() == *l)),
        ) {
            self.upload_file(&format!("{prefix}/{rel}"), &dir.join(rel))
                .await?;
        }
        Ok(())
    }

    /// Uploads every file under local `dir` to `prefix/<relative path>`
    /// except those whose relative path is in `except` (the caller
    /// uploads them itself, later).
    pub async fn upload_dir_except(&self, prefix: &str, dir: &Path, except: &[&str]) -> Result<()> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        files.sort();
        for rel in files.iter().filter(|r| !except.contains(&r.as_str())) {
            self.upload_file(&format!("{prefix}/{rel}"), &dir.join(rel))
                .await?;
        }
        Ok(())
    }

    /// Downloads every object under `prefix/` into local `dir` (streamed).
    pub async fn download_dir(&self, prefix: &str, dir: &Path) -> Result<()> {
        let base = self.full(prefix)?;
        let objects: Vec<_> =
            self.store
                .list(Some(&base))
                .try_collect()
                .await
                .context(StoreSnafu {
                    op: "list",
                    key: prefix,
                })?;
        for o in objects {
            let rel: Vec<String> = o
                .location
                .prefix_match(&base)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
                .unwrap_or_default();
            if rel.is_empty() {
                continue;
            }
            let mut path = dir.to_path_buf();
            for part in &rel {
                path.push(part);
            }
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .context(LocalIoSnafu { path: parent })?;
            }
            let key = o.location.to_string();
            let got = self.store.get(&o.location).await.context(StoreSnafu {
                op: "get",
                key: &key,
            })?;
            let mut stream = got.into_stream();
            let mut f = tokio::fs::File::create(&path)
                .await
                .context(LocalIoSnafu { path: &path })?;
            while let Some(chunk) = stream.try_next().await.context(StoreSnafu {
                op: "get",
                key: &key,
            })? {
                tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                    .await
                    .context(LocalIoSnafu { path: &path })?;
            }
            f.sync_all().await.context(LocalIoSnafu { path: &path })?;
        }
        Ok(())
    }

    /// One delimited listing of the level directly under `prefix`.
    async fn list_level(&self, prefix: &str) -> Result<object_store::ListResult> {
        let base = self.full(prefix)?;
        let base = if base.as_ref().is_empty() {
            None
        } else {
            Some(base)
        };
        self.store
            .list_with_delimiter(base.as_ref())
            .await
            .context(StoreSnafu {
                op: "list",
                key: prefix,
            })
    }

    /// The names of the immediate "sub-directories" of `prefix`.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let listing = self.list_level(prefix).await?;
        let mut out: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The names of the objects directly under `prefix` (not in its
    /// "sub-directories"), sorted.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<String>> {
        let listing = self.list_level(prefix).await?;
        let mut out: Vec<String> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The objects directly under `prefix` with their sizes in bytes,
    /// sorted by name.
    pub async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let listing = self.list_level(prefix).await?;
        let mut out: Vec<(String, u64)> = listing
            .objects
            .iter()
            .filter_map(|o| Some((o.location.filename()?.to_string(), o.size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every object under `prefix/`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let base = self.full(prefix)?;
        let objects: Vec<_> =
            self.store
                .list(Some(&base))
                .try_collect()
                .await
                .context(StoreSnafu {
                    op: "list",
                    key: prefix,
                })?;
        // Delete meta.json first so a half-deleted block is never taken
        // for a complete one.
        let (meta, rest): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|o| o.location.filename() == Some("meta.json"));
        for o in meta.into_iter().chain(rest) {
            match self.store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(Error::Store {
                        op: "delete",
                        key: o.location.to_string(),
                        source,
                    });
                }
            }
        }
        if let Some(p) = self.local_path(prefix) {
            // LocalFileSystem leaves empty directories behind.
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(())
    }

    /// Deletes one object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let p = self.full(key)?;
        match self.store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::Store {
                op: "delete",
                key: key.to_string(),
                source,
            }),
        }
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let rd = std::fs::read_dir(dir).context(LocalIoSnafu { path: dir })?;
    for e in rd {
        let e = e.context(LocalIoSnafu { path: dir })?;
        let path = e.path();
        let ft = e.file_type().context(LocalIoSnafu { path: &path })?;
        if ft.is_dir() {
            collect_files(root, &path, out)?;
        } else if ft.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                let rel: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(rel.join("/"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(b: Bucket) {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("chunks")).unwrap();
        std::fs::write(src.path().join("meta.json"), b"{}").unwrap();
        std::fs::write(src.path().join("index"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(src.path().join("chunks/000001"), b"abc").unwrap();
        let t = b.with_prefix("tenant-a");
        t.upload_dir("01BLOCK", src.path(), &["meta.json"])
            .await
            .unwrap();
        assert_eq!(t.list_dirs("").await.unwrap(), vec!["01BLOCK"]);
        assert_eq!(
            t.get("01BLOCK/meta.json").await.unwrap().unwrap(),
            Bytes::from_static(b"{}")
        );
        let dst = tempfile::tempdir().unwrap();
        t.download_dir("01BLOCK", dst.path()).await.unwrap();
        assert_eq!(
            std::fs::read(dst.path().join("index")).unwrap().len(),
            3 << 20
        );
        assert_eq!(
            std::fs::read(dst.path().join("chunks/000001")).unwrap(),
            b"abc"
        );
        assert_eq!(
            t.list_sizes("01BLOCK/chunks").await.unwrap(),
            vec![("000001".to_string(), 3)]
        );
        assert_eq!(
            &t.get_range("01BLOCK/chunks/000001", 1..3).await.unwrap()[..],
            b"bc"
        );
        let parts = t
            .get_ranges("01BLOCK/chunks/000001", &[2..3, 0..1], 2)
            .await
            .unwrap();
        assert_eq!((&parts[0][..], &parts[1][..]), (&b"c"[..], &b"a"[..]));
        assert!(t.get_range("01BLOCK/nope", 0..1).await.is_err());
        let f = dst.path().join("one");
        assert!(t.download_file("01BLOCK/meta.json", &f).await.unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"{}");
        assert!(!t.download_file("01BLOCK/nope", &f).await.unwrap());
        t.delete_prefix("01BLOCK").await.unwrap();
        assert!(t.list_dirs("").await.unwrap().is_empty());
        assert!(t.get("01BLOCK/meta.json").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_bucket_roundtrip() {
        roundtrip(Bucket::memory()).await;
    }

    #[tokio::test]
    async fn local_bucket_roundtrip() {
        let root = tempfile::tempdir().unwrap();
        let b = Bucket::local(root.path()).unwrap();
        let p = b.with_prefix("t").local_path("x/meta.json").unwrap();
        assert!(p.ends_with("t/x/meta.json"));
        roundtrip(b).await;
    }
}
