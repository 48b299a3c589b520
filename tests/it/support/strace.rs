//! Faults injected from outside with `strace`: a router's system calls delayed or failed while
//! it runs, detached (the process runs on untouched) when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::wait_until;

/// `strace` attached to every thread of a process, tampering with some of its calls.
pub struct Strace {
    child: Child,
    log: PathBuf,
}

impl Strace {
    /// Attaches to `pid`, applying `inject` (e.g. `delay_enter=250000`, `error=EIO`) to each of
    /// `calls` (comma-separated); only to calls on `paths` when any are given. The log goes
    /// to `dir`.
    pub async fn attach(pid: u32, calls: &str, inject: &str, paths: &[&Path], dir: &Path) -> Self {
        let log = dir.join(format!("strace-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new("strace");
        command.args(["-f", "-o", "/dev/null", "-p", &pid.to_string()]);
        for path in paths {
            command.arg("-P").arg(path);
        }
        let child = command
            .arg(format!("--trace={calls}"))
            .arg(format!("--inject={calls}:{inject}"))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("strace runs (make deps installs it)");
        let strace = Self { child, log };
        // strace says so for each thread it attaches to.
        wait_until(Duration::from_secs(10), "strace attached", || async {
            strace.log().contains("attached")
        })
        .await;
        strace
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // SIGINT detaches strace from the tracee, which runs on.
        super::send_signal(self.child.id(), "-INT");
        let _ = self.child.wait();
    }
}
