//! Decodes arbitrary bytes as a model; must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onyx_format::decode_model(data);
});
