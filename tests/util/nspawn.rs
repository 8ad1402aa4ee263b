//! A Debian 12 system booted under its own systemd, for the tests that start the units in
//! `deploy/` for real: a root file system built once with `mmdebstrap` and cached, booted
//! with `systemd-nspawn --boot --private-network --volatile=overlay` (the cached tree is the
//! read-only lower layer, every change goes to a tmpfs that dies with the container, so runs
//! never see each other's state), and commands run inside it with `nsenter`.
//!
//! The host needs `mmdebstrap` and `systemd-nspawn` (Debian packages `mmdebstrap` and
//! `systemd-container`) and root; it needs no systemd of its own: the container is not
//! registered with systemd-machined (`--register=no`) and stays in the test's cgroup
//! (`--keep-unit`). Dropping a [`Container`] kills its init with SIGKILL, which ends every
//! process of its PID namespace, and then reaps `systemd-nspawn`, even when the test panicked.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::Run;

/// The Debian packages that provide the host's tools (the `apt-get install` line of CI).
pub const HOST_PACKAGES: &str = "mmdebstrap systemd-container";

/// The Debian release the container runs, whatever the host runs.
pub const SUITE: &str = "bookworm";

/// What the container has besides `minbase`: systemd as init, D-Bus for `systemctl`, and
/// the tools the tests use inside it.
pub const INCLUDE: [&str; 7] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "nginx",
    "openssl",
    "ca-certificates",
    "procps",
];

/// Where built root file systems are kept between runs, one directory per package list and
/// suite.
pub const CACHE: &str = "/var/cache/certkeeper-tests";

/// PATH inside the container.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long the container's systemd may take to appear after `systemd-nspawn` started, and
/// then to take `systemctl` connections.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a command inside the container may run before `timeout` stops it (a hung
/// `systemctl` must fail the test, not hang it).
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// How long `systemd-nspawn` may take to exit once the container's init was killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The cached root file system of [`SUITE`] with [`INCLUDE`], built on first use. The build
/// goes to a directory of its own and is renamed into place only when complete, so an
/// interrupted build is never used (and is removed by the next build).
pub fn rootfs() -> PathBuf {
    require("mmdebstrap", "mmdebstrap");
    require("systemd-nspawn", "systemd-container");
    require("nsenter", "util-linux");
    require("tar", "tar");
    assert!(
        super::is_root(),
        "booting a container needs root; run the suite as root (CI does)"
    );
    let key =
        certkeeper::text::sha256_hex(format!("{SUITE} minbase {}", INCLUDE.join(",")).as_bytes());
    let cache = Path::new(CACHE);
    let done = cache.join(format!("rootfs-{SUITE}-{}", &key[..16]));
    if done.join("usr/lib/systemd/systemd").exists() {
        return done;
    }
    std::fs::create_dir_all(cache).unwrap_or_else(|e| panic!("create {CACHE}: {e}"));
    remove_stale_builds(cache);
    let partial = cache.join(format!("partial-{}", std::process::id()));
    remove_tree(&partial);
    std::fs::create_dir_all(&partial).expect("create the build directory");
    build(&partial);
    match std::fs::rename(partial.join("root"), &done) {
        Ok(()) => {}
        // Another test process finished the same build first: its tree is as good.
        Err(_) if done.join("usr/lib/systemd/systemd").exists() => {}
        Err(e) => panic!(
            "rename the built root file system into {}: {e}",
            done.display()
        ),
    }
    remove_tree(&partial);
    done
}

/// The apt sources the container is built from: the host's own (`/etc/apt/sources.list`
/// and `sources.list.d/`), keeping only the entries of the host's Debian release and its
/// companion suites (`-updates`, `-security`, ...), with the release renamed to [`SUITE`].
/// Each item is a file name and its text, for mmdebstrap's MIRROR arguments; empty means
/// mmdebstrap's default mirror.
pub fn apt_sources() -> Vec<(String, String)> {
    let codename = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    let mut one_line = String::new();
    let mut deb822 = String::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => one_line.push_str(&rewrite_one_line(&text, &codename)),
            Some("sources") => deb822.push_str(&rewrite_deb822(&text, &codename)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if !one_line.is_empty() {
        out.push(("host.list".to_owned(), one_line));
    }
    if !deb822.is_empty() {
        out.push(("host.sources".to_owned(), deb822));
    }
    out
}

/// The `deb` lines of a one-line sources file whose suite belongs to `codename`, with the
/// suite renamed to [`SUITE`].
pub fn rewrite_one_line(text: &str, codename: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((o, r)) => (format!("[{o}] "), r.trim_start()),
                None => continue,
            },
            None => (String::new(), rest),
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [uri, suite, components @ ..] = words.as_slice() else {
            continue;
        };
        if uri.starts_with("cdrom:") {
            continue;
        }
        if let Some(suite) = rename_suite(suite, codename) {
            writeln!(out, "deb {options}{uri} {suite} {}", components.join(" ")).expect("format");
        }
    }
    out
}

/// The stanzas of a deb822 sources file with type `deb` and a suite of `codename`, each
/// with its other suites dropped and those renamed to [`SUITE`]; every other field as it was.
pub fn rewrite_deb822(text: &str, codename: &str) -> String {
    let mut out = String::new();
    for stanza in text.split("\n\n") {
        // Fields, each with its continuation lines.
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line);
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let value = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        let deb = value("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = value("Enabled").is_none_or(|e| !e.eq_ignore_ascii_case("no"));
        let suites: Vec<String> = value("Suites")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| rename_suite(s, codename))
            .collect();
        if !deb || !enabled || suites.is_empty() {
            continue;
        }
        for (k, v) in &fields {
            let v = if k.eq_ignore_ascii_case("Types") {
                "deb".to_owned()
            } else if k.eq_ignore_ascii_case("Suites") {
                suites.join(" ")
            } else {
                v.clone()
            };
            writeln!(out, "{k}: {v}").expect("format");
        }
        out.push('\n');
    }
    out
}

/// `codename` or `codename-xxx` renamed to [`SUITE`] (or [`SUITE`]`-xxx`); a suite of
/// [`SUITE`] stays; anything else (another distribution's suite, `stable`) is `None`.
fn rename_suite(suite: &str, codename: &str) -> Option<String> {
    let suite = suite.trim_end_matches('/');
    for base in [codename, SUITE] {
        if base.is_empty() {
            continue;
        }
        if suite == base {
            return Some(SUITE.to_owned());
        }
        if let Some(rest) = suite.strip_prefix(base).filter(|r| r.starts_with('-')) {
            return Some(format!("{SUITE}{rest}"));
        }
    }
    None
}

/// A booted container; killed when dropped.
pub struct Container {
    /// The container's init (systemd), PID 1 of its PID namespace.
    leader: i32,
    nspawn: Child,
    /// Console output: systemd's boot messages and nspawn's own errors.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Container {
    /// Boots `rootfs` with each host path of `binds` mounted read-only at its path in the
    /// container, and waits until the boot is finished.
    pub fn boot(rootfs: &Path, binds: &[(&Path, &str)]) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("certkeeper-nspawn-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("console.log");
        let name = format!("ck-test-{}", std::process::id());
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--boot",
            "--private-network",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--quiet",
        ])
        .arg(format!("--machine={name}"))
        .arg("--directory")
        .arg(rootfs);
        for (host, guest) in binds {
            let host = host.display().to_string();
            assert!(
                !host.contains(':') && !guest.contains(':'),
                "a bind mount path holds a colon, which systemd-nspawn cannot take: {host}"
            );
            cmd.arg(format!("--bind-ro={host}:{guest}"));
        }
        let out = File::create(&log).expect("console log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("console log"))
            .stderr(out)
            .process_group(0);
        let nspawn = cmd.spawn().expect("start systemd-nspawn");
        let mut c = Container {
            leader: 0,
            nspawn,
            log,
            _dir: dir,
        };
        c.leader = c.find_leader();
        // systemd opens its private socket a moment after it starts; until then systemctl
        // cannot connect.
        let deadline = Instant::now() + LEADER_TIMEOUT;
        let boot = loop {
            let run = c.sh("systemctl is-system-running --wait");
            if !run.stderr.contains("Failed to connect to bus") || Instant::now() > deadline {
                break run;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let state = boot.stdout.trim();
        if state != "running" {
            let failed = c.sh("systemctl --failed --no-pager");
            assert_eq!(
                state,
                "degraded",
                "the container did not boot: {boot:?}\n--- console\n{}",
                c.console()
            );
            eprintln!("the container booted degraded:\n{}", failed.stdout);
        }
        c
    }

    /// Runs `script` with `sh -c` inside the container (all its namespaces, its root, a
    /// clean environment), as root.
    pub fn sh(&self, script: &str) -> Run {
        let out = Command::new("nsenter")
            .arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--root", "--wd", "--", "env", "-i"])
            .arg(format!("PATH={PATH}"))
            .args([
                "LANG=C.UTF-8",
                "SYSTEMD_PAGER=",
                "timeout",
                "--kill-after=10",
            ])
            .arg(COMMAND_LIMIT.as_secs().to_string())
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter");
        Run::from(out)
    }

    /// Runs `script` and returns its stdout; panics with its output when it fails.
    pub fn must(&self, script: &str) -> String {
        let run = self.sh(script);
        assert_eq!(run.code, 0, "in the container: {script}\n{run:?}");
        run.stdout
    }

    /// What the container printed on its console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The PID of the container's systemd: the child of `systemd-nspawn` that runs
    /// `systemd`. Panics with the console output when nspawn exits first.
    fn find_leader(&mut self) -> i32 {
        let nspawn = self.nspawn.id();
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited ({status}) before the container booted:\n{}",
                    self.console()
                );
            }
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
                    .unwrap_or_default();
            for pid in children.split_whitespace() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd"
                    && let Ok(pid) = pid.parse()
                {
                    return pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no systemd in the container after {LEADER_TIMEOUT:?}:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGKILL to the init of a PID namespace ends every process in it.
        if let Some(pid) = Pid::from_raw(self.leader) {
            let _ = kill_process(pid, Signal::KILL);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// Panics (naming the Debian package) when `binary` is not on PATH.
fn require(binary: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()));
    assert!(
        found,
        "{binary} is missing: the systemd boot test needs it; install the Debian package \
         {package} (CI's apt-get line installs {HOST_PACKAGES})"
    );
}

/// Builds the root file system into `partial/root`, through a tarball so that mmdebstrap's
/// own mounts never live under the cache.
fn build(partial: &Path) {
    let mut mirrors = Vec::new();
    for (name, text) in apt_sources() {
        let path = partial.join(name);
        std::fs::write(&path, text).expect("write the apt sources");
        mirrors.push(path);
    }
    let tarball = partial.join("rootfs.tar");
    let log = partial.join("mmdebstrap.log");
    let status = Command::new("mmdebstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(&tarball)
        .args(&mirrors)
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("build log"))
        .stderr(File::options().append(true).open(&log).expect("build log"))
        .status()
        .expect("run mmdebstrap");
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "mmdebstrap could not build the {SUITE} root file system ({status}):\n{}",
            tail.join("\n")
        );
    }
    let root = partial.join("root");
    std::fs::create_dir(&root).expect("create the root directory");
    let out = Command::new("tar")
        .args(["--extract", "--preserve-permissions", "--numeric-owner"])
        .args(["--xattrs", "--xattrs-include=*"])
        .arg("--file")
        .arg(&tarball)
        .arg("--directory")
        .arg(&root)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "extracting the root file system failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the build directories of test processes that are gone.
fn remove_stale_builds(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("partial-")
            && !Path::new("/proc").join(pid).exists()
        {
            remove_tree(&e.path());
        }
    }
}

/// `rm -rf --one-file-system`: never descends into a mount point left behind.
fn remove_tree(path: &Path) {
    if path.exists() {
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system", "--"])
            .arg(path)
            .status();
    }
}
