//! Fuzzes the agent's exposition-format parser (Prometheus text 0.0.4 and
//! OpenMetrics); the checks live in `stratus_agent::textparse::fuzz_textparse`
//! so unit tests run them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stratus_agent::textparse::fuzz_textparse(data);
});
