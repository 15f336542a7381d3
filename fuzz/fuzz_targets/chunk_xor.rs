//! Fuzzes the XOR chunk decoder, iterator, seek and resume paths; the
//! checks live in `stratus_tsdb::fuzz_xor_decode` so unit tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_tsdb::fuzz_xor_decode(data);
});
