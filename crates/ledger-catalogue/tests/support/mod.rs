//! Where the catalogue lives on disk, shared by the test crates.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `events/` at the repository root.
pub fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// `events/examples/`.
pub fn examples_dir() -> PathBuf {
    events_dir().join("examples")
}

/// File names in `dir` ending with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").file_name())
        .map(|name| name.into_string().expect("UTF-8 file name"))
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Every golden example as `(file name, bytes)`, sorted by file name.
pub fn golden_files() -> Vec<(String, Vec<u8>)> {
    let dir = examples_dir();
    files_ending(&dir, ".json")
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name))
                .unwrap_or_else(|e| panic!("events/examples/{name}: {e}"));
            (name, bytes)
        })
        .collect()
}

/// The event type a golden file is an example of: its name up to the first dot.
pub fn type_of_file(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}
