//! Fuzzes the recipe parser: any text parsed and checked as `pipeline validate` does gives a
//! recipe or an error with a position, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let _ = pipeline::recipe::parse(text, std::path::Path::new("recipe.yaml"));
});
