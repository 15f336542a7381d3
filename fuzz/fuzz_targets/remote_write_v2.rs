//! Fuzzes remote write 2.0 decoding and validation (symbol table,
//! label references; raw and snappy-compressed bodies); the checks live in
//! `stratus_api::fuzz_remote_write_v2` so unit tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_api::fuzz_remote_write_v2(data);
});
