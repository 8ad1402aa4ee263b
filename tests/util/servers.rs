//! Real servers from Debian for the recipe tests (HAProxy, Apache): started in the foreground
//! as a child in a process group of its own, on a free loopback port, and stopped with their
//! whole group when dropped (SIGTERM, then SIGKILL after [`STOP_GRACE`]), even when the test
//! panicked. The recipe text itself comes from the README (see `tests/recipes.rs`).

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// How long a server may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a server may take to stop after SIGTERM before its group gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running server; its process group is stopped when dropped.
pub struct Server {
    child: Child,
    pub name: &'static str,
    pub log: std::path::PathBuf,
    /// For a server whose master leaves the group it was started in (Postfix's `master -s`
    /// makes a session of its own): the command that stops it and its pid file, whose pid
    /// gets SIGKILL if it is still alive after the command.
    stop: Option<(Vec<String>, std::path::PathBuf)>,
}

impl Server {
    /// Starts `argv` (whose program comes from Debian package `package`) with its output in
    /// `log`, and waits until `port` on 127.0.0.1 accepts connections. A missing program
    /// fails the test naming the package.
    pub fn start(
        name: &'static str,
        package: &str,
        argv: &[String],
        log: &Path,
        port: u16,
    ) -> Server {
        assert!(
            Path::new(&argv[0]).exists(),
            "{} is missing: install the Debian package `{package}` (apt-get install -y {package})",
            argv[0]
        );
        let out = std::fs::File::create(log).expect("server log");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", argv[0]));
        let mut server = Server {
            child,
            name,
            log: log.to_owned(),
            stop: None,
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "{name} did not listen on 127.0.0.1:{port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Says how this server is stopped besides its process group (see [`Server::stop`]).
    pub fn stopped_by(mut self, argv: Vec<String>, pid_file: std::path::PathBuf) -> Server {
        self.stop = Some((argv, pid_file));
        self
    }

    /// The process id of the foreground process (the master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((argv, pid_file)) = self.stop.take() {
            let _ = Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let master = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .and_then(Pid::from_raw);
            if let Some(master) = master {
                let started = Instant::now();
                while rustix::process::test_kill_process(master).is_ok()
                    && started.elapsed() < STOP_GRACE
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = rustix::process::kill_process_group(master, Signal::KILL);
                let _ = rustix::process::kill_process(master, Signal::KILL);
            }
        }
        let Some(pid) = Pid::from_raw(self.child.id() as i32) else {
            return;
        };
        let _ = kill_process_group(pid, Signal::TERM);
        let started = Instant::now();
        while started.elapsed() < STOP_GRACE {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Workers of the group may outlive the master for a moment.
                let _ = kill_process_group(pid, Signal::KILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill_process_group(pid, Signal::KILL);
        let _ = self.child.wait();
    }
}

/// The SHA-256 fingerprint (lower-case hex of the DER) of the leaf served at
/// 127.0.0.1:`port` with SNI `server_name`; `starttls` names an `openssl s_client -starttls`
/// protocol. Uses Debian's `openssl`.
pub fn served_fingerprint(port: u16, server_name: &str, starttls: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", server_name]);
    if let Some(proto) = starttls {
        cmd.args(["-starttls", proto]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl (Debian package openssl) is needed");
    let pem = String::from_utf8_lossy(&out.stdout);
    let (certs, _) = certkeeper::x509::read_certificates(pem.as_bytes())
        .unwrap_or_else(|e| panic!("no certificate served on port {port}: {e}\n{pem}"));
    certs[0].fingerprint.clone()
}
