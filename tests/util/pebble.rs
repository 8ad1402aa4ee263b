//! A real ACME server for tests: Pebble and pebble-challtestsrv from Debian's `pebble`
//! package (2.4) or, with [`Options::current`], Pebble 2.10.1 (ARI, profiles, dns-persist-01)
//! from `../shared/tools/pebble-2.10.1/` next to the repository, on free loopback ports, with a TLS certificate generated here (a small CA and a
//! leaf for localhost/127.0.0.1). Both processes are killed when the [`Pebble`] is dropped.
//!
//! Pebble runs with `PEBBLE_VA_NOSLEEP=1` and its default random badNonce rejection on, and
//! validates DNS-01 against challtestsrv's DNS server.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certkeeper::config::{AcmeIssuer, DnsSettings, Eab, SecretSource};
use rcgen::{CertificateParams, CertifiedIssuer, IsCa};

use super::Dir;
use super::fixtures::{Key, ca_params};

/// The Debian package that provides both binaries.
pub const PACKAGE: &str = "pebble";

/// One EAB key Pebble accepts when started with [`Options::eab`].
pub const EAB_KID: &str = "kid-1";
/// Its HMAC key (base64url), as Pebble's example config has it.
pub const EAB_HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// How Pebble is started.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Require external account binding (with [`EAB_KID`]/[`EAB_HMAC`]).
    pub eab: bool,
    /// Never reject a nonce (Pebble rejects 5% of good nonces by default, which clients
    /// must survive; Debian 12's certbot crashes on any error answer under Python 3.11,
    /// certbot issue 9539, so a test that makes a lineage with it turns that off).
    pub keep_nonces: bool,
    /// Run Pebble 2.10.1 (see [`current_dir`]) instead of Debian's 2.4.
    pub current: bool,
    /// Reuse a valid authorization for a new order as rarely as Pebble can (it reuses one
    /// half of the time by default): `PEBBLE_AUTHZREUSE=0`, with which Pebble 2.10.1 still
    /// reuses one time in a hundred (it makes a new one when `rand.Intn(100) > 0`). Only
    /// an account's first order is sure to be validated.
    pub no_authz_reuse: bool,
}

/// Where Pebble 2.10.1 is: `$PEBBLE_CURRENT_DIR`, else `../shared/tools/pebble-2.10.1/` next
/// to the repository.
pub const CURRENT_DIR_VAR: &str = "PEBBLE_CURRENT_DIR";

/// The directory that holds Pebble 2.10.1's `pebble` and `pebble-challtestsrv`.
pub fn current_dir() -> PathBuf {
    match std::env::var_os(CURRENT_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/pebble-2.10.1"),
    }
}

/// A running Pebble + challtestsrv pair.
pub struct Pebble {
    /// Holds the TLS files, the config, the trust roots and the processes' logs.
    pub dir: Dir,
    /// `https://127.0.0.1:<port>/dir`.
    pub directory: String,
    /// challtestsrv's management API, `http://127.0.0.1:<port>`.
    pub challtestsrv: String,
    /// challtestsrv's DNS server (UDP and TCP).
    pub dns: SocketAddr,
    /// Pebble's issuing root (PEM).
    pub root_pem: String,
    /// The HTTPS CA and Pebble's issuing root: what an issuer's `trust_roots` must hold.
    pub trust_roots: PathBuf,
    children: Vec<Child>,
}

impl Pebble {
    /// Starts both servers and waits until they answer.
    pub async fn start() -> Pebble {
        Self::start_with(Options::default()).await
    }

    /// Starts both servers with `opts`.
    pub async fn start_with(opts: Options) -> Pebble {
        certkeeper::acme::install_crypto_provider();
        let (pebble_bin, chall_bin) = if opts.current {
            (
                current_binary("pebble"),
                current_binary("pebble-challtestsrv"),
            )
        } else {
            (
                binary("PEBBLE_BIN", "pebble"),
                binary("CHALLTESTSRV_BIN", "pebble-challtestsrv"),
            )
        };
        let mut last = String::new();
        // A free port can be taken by another test between our probe and the server's bind;
        // start again on fresh ports when that happens.
        for _ in 0..3 {
            match try_start(&pebble_bin, &chall_bin, opts).await {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("Pebble did not start: {last}");
    }

    /// An ACME issuer for this Pebble, trusting its HTTPS CA and its root.
    pub fn issuer(&self) -> AcmeIssuer {
        AcmeIssuer {
            directory: self.directory.clone(),
            contact: vec!["mailto:ops@example.com".into()],
            trust_roots: vec![self.trust_roots.clone()],
            eab: None,
            staging_directory: None,
            // Pebble 2.x deadlocks under concurrent requests on one account.
            max_concurrent_requests: Some(1),
            orders_per_minute: None,
            certbot_account: None,
        }
    }

    /// The same issuer with external account binding, the HMAC key read from a file.
    pub fn issuer_with_eab(&self) -> AcmeIssuer {
        let path = self.dir.write("eab.hmac", format!("{EAB_HMAC}\n"));
        AcmeIssuer {
            eab: Some(Eab {
                key_id: EAB_KID.into(),
                hmac_key: SecretSource::File(path),
            }),
            ..self.issuer()
        }
    }

    /// Propagation checks against challtestsrv's DNS server, fast.
    pub fn settings(&self) -> DnsSettings {
        DnsSettings {
            resolvers: vec![self.dns],
            propagation_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(200),
        }
    }

    /// What Pebble and challtestsrv logged (for failure messages).
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- pebble\n{}--- challtestsrv\n{}",
            read("pebble.log"),
            read("challtestsrv.log")
        )
    }
}

impl Pebble {
    /// After a failed test: asks Pebble (a Go program) for its goroutine stacks, so a server
    /// that stopped answering shows where it is stuck, and prints them.
    fn dump_goroutines(&mut self) {
        // children: challtestsrv first, then Pebble (see try_start).
        let Some(pebble) = self.children.get_mut(1) else {
            return;
        };
        let Some(pid) = rustix::process::Pid::from_raw(pebble.id() as i32) else {
            return;
        };
        if rustix::process::kill_process(pid, rustix::process::Signal::QUIT).is_err() {
            return;
        }
        let _ = pebble.wait();
        let log = std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default();
        if let Some(at) = log.find("goroutine ") {
            let dump: Vec<&str> = log[at..].lines().take(400).collect();
            eprintln!("--- pebble goroutines\n{}", dump.join("\n"));
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_goroutines();
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn try_start(pebble_bin: &Path, chall_bin: &Path, opts: Options) -> Result<Pebble, String> {
    let dir = Dir::new();
    let (acme_port, mgmt_port, chall_port) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let dns_port = free_dns_port();
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().expect("addr");

    // The HTTPS certificate: a CA trusted through trust_roots and a leaf for localhost.
    let ca =
        CertifiedIssuer::self_signed(ca_params("certkeeper test HTTPS CA"), Key::P256.generate())
            .map_err(|e| e.to_string())?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| e.to_string())?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    let leaf_key = Key::P256.generate();
    let leaf = leaf.signed_by(&leaf_key, &ca).map_err(|e| e.to_string())?;
    let cert = dir.write("tls/cert.pem", leaf.pem());
    let tls_key = dir.write("tls/key.pem", leaf_key.serialize_pem());

    let mut config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": cert,
        "privateKey": tls_key,
        "httpPort": 5002,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": opts.eab,
    }});
    if opts.eab {
        config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ EAB_KID: EAB_HMAC });
    }
    let config_path = dir.write("pebble.json", config.to_string());

    let mut children = Vec::new();
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    // challtestsrv 2.10 names the DNS listener -dnsserver and starts DoH unless told not to.
    let dns_flags: Vec<String> = if opts.current {
        vec![
            "-dnsserver".into(),
            dns.to_string(),
            "-doh".into(),
            String::new(),
        ]
    } else {
        vec!["-dns01".into(), dns.to_string()]
    };
    let chall = Command::new(chall_bin)
        .args(&dns_flags)
        .args(["-management", &format!("127.0.0.1:{chall_port}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .stdin(Stdio::null())
        .stdout(log("challtestsrv.log"))
        .stderr(log("challtestsrv.log"))
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", chall_bin.display()))?;
    children.push(chall);
    let pebble = Command::new(pebble_bin)
        .args(["-config", &config_path.display().to_string()])
        .args(["-dnsserver", &dns.to_string()])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env_remove("PEBBLE_WFE_NONCEREJECT")
        .envs(opts.keep_nonces.then_some(("PEBBLE_WFE_NONCEREJECT", "0")))
        .env_remove("PEBBLE_AUTHZREUSE")
        .envs(opts.no_authz_reuse.then_some(("PEBBLE_AUTHZREUSE", "0")))
        .stdin(Stdio::null())
        .stdout(log("pebble.log"))
        .stderr(log("pebble.log"))
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", pebble_bin.display()))?;
    children.push(pebble);

    let mut p = Pebble {
        directory: format!("https://127.0.0.1:{acme_port}/dir"),
        challtestsrv: format!("http://127.0.0.1:{chall_port}"),
        dns,
        root_pem: String::new(),
        trust_roots: dir.join("trust-roots.pem"),
        dir,
        children,
    };
    for port in [chall_port, acme_port, mgmt_port] {
        if let Err(e) = wait_listening(&mut p, port) {
            return Err(format!("{e}\n{}", p.logs()));
        }
    }

    // Pebble's issuing root, from its management interface, over the HTTPS CA above.
    let ca_pem = ca.pem();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca pem")])
        .build()
        .expect("client");
    let root_pem = client
        .get(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot fetch Pebble's root: {e}"))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if !root_pem.contains("BEGIN CERTIFICATE") {
        return Err(format!("Pebble's root is not PEM: {root_pem}"));
    }
    std::fs::write(&p.trust_roots, format!("{ca_pem}{root_pem}")).expect("trust roots");
    p.root_pem = root_pem;
    Ok(p)
}

/// Waits until something listens on the port, or a child died.
fn wait_listening(p: &mut Pebble, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        for child in &mut p.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("a test server exited early ({status})"));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on 127.0.0.1:{port} after 20 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The binary from an env var, else from PATH; a missing one fails the test and names the
/// package to install (never a silent skip).
fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} not found on PATH (or in ${var}): the ACME tests need a real Pebble; install the Debian package `{PACKAGE}` (apt-get install -y {PACKAGE})"
    );
}

/// A binary of Pebble 2.10.1 from [`current_dir`]; a missing one fails the test, saying where
/// it looked and what to put there (never a silent skip).
fn current_binary(name: &str) -> PathBuf {
    let dir = current_dir();
    let path = dir.join(name);
    if path.is_file() {
        return path;
    }
    panic!(
        "{name} not found at {}: the dns-persist-01 tests need Pebble 2.10.1; put its `pebble` and `pebble-challtestsrv` (built from github.com/letsencrypt/pebble tag v2.10.1) in that directory, or set ${CURRENT_DIR_VAR} to the directory that holds them",
        path.display()
    );
}

/// A loopback TCP port nobody listens on right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A port free for both UDP and TCP (a DNS server needs both).
fn free_dns_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
