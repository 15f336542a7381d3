//! Fuzzes the native histogram chunk decoders (encodings 2 and 3) and the
//! re-encoding of what they decode; the checks live in
//! `stratus_tsdb::fuzz_histogram_decode` so unit tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_tsdb::fuzz_histogram_decode(data);
});
