//! Feeds arbitrary bytes to the WAL segment reader as if they were a
//! segment file's content: it must never panic, and a valid prefix before
//! a stop must re-read cleanly (checked inside `fuzz_wal_read`). Every
//! record type is decoded: series, samples, tombstones, native histograms,
//! exemplars (type 6) and metadata.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratus_tsdb::fuzz_wal_read(data);
});
