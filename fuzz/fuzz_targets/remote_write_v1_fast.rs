//! Differential fuzzing of the borrowing remote write 1.0 decoder: for
//! any body it must give exactly the batch (or the error) of the prost
//! decoder; the check lives in `stratus_api::fuzz_remote_write_v1_fast`
//! so unit tests run it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_api::fuzz_remote_write_v1_fast(data);
});
