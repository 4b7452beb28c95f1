//! Fuzzes the data reader: any bytes read as an `.npz` archive (with and without a labels
//! array) and as a `.npy` file give a dataset or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::evaluate::Dataset;

fuzz_target!(|bytes: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    for name in ["data.npz", "data.npy"] {
        let path = dir.path().join(name);
        if std::fs::write(&path, bytes).is_err() {
            return;
        }
        let _ = Dataset::load(&path, None, None);
        if name.ends_with("npz") {
            let _ = Dataset::load(&path, Some("y"), Some(3));
        }
    }
});
