//! Builds a session from the first part of the data and runs it on inputs
//! made from the rest (see `onyx_fuzz::split` and `onyx_fuzz::feeds`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onyx_core::Session;

fuzz_target!(|data: &[u8]| {
    let (model, rest) = onyx_fuzz::split(data);
    if let Ok(session) = Session::from_bytes(model, onyx_fuzz::options()) {
        let _ = session.run(onyx_fuzz::feeds(&session, rest));
    }
});
