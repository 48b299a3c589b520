//! Providers' own SDKs, installed from the package registries into a virtualenv under cargo's
//! temp dir for integration tests (`CARGO_TARGET_TMPDIR`), once per set of packages and shared
//! by the tests that need it. Tests use them to sign requests or to say what the provider's
//! library accepts, so no hand-copied value can drift from the provider's behaviour.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A virtualenv with `packages` installed; returns its Python.
pub fn python_with(packages: &[&str]) -> PathBuf {
    let dir = installed("sdk", packages, |building| {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(building),
            "python3 -m venv (install python3-venv: `make deps`)",
        );
        run(
            Command::new(building.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(packages),
            &format!("pip install {packages:?} (needs the package index)"),
        );
    });
    dir.join("bin").join("python")
}

/// A folder with the npm `packages` installed (for the providers whose library is only on
/// npm); scripts run in it with [`run_node`].
pub fn node_with(packages: &[&str]) -> PathBuf {
    installed("npm", packages, |building| {
        run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(building)
                .args(packages),
            &format!("npm install {packages:?} (needs node and npm: `make deps`)"),
        );
    })
}

/// `packages` installed by `install` into a folder under cargo's temp dir, once: built aside
/// and renamed into place, so concurrent tests never see half an install.
fn installed(kind: &str, packages: &[&str], install: impl Fn(&Path)) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(format!(
        "{kind}-{}",
        packages.join("-").replace(['=', '<', '>', '@', '/'], "_")
    ));
    if dir.join(".ready").exists() {
        return dir;
    }
    let building = tempfile::Builder::new()
        .prefix(&format!("{kind}-building-"))
        .tempdir_in(root)
        .expect("a temp dir under CARGO_TARGET_TMPDIR");
    install(building.path());
    std::fs::write(building.path().join(".ready"), b"").expect("mark the install ready");
    // Another test may have finished first: then its install is used and this one dropped.
    let built = building.keep();
    if std::fs::rename(&built, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&built);
    }
    dir
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `script` with `python`, `input` on stdin; returns stdout (panics on failure).
pub fn run_python(python: &Path, script: &str, input: &str) -> String {
    piped(Command::new(python).args(["-c", script]), input)
}

/// Runs the ES module `script` with node in `dir` (from [`node_with`]), `input` on stdin;
/// returns stdout (panics on failure).
pub fn run_node(dir: &Path, script: &str, input: &str) -> String {
    piped(
        Command::new("node")
            .args(["--input-type=module", "-e", script])
            .current_dir(dir),
        input,
    )
}

fn piped(command: &mut Command, input: &str) -> String {
    use std::io::Write as _;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the interpreter runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("script input written");
    let output = child.wait_with_output().expect("the script finishes");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
