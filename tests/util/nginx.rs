//! A real nginx for the deploy tests: Debian's `nginx` on a free loopback port, with its
//! config, pid file, logs and temp directories in a test directory, serving one TLS `server`
//! block per [`Site`]. It runs in the foreground (`daemon off;`) in a process group of its
//! own, so that dropping the [`Nginx`] stops the master and its workers even when the test
//! panicked: SIGTERM to the group, then SIGKILL after [`STOP_GRACE`].
//!
//! The tests learn what it serves with [`certkeeper::deploy::verify::probe`], the same TLS
//! client the product verifies with, and reload it through [`Nginx::reload_argv`] (the real
//! `nginx -s reload`) or a script around it.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use super::pebble::free_tcp_port;

/// The Debian package that provides the binary.
pub const PACKAGE: &str = "nginx";

/// How long nginx may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nginx may take to stop after SIGTERM before its group gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long one probe of the served certificate may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One `server` block: a name and the pair it serves (typically a certificate's live paths).
#[derive(Clone, Debug)]
pub struct Site {
    pub server_name: String,
    pub fullchain: PathBuf,
    pub privkey: PathBuf,
    /// More directives for the `server` block (client certificates, say), each a line.
    pub extra: Vec<String>,
}

impl Site {
    pub fn new(
        server_name: &str,
        fullchain: impl Into<PathBuf>,
        privkey: impl Into<PathBuf>,
    ) -> Site {
        Site {
            server_name: server_name.to_owned(),
            fullchain: fullchain.into(),
            privkey: privkey.into(),
            extra: Vec::new(),
        }
    }

    /// The site with `directive` (`ssl_verify_client on;`) added to its `server` block.
    pub fn with(mut self, directive: &str) -> Site {
        self.extra.push(directive.to_owned());
        self
    }
}

/// A running nginx; stopped when dropped.
pub struct Nginx {
    /// Its prefix: config, pid file, logs and temp directories.
    pub dir: PathBuf,
    /// The loopback port every site listens on.
    pub port: u16,
    bin: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx in `dir` (created if needed) serving `sites` on a free port, and waits
    /// until it listens. A port taken by someone else between the probe and nginx's bind
    /// makes it start again on another port.
    pub fn start(dir: &Path, sites: &[Site]) -> Nginx {
        let bin = binary();
        std::fs::create_dir_all(dir.join("temp")).expect("nginx dir");
        let mut last = String::new();
        for _ in 0..3 {
            match try_start(&bin, dir, sites) {
                Ok(n) => return n,
                Err(Start::PortTaken(log)) => last = log,
                Err(Start::Failed(why)) => panic!("nginx did not start: {why}"),
            }
        }
        panic!("nginx did not start: its port was taken three times:\n{last}");
    }

    /// `127.0.0.1:PORT`, what `verify.tls_connect` takes.
    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The command that reloads this nginx: `nginx -p DIR -e ERRLOG -c CONF -s reload`. It
    /// parses the config first and exits 1 (with `[emerg]` on stderr) when it is invalid.
    pub fn reload_argv(&self) -> Vec<String> {
        let mut argv = self.argv();
        argv.extend(["-s".into(), "reload".into()]);
        argv
    }

    /// [`Nginx::reload_argv`] of an nginx in `dir` that may not run yet (a service being
    /// set up): it fails until one runs there.
    pub fn reload_argv_in(dir: &Path) -> Vec<String> {
        let mut argv = base_argv(&binary(), dir);
        argv.extend(["-s".into(), "reload".into()]);
        argv
    }

    /// Writes an executable script that appends a line to `counter` and then execs
    /// [`Nginx::reload_argv`]; returns its path. The counter's line count is how many
    /// reloads ran.
    pub fn counting_reload(&self, counter: &Path) -> PathBuf {
        let mut script = String::from("#!/bin/sh\n");
        writeln!(
            script,
            "echo \"reload $CERTKEEPER_CERTIFICATES\" >> {}",
            quote(&counter.display().to_string())
        )
        .expect("format");
        let argv: Vec<String> = self.reload_argv().iter().map(|a| quote(a)).collect();
        writeln!(script, "exec {}", argv.join(" ")).expect("format");
        let name = format!(
            "reload-{}.sh",
            counter
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("counter")
        );
        write_script(&self.dir.join(name), &script)
    }

    /// The SHA-256 (hex) of the leaf nginx serves for `server_name`; panics (with the error
    /// log) when no TLS handshake succeeds.
    pub fn served(&self, server_name: &str) -> String {
        match self.try_served(server_name) {
            Ok(fp) => fp,
            Err(e) => panic!(
                "nginx serves nothing for {server_name}: {e}\n--- error.log\n{}",
                self.error_log()
            ),
        }
    }

    pub fn try_served(&self, server_name: &str) -> Result<String, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let chain = runtime
            .block_on(certkeeper::deploy::verify::probe(
                &self.connect(),
                server_name,
                PROBE_TIMEOUT,
            ))
            .map_err(|e| e.to_string())?;
        Ok(chain
            .first()
            .map(|c| c.fingerprint.clone())
            .unwrap_or_default())
    }

    /// Waits until nginx serves the leaf `fingerprint` for `server_name`; panics after
    /// `timeout` with what it served last.
    pub fn wait_served(&self, server_name: &str, fingerprint: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_served(server_name);
            if last.as_deref() == Ok(fingerprint) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nginx did not serve {fingerprint} for {server_name} within {timeout:?}; last: {last:?}\n--- error.log\n{}",
                    self.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes the config invalid, so that `nginx -s reload` (which parses it first) fails
    /// with `[emerg]`; the running nginx keeps serving what it loaded.
    pub fn break_config(&self) {
        let mut conf = std::fs::read_to_string(self.conf()).expect("read nginx.conf");
        conf.push_str("\nthis_is_not_an_nginx_directive on;\n");
        std::fs::write(self.conf(), conf).expect("write nginx.conf");
    }

    /// What nginx logged so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// `nginx -p DIR -e ERRLOG -c CONF`.
    fn argv(&self) -> Vec<String> {
        base_argv(&self.bin, &self.dir)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Why one attempt to start failed.
enum Start {
    /// nginx could not bind its port (someone else took it): try another.
    PortTaken(String),
    /// Anything else: retrying would not help.
    Failed(String),
}

fn try_start(bin: &Path, dir: &Path, sites: &[Site]) -> Result<Nginx, Start> {
    let port = free_tcp_port();
    std::fs::write(dir.join("nginx.conf"), config(dir, port, sites)).expect("write nginx.conf");
    let error_log = dir.join("error.log");
    // A fresh log per attempt, so a failure shows this attempt's messages only.
    let _ = std::fs::remove_file(&error_log);
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let out = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
    let child = Command::new(bin)
        .args(&base_argv(bin, dir)[1..])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        // Its own group: dropping the Nginx stops the master and its workers together.
        .process_group(0)
        .spawn()
        .map_err(|e| Start::Failed(format!("cannot run {}: {e}", bin.display())))?;
    let mut nginx = Nginx {
        dir: dir.to_owned(),
        port,
        bin: bin.to_owned(),
        child,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let pid = nginx.child.id().to_string();
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = format!(
                "nginx exited at start ({status})\n--- error.log\n{}--- stderr\n{}",
                nginx.error_log(),
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
            // The Drop finds the child reaped and has nothing left to do.
            return Err(if log.contains("Address already in use") {
                Start::PortTaken(log)
            } else {
                Start::Failed(log)
            });
        }
        // nginx writes its pid file after binding its sockets: with our pid in it, whatever
        // accepts on the port is this nginx, not a stranger that took the port.
        let ours = std::fs::read_to_string(dir.join("nginx.pid")).is_ok_and(|p| p.trim() == pid);
        if ours && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(nginx);
        }
        if Instant::now() > deadline {
            let log = nginx.error_log();
            drop(nginx);
            return Err(Start::Failed(format!(
                "nothing listens on 127.0.0.1:{port} after {START_TIMEOUT:?}\n--- error.log\n{log}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the group, up to [`STOP_GRACE`] for the master to exit (it waits for its
/// workers), then SIGKILL to the group.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let Some(pgid) = Pid::from_raw(child.id() as i32) else {
        return;
    };
    let _ = kill_process_group(pgid, Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process_group(pgid, Signal::KILL);
    let _ = child.wait();
}

fn base_argv(bin: &Path, dir: &Path) -> Vec<String> {
    vec![
        bin.display().to_string(),
        "-p".into(),
        format!("{}/", dir.display()),
        "-e".into(),
        dir.join("error.log").display().to_string(),
        "-c".into(),
        dir.join("nginx.conf").display().to_string(),
    ]
}

/// The whole config: everything nginx writes stays in `dir`.
fn config(dir: &Path, port: u16, sites: &[Site]) -> String {
    let d = dir.display();
    let mut conf = format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/temp/client_body;\n\
         \x20   proxy_temp_path {d}/temp/proxy;\n\
         \x20   fastcgi_temp_path {d}/temp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/temp/uwsgi;\n\
         \x20   scgi_temp_path {d}/temp/scgi;\n"
    );
    for site in sites {
        writeln!(
            conf,
            "    server {{\n\
             \x20       listen 127.0.0.1:{port} ssl;\n\
             \x20       server_name {};\n\
             \x20       ssl_certificate {};\n\
             \x20       ssl_certificate_key {};\n\
             {}\
             \x20       location / {{ return 200 \"ok\\n\"; }}\n\
             \x20   }}",
            site.server_name,
            site.fullchain.display(),
            site.privkey.display(),
            site.extra
                .iter()
                .map(|d| format!("        {d}\n"))
                .collect::<String>()
        )
        .expect("format");
    }
    conf.push_str("}\n");
    conf
}

/// Writes an executable (0755) script.
pub fn write_script(path: &Path, script: &str) -> PathBuf {
    std::fs::write(path, script).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_owned()
}

/// `s` single-quoted for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// nginx from `$NGINX_BIN`, else PATH, else /usr/sbin/nginx (often not on a user's PATH); a
/// missing one fails the test and names the package to install (never a silent skip).
fn binary() -> PathBuf {
    let install = format!(
        "the deploy tests need a real nginx; install the Debian package `{PACKAGE}` (apt-get install -y {PACKAGE})"
    );
    if let Some(path) = std::env::var_os("NGINX_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            panic!("NGINX_BIN={} is not a file: {install}", path.display());
        }
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|c| c.is_file())
        .unwrap_or_else(|| panic!("nginx not found on PATH or at /usr/sbin/nginx: {install}"))
}
