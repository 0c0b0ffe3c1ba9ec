//! Client messages after login: framing, the fields the gate reads, and statement analysis
//! (cached answers must equal a fresh parse).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice::proxy::fuzzing::client_messages(data);
});
