//! Differential fuzzing of an ingester's series decoding, start-timestamp
//! extension fields included: for any encoded series the batch must keep
//! its invariants and, start timestamps aside, equal prost's; the check
//! lives in `stratus_api::fuzz_ingester_series` so unit tests run it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_api::fuzz_ingester_series(data);
});
