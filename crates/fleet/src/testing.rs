//! A real etcd cluster on loopback for tests: members from Debian's `etcd-server` package,
//! free ports, a data directory each under one temporary directory; every member killed when
//! the [`Cluster`] is dropped (also while a failing test unwinds). Test support: a failed
//! `expect` here is a failed test, with what could not be set up.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer, before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running etcd cluster on 127.0.0.1.
pub struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    tls: Option<TestTls>,
}

struct Member {
    name: String,
    client: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// The files of a TLS cluster: its CA, and a client certificate it accepts (mTLS).
pub struct TestTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A client certificate from another CA, which the members refuse.
    pub stranger_cert_file: PathBuf,
    pub stranger_key_file: PathBuf,
}

impl Cluster {
    /// Starts `n` members over plain HTTP and waits until the cluster answers a
    /// linearizable read. Panics (naming the Debian package) when `etcd` is not installed.
    pub fn start(n: usize) -> Self {
        Self::launch(n, false)
    }

    /// [`Cluster::start`] with TLS on the client port and client certificates required.
    pub fn start_tls(n: usize) -> Self {
        Self::launch(n, true)
    }

    fn launch(n: usize, tls: bool) -> Self {
        etcd_binary(); // fails now, naming the package, when etcd is missing
        let dir = tempfile::tempdir().expect("a temporary directory for etcd");
        let tls = tls.then(|| make_tls(dir.path()));
        let ports: Vec<(SocketAddr, SocketAddr)> =
            (0..n).map(|_| (free_port(), free_port())).collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://{peer}"))
            .collect();
        let token = format!(
            "certkeeper-test-{}-{}",
            std::process::id(),
            ports[0].0.port()
        );
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = dir.path().join(format!("m{i}.etcd"));
            let mut args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={scheme}://{client}"),
                format!("--advertise-client-urls={scheme}://{client}"),
                format!("--listen-peer-urls=http://{peer}"),
                format!("--initial-advertise-peer-urls=http://{peer}"),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".to_owned(),
                format!("--initial-cluster-token={token}"),
                "--heartbeat-interval=100".to_owned(),
                "--election-timeout=1000".to_owned(),
                "--logger=zap".to_owned(),
                "--log-outputs=stderr".to_owned(),
            ];
            if let Some(tls) = &tls {
                args.extend([
                    format!("--trusted-ca-file={}", tls.ca_file.display()),
                    format!("--cert-file={}", dir.path().join("server.pem").display()),
                    format!("--key-file={}", dir.path().join("server.key").display()),
                    "--client-cert-auth".to_owned(),
                ]);
            }
            members.push(Member {
                name: format!("m{i}"),
                client: *client,
                args,
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            });
        }
        let mut cluster = Self { dir, members, tls };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// The client URLs, one per member.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|m| format!("{scheme}://{}", m.client))
            .collect()
    }

    /// The TLS files of a cluster started with [`Cluster::start_tls`].
    pub fn tls(&self) -> Option<&TestTls> {
        self.tls.as_ref()
    }

    /// The cluster's temporary directory (data dirs and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops member `i` (SIGTERM, then waits for it).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            terminate(&mut child);
        }
    }

    /// Kills member `i` (SIGKILL, then waits for it).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again (on its data dir) and waits until its client port accepts a
    /// connection; it answers reads only once a quorum of members runs ([`Cluster::wait_healthy`]).
    pub fn start_member(&mut self, i: usize) {
        let etcd = etcd_binary();
        let m = &mut self.members[i];
        if m.child.is_some() {
            return;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("the etcd member's log file");
        let child = Command::new(&etcd)
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the etcd member's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", etcd.display()));
        m.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect_timeout(&m.client, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                panic!(
                    "etcd member {} exited ({status}):\n{}",
                    m.name,
                    tail(&m.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {} did not listen on {} in {START_DEADLINE:?}:\n{}",
                m.name,
                m.client,
                tail(&m.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a quorum answers: `etcdctl`-free, a linearizable read through the
    /// client crate on every running member's endpoint.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + START_DEADLINE;
        let running: Vec<&Member> = self.members.iter().filter(|m| m.child.is_some()).collect();
        for m in running {
            let url = format!(
                "{}://{}",
                if self.tls.is_some() { "https" } else { "http" },
                m.client
            );
            loop {
                if self.answers(&url) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not answer a linearizable read in {START_DEADLINE:?}:\n{}",
                    m.name,
                    tail(&m.log)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Options for a [`crate::Fleet`] on this cluster (TLS files set for a TLS cluster),
    /// with short timeouts fit for tests.
    pub fn options(&self, fleet: &str, host: &str) -> crate::Options {
        let mut o = crate::Options::new(fleet, host, self.endpoints());
        if let Some(tls) = &self.tls {
            o.ca_file = Some(tls.ca_file.clone());
            o.cert_file = Some(tls.cert_file.clone());
            o.key_file = Some(tls.key_file.clone());
        }
        o.lease_ttl = Duration::from_secs(2);
        o.connect_timeout = Duration::from_secs(2);
        // Long enough for the members to elect a new leader on a loaded machine (a killed
        // leader stalls writes for an election or two).
        o.request_timeout = Duration::from_secs(5);
        o
    }

    fn answers(&self, url: &str) -> bool {
        let mut options = self.options("health", "probe");
        options.endpoints = vec![url.to_owned()];
        // A runtime of its own on a thread of its own: the caller may be inside one already.
        std::thread::scope(|s| {
            s.spawn(|| {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return false;
                };
                runtime.block_on(async {
                    match crate::Fleet::connect(&options).await {
                        Ok(fleet) => fleet.connected().await,
                        Err(_) => false,
                    }
                })
            })
            .join()
            .unwrap_or(false)
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `etcd` on PATH, or the one `CERTKEEPER_TEST_ETCD` names. Panics naming the Debian
/// package when there is none: a test that needs etcd fails, it does not skip.
pub fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CERTKEEPER_TEST_ETCD") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("etcd not found on PATH: install the Debian package etcd-server (apt-get install -y etcd-server)")
        })
}

/// A free loopback port below the kernel's ephemeral range (32768 and up by default): a
/// stopped member comes back on its ports, and a port from that range may meanwhile be taken
/// as the local port of any outgoing connection. Ports are tried from a random start, in turn.
fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU64, Ordering};
    const FIRST: u64 = 20_000;
    const COUNT: u64 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
    if NEXT.load(Ordering::Relaxed) == u64::MAX {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        let start = (nanos ^ (u64::from(std::process::id()) << 7)) % COUNT;
        let _ = NEXT.compare_exchange(u64::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..COUNT {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        // Below 32,000: the cast cannot truncate.
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().expect("the port's address");
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    )
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn make_tls(dir: &Path) -> TestTls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "certkeeper etcd test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);

    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).expect("a leaf certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "etcd");
    let (client, client_key) = leaf(vec!["certkeeper".into()], "certkeeper");

    let other_key = KeyPair::generate().expect("a CA key");
    let mut other = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_issuer = rcgen::Issuer::from_params(&other, &other_key);
    let stranger_key = KeyPair::generate().expect("a leaf key");
    let stranger = CertificateParams::new(vec!["certkeeper".to_owned()])
        .expect("leaf params")
        .signed_by(&stranger_key, &other_issuer)
        .expect("a leaf certificate");

    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a TLS test file");
        path
    };
    write("server.pem", &server);
    write("server.key", &server_key);
    TestTls {
        ca_file: write("ca.pem", &ca_cert.pem()),
        cert_file: write("client.pem", &client),
        key_file: write("client.key", &client_key),
        stranger_cert_file: write("stranger.pem", &stranger.pem()),
        stranger_key_file: write("stranger.key", &stranger_key.serialize_pem()),
    }
}

/// SIGTERM, then SIGKILL if the member has not exited within 10 s; reaped either way.
fn terminate(child: &mut Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
