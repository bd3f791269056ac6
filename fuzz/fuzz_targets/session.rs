//! Builds a session (decode, import, plan, kernel builders) from arbitrary
//! bytes; must return an error or a session, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onyx_core::Session;

fuzz_target!(|data: &[u8]| {
    let _ = Session::from_bytes(data, onyx_fuzz::options());
});
