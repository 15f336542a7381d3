//! Fuzzes the compact chunk decoder, `ChunkIter`, seek and the conversion
//! to XOR chunks; the checks live in `stratus_tsdb::fuzz_compact_decode` so
//! unit tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_tsdb::fuzz_compact_decode(data);
});
