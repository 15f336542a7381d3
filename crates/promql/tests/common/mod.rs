//! Helpers shared by the engine's integration tests.

use std::sync::Arc;
use std::time::Duration;

use stratus_objstore::Bucket;
use stratus_tsdb::{Db, DbConfig};

/// A fresh database in a temporary directory (kept alive by the returned
/// guard) that accepts samples at any time: out-of-order window and
/// future limit both effectively unbounded, so fixtures may load any data.
pub(crate) fn open_test_db() -> (Arc<Db>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = i64::MAX / 4;
    cfg.max_future = Duration::from_secs(1 << 40);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let db = Arc::new(
        rt.block_on(Db::open(dir.path(), Bucket::memory(), cfg))
            .unwrap(),
    );
    (db, dir)
}
