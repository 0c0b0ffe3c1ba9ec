//! A logged-in session's relay, both directions, with client and upstream bytes from the input.
//! With `SLUICE_FUZZ_PLUGINS=<plugin directory>` the policy pipeline runs on every statement.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use sluice::proxy::fuzzing::Fixture;

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let plugins = std::env::var_os("SLUICE_FUZZ_PLUGINS").map(PathBuf::from);
    Fixture::new(plugins.as_deref())
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    FIXTURE.relay(data);
});
