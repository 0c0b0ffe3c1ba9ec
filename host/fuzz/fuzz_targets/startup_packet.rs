//! A client's first packets (SSLRequest, CancelRequest, StartupMessage) and the startup
//! parameter checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice::proxy::fuzzing::startup_packet(data);
});
