//! Fuzzes remote write 1.0 decoding and validation (raw protobuf and
//! snappy-compressed bodies); the checks live in
//! `stratus_api::fuzz_remote_write_v1` so unit tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_api::fuzz_remote_write_v1(data);
});
