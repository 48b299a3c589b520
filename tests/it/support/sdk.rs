//! Providers' own SDKs, installed from the package registries into a virtualenv under cargo's
//! temp dir for integration tests (`CARGO_TARGET_TMPDIR`), once per set of packages and shared
//! by the tests that need it. Tests use them to sign requests or to say what the provider's
//! library accepts, so no hand-copied value can drift from the provider's behaviour.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A virtualenv with `packages` installed; returns its Python. Built aside and renamed into
/// place, so concurrent tests never see half an install.
pub fn python_with(packages: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(format!(
        "sdk-{}",
        packages.join("-").replace(['=', '<', '>'], "_")
    ));
    let python = dir.join("bin").join("python");
    if dir.join(".ready").exists() {
        return python;
    }
    let building = tempfile::Builder::new()
        .prefix("sdk-building-")
        .tempdir_in(root)
        .expect("a temp dir under CARGO_TARGET_TMPDIR");
    let run = |command: &mut Command, what: &str| {
        let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            output.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(building.path()),
        "python3 -m venv (install python3-venv: `make deps`)",
    );
    run(
        Command::new(building.path().join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages),
        &format!("pip install {packages:?} (needs the package index)"),
    );
    std::fs::write(building.path().join(".ready"), b"").expect("mark the venv ready");
    // Another test may have finished first: then its venv is used and this one dropped.
    let built = building.keep();
    if std::fs::rename(&built, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&built);
    }
    python
}

/// Runs `script` with `python`, `input` on stdin; returns stdout (panics on failure).
pub fn run_python(python: &Path, script: &str, input: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("script input written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
