//! Helpers for the integration tests: a temporary directory per test, the real binary run
//! as a user runs it, and certificate fixtures.

#![allow(dead_code)]

pub mod challtestsrv;
pub mod fake_acme;
pub mod fixtures;
pub mod nginx;
pub mod nspawn;
mod pairs;
pub mod pebble;
pub mod servers;
pub mod sinks;

pub use pairs::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory that holds a test's config and files.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix("certkeeper-test-")
            .tempdir()
            .expect("tempdir");
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// Writes `config.yaml` and returns its path.
    pub fn config(&self, yaml: &str) -> PathBuf {
        self.write("config.yaml", yaml)
    }

    /// Runs the binary with `--config <dir>/config.yaml` and the arguments.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(self.join("config.yaml")).args(args);
        cmd.env_remove("CERTKEEPER_CONFIG")
            .env_remove("CERTKEEPER_LOG");
        Run::from(cmd.output().expect("run certkeeper"))
    }

    /// Runs `check --json` and returns its exit code and its array.
    pub fn check_json(&self) -> (i32, Vec<serde_json::Value>) {
        let run = self.run(&["check", "--json"]);
        let v = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
        (run.code, v)
    }

    /// Opens only the way to the config and the live files of `names` (`live/<name>/`) to
    /// other users, as on a real host: state_dir and private keys stay as certkeeper made
    /// them.
    pub fn open_way_to_live(&self, names: &[&str]) {
        let mut dirs = vec![self.path().to_owned(), self.join("live")];
        dirs.extend(names.iter().map(|n| self.join(&format!("live/{n}"))));
        for d in dirs {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::set_permissions(
            self.join("config.yaml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
    }

    /// Makes the directory tree readable by other users (for tests that drop root).
    pub fn open_up(&self) {
        for entry in walk(self.path()) {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
}

fn walk(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_owned()];
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            out.extend(walk(&e.expect("entry").path()));
        }
    }
    out
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_certkeeper")
}

/// What a run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `args` as `nobody` (uid and gid 65534, no groups) through setpriv, as a monitoring
/// user would run them. The suite runs as root (CI does); anything else is a failure.
pub fn as_nobody(args: &[&str]) -> Run {
    assert!(
        is_root(),
        "this test drops from root to nobody; run the suite as root (CI does)"
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args)
        .output()
        .expect("setpriv (util-linux) is needed");
    Run::from(out)
}

/// Whether this process runs as root (permission tests then drop to `nobody`).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
