//! Fuzzes the start-timestamp chunk decoders (encodings 0x82..0x84: the
//! wrapper, the inner chunk and the start-timestamp column) and their
//! re-encoding; the checks live in `stratus_tsdb::fuzz_st_decode`. The
//! first byte picks the encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&k, rest)) = data.split_first() {
        stratus_tsdb::fuzz_st_decode(0x82 + k % 3, rest);
    }
});
