//! The upstream login exchange with everything the upstream says taken from the input.
#![no_main]

use std::sync::LazyLock;

use sluice::proxy::fuzzing::Fixture;

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture::new(None));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    FIXTURE.upstream_login(data);
});
