//! Config files for the file backend, replaced atomically as editors and config management do.

use std::path::Path;

/// Writes `content` to `dir/name` through a rename.
pub fn write(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Writes a JSON value to `dir/name` through a rename.
pub fn write_json(dir: &Path, name: &str, content: &serde_json::Value) {
    write(dir, name, &content.to_string());
}
