//! Fuzzes the block index reader: any bytes, treated as an `index` file,
//! must open or fail cleanly, and walking every series and postings list of
//! an index that opens — directly, and through the index header a store
//! builds from it with ranged reads — must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_tsdb::fuzz_block_index(data);
});
