//! Fuzzes OTLP metrics decoding (protobuf, JSON, gzip) and translation to
//! Prometheus series; the checks live in `stratus_api::fuzz_otlp` so unit
//! tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_api::fuzz_otlp(data);
});
