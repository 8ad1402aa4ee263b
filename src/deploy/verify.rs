//! Checking what a reloaded service really does: [`served`] connects to it over TLS and waits
//! until it serves exactly the deployed leaf with a complete chain, and [`health`] runs its
//! health check command until it passes. Both retry until a deadline, since a service needs a
//! moment after a reload.
//!
//! The TLS client trusts nothing by itself: its verifier records the chain the server sent
//! and accepts it, and the chain is judged afterwards against the deployed certificate and
//! the configured [`TrustStore`]. The handshake signature is still checked against the served
//! leaf's key, so the server proves it holds that leaf's private key.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, Resumption};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::reload::{self, CommandError};
use crate::text::{escape_control, rfc3339, seconds, short_fingerprint};
use crate::x509::{Cert, TrustStore, examine_chain};

/// What [`served`] found once the service served the expected certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// How many connections it took (1 when the first one served it).
    pub attempts: u32,
    /// From the first connection to the successful one's end.
    pub elapsed: Duration,
    /// How many certificates the server sent, leaf included.
    pub chain_len: usize,
}

/// What [`health`] found once the health check passed.
#[derive(Clone, Debug)]
pub struct Healthy {
    /// How many runs it took (1 when the first one passed).
    pub attempts: u32,
    /// From the first run's start to the passing run's end.
    pub elapsed: Duration,
    /// What the passing run wrote (bounded and escaped, see [`reload::Ran::output`]).
    pub output: String,
}

/// Why a service did not pass verification.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Until the deadline, the service served another leaf, an incomplete chain, or nothing.
    #[error(
        "{server_name} at {connect} did not serve the expected certificate within {}: {last}",
        seconds(*timeout)
    )]
    NotServed {
        /// The address connected to (HOST:PORT).
        connect: String,
        /// The name sent as SNI.
        server_name: String,
        /// The limit.
        timeout: Duration,
        /// How many connections were tried.
        attempts: u32,
        /// What the last attempt found: the served leaf against the expected one, the chain's
        /// problems, or why the connection failed.
        last: String,
    },
    /// Until the deadline, the health check command did not exit 0 (or it cannot be run at
    /// all, which ends the wait at once).
    #[error("the health check did not pass within {}: {last}", seconds(*timeout))]
    Unhealthy {
        /// The limit.
        timeout: Duration,
        /// How many runs were tried.
        attempts: u32,
        /// The last run's failure, with its output.
        #[source]
        last: CommandError,
    },
}

/// Why one TLS connection did not yield a certificate chain. Each names the address and the
/// server name, as `{server_name} at {connect}: …`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The server name is neither a DNS name nor an IP address.
    InvalidServerName {
        /// The address.
        connect: String,
        /// The name as given.
        server_name: String,
    },
    /// The TCP connection failed (refused, unreachable, unknown host).
    Connect {
        /// The address.
        connect: String,
        /// The name.
        server_name: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The TCP connection was not established in time.
    ConnectTimedOut {
        /// The address.
        connect: String,
        /// The name.
        server_name: String,
        /// The limit (for connect and handshake together).
        timeout: Duration,
    },
    /// The TLS handshake failed: an alert, a protocol error, a bad handshake signature, or
    /// the connection closed.
    Handshake {
        /// The address.
        connect: String,
        /// The name.
        server_name: String,
        /// rustls's (or the system's) description.
        reason: String,
    },
    /// The TLS handshake did not complete in time.
    HandshakeTimedOut {
        /// The address.
        connect: String,
        /// The name.
        server_name: String,
        /// The limit (for connect and handshake together).
        timeout: Duration,
    },
    /// The handshake completed without a certificate.
    NoCertificate {
        /// The address.
        connect: String,
        /// The name.
        server_name: String,
    },
    /// A served certificate is not valid DER X.509.
    BadCertificate {
        /// The address.
        connect: String,
        /// The name.
        server_name: String,
        /// Its position in the served chain, 1 for the leaf.
        index: usize,
        /// What the parser said.
        reason: String,
    },
}

impl ProbeError {
    /// What went wrong, without the `{server_name} at {connect}` prefix.
    pub fn detail(&self) -> String {
        match self {
            ProbeError::InvalidServerName { .. } => {
                "the server name is not valid; give a DNS name or an IP address".into()
            }
            ProbeError::Connect { source, .. } => format!("cannot connect: {source}"),
            ProbeError::ConnectTimedOut { timeout, .. } => {
                format!("cannot connect: no answer within {}", seconds(*timeout))
            }
            ProbeError::Handshake { reason, .. } => format!("TLS handshake failed: {reason}"),
            ProbeError::HandshakeTimedOut { timeout, .. } => {
                format!("TLS handshake did not finish within {}", seconds(*timeout))
            }
            ProbeError::NoCertificate { .. } => "no certificate was served".into(),
            ProbeError::BadCertificate { index, reason, .. } => {
                format!("served certificate {index} cannot be parsed: {reason}")
            }
        }
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ProbeError::InvalidServerName {
            connect,
            server_name,
        }
        | ProbeError::Connect {
            connect,
            server_name,
            ..
        }
        | ProbeError::ConnectTimedOut {
            connect,
            server_name,
            ..
        }
        | ProbeError::Handshake {
            connect,
            server_name,
            ..
        }
        | ProbeError::HandshakeTimedOut {
            connect,
            server_name,
            ..
        }
        | ProbeError::NoCertificate {
            connect,
            server_name,
        }
        | ProbeError::BadCertificate {
            connect,
            server_name,
            ..
        }) = self;
        write!(f, "{server_name} at {connect}: {}", self.detail())
    }
}

/// Connects to `connect` (HOST:PORT) once, completes a TLS handshake with SNI `server_name`
/// (a DNS name; an IP address is accepted and sends no SNI), and returns the certificates the
/// server sent, leaf first, in the order sent. Connect and handshake together are limited to
/// `timeout`. Nothing about the chain is judged here except that the server holds the leaf's
/// key.
pub async fn probe(
    connect: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<Vec<Cert>, ProbeError> {
    probe_timed(connect, server_name, timeout)
        .await
        .map(|(chain, _)| chain)
}

/// [`probe`], also returning how long the TLS handshake took: from the TCP connection
/// established to the handshake complete (the TCP connect and the close are not counted).
pub async fn probe_timed(
    connect: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<(Vec<Cert>, Duration), ProbeError> {
    let target = || (connect.to_owned(), server_name.to_owned());
    let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
        let (connect, server_name) = target();
        ProbeError::InvalidServerName {
            connect,
            server_name,
        }
    })?;
    let handshake_err = |reason: String| {
        let (connect, server_name) = target();
        ProbeError::Handshake {
            connect,
            server_name,
            reason,
        }
    };
    let deadline = deadline_after(Instant::now(), timeout);

    let mut sock = match tokio::time::timeout_at(deadline, TcpStream::connect(connect)).await {
        Ok(Ok(sock)) => sock,
        Ok(Err(source)) => {
            let (connect, server_name) = target();
            return Err(ProbeError::Connect {
                connect,
                server_name,
                source,
            });
        }
        Err(_) => {
            let (connect, server_name) = target();
            return Err(ProbeError::ConnectTimedOut {
                connect,
                server_name,
                timeout,
            });
        }
    };
    let seen: Recorded = Arc::default();
    let config = client_config(seen.clone()).map_err(|e| handshake_err(e.to_string()))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| handshake_err(e.to_string()))?;
    let shaking = Instant::now();
    let handshake_time =
        match tokio::time::timeout_at(deadline, handshake(&mut sock, &mut conn)).await {
            Ok(Ok(())) => shaking.elapsed(),
            Ok(Err(reason)) => return Err(handshake_err(reason)),
            Err(_) => {
                let (connect, server_name) = target();
                return Err(ProbeError::HandshakeTimedOut {
                    connect,
                    server_name,
                    timeout,
                });
            }
        };
    // A polite close; the verdict does not depend on it, and it must not outlast the deadline.
    conn.send_close_notify();
    let _ = tokio::time::timeout_at(deadline, async {
        let _ = flush(&mut sock, &mut conn).await;
        let _ = sock.shutdown().await;
    })
    .await;

    let chain = seen
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or_default();
    if chain.is_empty() {
        let (connect, server_name) = target();
        return Err(ProbeError::NoCertificate {
            connect,
            server_name,
        });
    }
    chain
        .into_iter()
        .enumerate()
        .map(|(i, der)| {
            Cert::from_der(der.to_vec()).map_err(|reason| {
                let (connect, server_name) = target();
                ProbeError::BadCertificate {
                    connect,
                    server_name,
                    index: i + 1,
                    reason: escape_control(&reason.to_string()),
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|chain| (chain, handshake_time))
}

/// Probes `connect` with SNI `server_name` until the served leaf is `expected` (same SHA-256
/// fingerprint, seen on two connections in a row) and, with `trust`, the served chain passes [`examine_chain`] against it:
/// complete, in order, anchored in a trusted root. Without `trust` only the leaf must match
/// (a restored pair is checked for being served, not judged again). Each attempt is limited by the time left, with
/// pauses growing from [`FIRST_PAUSE`] to [`RETRY_PAUSE`] between attempts; at `timeout`
/// the last attempt's finding is reported.
pub async fn served(
    connect: &str,
    server_name: &str,
    expected: &Cert,
    trust: Option<&TrustStore>,
    timeout: Duration,
) -> Result<Served, VerifyError> {
    let started = Instant::now();
    let deadline = deadline_after(started, timeout);
    let mut attempts = 0;
    let last = loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match probe(connect, server_name, left).await {
            Err(e) => e.detail(),
            Ok(chain) => match judge(&chain, expected, trust) {
                None => {
                    // Right after a reload, a worker of the old generation may still accept
                    // a connection or two: the new leaf counts as served once a second,
                    // fresh connection sees it too.
                    tokio::time::sleep(CONFIRM_PAUSE).await;
                    let left = deadline.saturating_duration_since(Instant::now());
                    match probe(connect, server_name, left.max(CONFIRM_PAUSE)).await {
                        Ok(again) if judge(&again, expected, trust).is_none() => {
                            return Ok(Served {
                                attempts,
                                elapsed: started.elapsed(),
                                chain_len: chain.len(),
                            });
                        }
                        Ok(again) => judge(&again, expected, trust)
                            .map(|f| format!("{f} (on a second connection, after the first saw the expected leaf)"))
                            .unwrap_or_default(),
                        Err(e) => e.detail(),
                    }
                }
                Some(finding) => finding,
            },
        };
        // A reload usually lands within a few tens of milliseconds: look again soon, then
        // less often.
        let pause = (FIRST_PAUSE * attempts).min(RETRY_PAUSE);
        if deadline.saturating_duration_since(Instant::now()) <= pause {
            break last;
        }
        tokio::time::sleep(pause).await;
    };
    Err(VerifyError::NotServed {
        connect: connect.to_owned(),
        server_name: server_name.to_owned(),
        timeout,
        attempts,
        last,
    })
}

/// Runs the health check command `argv` (with `env` added) until it exits 0, each run limited
/// by the time left, with [`RETRY_PAUSE`] between runs. A command that cannot be run at all
/// (empty, missing program) fails at once: waiting would not change that.
pub async fn health(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Healthy, VerifyError> {
    let started = Instant::now();
    let deadline = deadline_after(started, timeout);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match reload::run(HEALTH_CHECK, argv, env, left).await {
            Ok(ran) => {
                return Ok(Healthy {
                    attempts,
                    elapsed: started.elapsed(),
                    output: ran.output,
                });
            }
            Err(e) => e,
        };
        let hopeless = matches!(
            last,
            CommandError::Empty { .. } | CommandError::Spawn { .. }
        );
        if hopeless || deadline.saturating_duration_since(Instant::now()) <= RETRY_PAUSE {
            return Err(VerifyError::Unhealthy {
                timeout,
                attempts,
                last,
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The pause between two attempts of [`health`], and the longest between two of [`served`].
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The pause after the first attempt of [`served`]; it grows by as much after each one.
pub const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The pause before the connection that confirms a served leaf.
const CONFIRM_PAUSE: Duration = Duration::from_millis(50);
/// The role word [`health`] passes to [`reload::run`].
const HEALTH_CHECK: &str = "health check";

/// Why a served chain is not the expected one, or `None` when it is.
fn judge(chain: &[Cert], expected: &Cert, trust: Option<&TrustStore>) -> Option<String> {
    let leaf = chain.first()?;
    if leaf.fingerprint != expected.fingerprint {
        return Some(format!(
            "served leaf sha256 {}… \"{}\" notAfter {}, expected sha256 {}… \"{}\"",
            short_fingerprint(&leaf.fingerprint),
            escape_control(&leaf.subject),
            rfc3339(leaf.not_after),
            short_fingerprint(&expected.fingerprint),
            escape_control(&expected.subject),
        ));
    }
    let (_, problems) = examine_chain(chain, trust?, OffsetDateTime::now_utc());
    if problems.is_empty() {
        return None;
    }
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Some(format!(
        "the served chain has problems: {}",
        escape_control(&problems.join("; "))
    ))
}

/// `start + timeout`, or a far future when that does not fit.
fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400))
}

/// Where the verifier puts the chain the server presented.
type Recorded = Arc<Mutex<Option<Vec<CertificateDer<'static>>>>>;

/// A client configuration whose verifier records and accepts any chain. Resumption is off:
/// a resumed TLS 1.3 session presents no certificate.
fn client_config(seen: Recorded) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = Recorder {
        seen,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Records the presented chain and accepts it; checks handshake signatures for real.
#[derive(Debug)]
struct Recorder {
    seen: Recorded,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(chain);
        }
        // Trust is judged afterwards against the deployed certificate and the trust store.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Drives the client side of a handshake over `sock` until it completes.
async fn handshake(sock: &mut TcpStream, conn: &mut ClientConnection) -> Result<(), String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flush(sock, conn).await?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            conn.read_tls(&mut data).map_err(|e| e.to_string())?;
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert telling the server why; send it if we can.
                let _ = flush(sock, conn).await;
                return Err(e.to_string());
            }
        }
    }
}

/// Sends whatever TLS records rustls has queued.
async fn flush(sock: &mut TcpStream, conn: &mut ClientConnection) -> Result<(), String> {
    while conn.wants_write() {
        let mut out = Vec::new();
        conn.write_tls(&mut out).map_err(|e| e.to_string())?;
        sock.write_all(&out).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use super::*;

    /// A root, an intermediate signed by it, and leaves signed by the intermediate.
    struct Pki {
        root: CertifiedIssuer<'static, KeyPair>,
        intermediate: CertifiedIssuer<'static, KeyPair>,
    }

    /// A leaf's DER, its key, and the intermediate's DER.
    struct Leaf {
        der: Vec<u8>,
        key: Vec<u8>,
        intermediate: Vec<u8>,
    }

    impl Pki {
        fn new() -> Pki {
            let root = CertifiedIssuer::self_signed(ca("Test Root"), key()).unwrap();
            let intermediate =
                CertifiedIssuer::signed_by(ca("Test Intermediate"), key(), &root).unwrap();
            Pki { root, intermediate }
        }

        fn leaf(&self, name: &str) -> Leaf {
            let key = key();
            let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            params.is_ca = IsCa::ExplicitNoCa;
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &self.intermediate).unwrap();
            Leaf {
                der: cert.der().to_vec(),
                key: key.serialize_der(),
                intermediate: self.intermediate.der().to_vec(),
            }
        }

        fn trust(&self) -> TrustStore {
            let mut trust = TrustStore::new();
            trust.add(Cert::from_der(self.root.der().to_vec()).unwrap());
            trust
        }
    }

    impl Leaf {
        fn cert(&self) -> Cert {
            Cert::from_der(self.der.clone()).unwrap()
        }

        /// A server configuration sending leaf + intermediate, or the leaf alone.
        fn config(&self, with_intermediate: bool) -> Arc<ServerConfig> {
            let mut chain = vec![CertificateDer::from(self.der.clone())];
            if with_intermediate {
                chain.push(CertificateDer::from(self.intermediate.clone()));
            }
            let key = PrivateKeyDer::Pkcs8(self.key.clone().into());
            let config = ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            Arc::new(config)
        }
    }

    fn key() -> KeyPair {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn ca(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    /// A TLS server on a loopback port, serving connections one at a time with the
    /// configuration `pick` returns for the time since it started. Stops when dropped.
    struct Server {
        addr: SocketAddr,
        sni: Arc<Mutex<Vec<Option<String>>>>,
        stop: Arc<AtomicBool>,
    }

    impl Server {
        fn start(pick: impl Fn(Duration) -> Arc<ServerConfig> + Send + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let sni = Arc::<Mutex<Vec<Option<String>>>>::default();
            let stop = Arc::new(AtomicBool::new(false));
            let (sni2, stop2) = (sni.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                for stream in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let mut tls = StreamOwned::new(
                        ServerConnection::new(pick(started.elapsed())).unwrap(),
                        stream,
                    );
                    while tls.conn.is_handshaking() {
                        if tls.conn.complete_io(&mut tls.sock).is_err() {
                            break;
                        }
                    }
                    sni2.lock()
                        .unwrap()
                        .push(tls.conn.server_name().map(str::to_owned));
                    // Until the client's close_notify (or its timeout).
                    let _ = tls.read(&mut [0u8; 64]);
                }
            });
            Server { addr, sni, stop }
        }

        fn connect(&self) -> String {
            self.addr.to_string()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept.
            let _ = std::net::TcpStream::connect(self.addr);
        }
    }

    fn setup() -> Pki {
        crate::acme::install_crypto_provider();
        Pki::new()
    }

    #[tokio::test]
    async fn the_expected_leaf_with_its_chain_passes() {
        let pki = setup();
        let leaf = pki.leaf("www.test");
        let config = leaf.config(true);
        let server = Server::start(move |_| config.clone());
        let served = served(
            &server.connect(),
            "www.test",
            &leaf.cert(),
            Some(&pki.trust()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(served.attempts, 1);
        assert_eq!(served.chain_len, 2);
    }

    #[tokio::test]
    async fn probe_returns_the_chain_as_sent_and_sends_sni() {
        let pki = setup();
        let leaf = pki.leaf("www.test");
        let config = leaf.config(true);
        let server = Server::start(move |_| config.clone());
        let chain = probe(&server.connect(), "www.test", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].fingerprint, leaf.cert().fingerprint);
        assert_eq!(chain[1].der, leaf.intermediate);
        // An IP literal is a valid server name too; rustls sends no SNI for it.
        probe(&server.connect(), "127.0.0.1", Duration::from_secs(5))
            .await
            .unwrap();
        // The server records a name once its side of the handshake is done, which may be
        // just after the client's.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while server.sni.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            *server.sni.lock().unwrap(),
            [Some("www.test".to_owned()), None]
        );
    }

    #[tokio::test]
    async fn another_leaf_is_not_served_and_both_are_named() {
        let pki = setup();
        let old = pki.leaf("old.test");
        let new = pki.leaf("new.test");
        let config = old.config(true);
        let server = Server::start(move |_| config.clone());
        let started = std::time::Instant::now();
        let err = served(
            &server.connect(),
            "www.test",
            &new.cert(),
            Some(&pki.trust()),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        // Gave up at its deadline (1 s), with a margin for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(10));
        let VerifyError::NotServed { attempts, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(*attempts > 1, "{attempts}");
        let text = err.to_string();
        let (old, new) = (old.cert(), new.cert());
        assert_eq!(
            text,
            format!(
                "www.test at {} did not serve the expected certificate within 1s: \
                 served leaf sha256 {}… \"CN=old.test\" notAfter {}, \
                 expected sha256 {}… \"CN=new.test\"",
                server.connect(),
                &old.fingerprint[..16],
                rfc3339(old.not_after),
                &new.fingerprint[..16],
            )
        );
    }

    #[tokio::test]
    async fn a_chain_without_its_intermediate_is_not_served() {
        let pki = setup();
        let leaf = pki.leaf("www.test");
        let config = leaf.config(false);
        let server = Server::start(move |_| config.clone());
        let err = served(
            &server.connect(),
            "www.test",
            &leaf.cert(),
            Some(&pki.trust()),
            Duration::from_millis(600),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().ends_with(
                "the served chain has problems: chain incomplete: missing intermediate \
                 \"Test Intermediate\" (not in the file, not a trusted root)"
            ),
            "{err}"
        );
        // Without roots to judge against (a restored pair), the leaf alone decides.
        let ok = served(
            &server.connect(),
            "www.test",
            &leaf.cert(),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(ok.chain_len, 1);
    }

    #[tokio::test]
    async fn nothing_listening_reports_the_connect_error() {
        let pki = setup();
        let leaf = pki.leaf("www.test");
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = served(
            &addr.to_string(),
            "www.test",
            &leaf.cert(),
            Some(&pki.trust()),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        let VerifyError::NotServed { last, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(last.starts_with("cannot connect: "), "{last}");
        assert!(
            err.to_string().starts_with(&format!(
                "www.test at {addr} did not serve the expected certificate within 0.5s: \
                 cannot connect: "
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_switch_after_a_second_is_waited_for() {
        let pki = setup();
        let old = pki.leaf("www.test");
        let new = pki.leaf("www.test");
        let (old_config, new_config) = (old.config(true), new.config(true));
        let server = Server::start(move |since| {
            if since < Duration::from_secs(1) {
                old_config.clone()
            } else {
                new_config.clone()
            }
        });
        let served = served(
            &server.connect(),
            "www.test",
            &new.cert(),
            Some(&pki.trust()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(served.attempts > 1, "{served:?}");
        assert!(served.elapsed >= Duration::from_millis(900), "{served:?}");
    }

    #[tokio::test]
    async fn probe_errors_name_the_target() {
        crate::acme::install_crypto_provider();
        // Not TLS at all.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let err = probe(&addr.to_string(), "www.test", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Handshake { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("www.test at {addr}: TLS handshake failed: ")),
            "{err}"
        );
        // Silent after accepting: the handshake times out.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err = probe(&addr.to_string(), "www.test", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("www.test at {addr}: TLS handshake did not finish within 0.3s")
        );
        drop(listener);
        let err = probe("127.0.0.1:1", "bad name!", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad name! at 127.0.0.1:1: the server name is not valid; \
             give a DNS name or an IP address"
        );
    }

    fn script(dir: &std::path::Path, body: &str) -> Vec<String> {
        let path = dir.join("health.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![path.display().to_string()]
    }

    #[tokio::test]
    async fn health_retries_until_the_check_passes() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let argv = script(
            dir.path(),
            &format!(
                "n=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {c}\n\
                 [ $n -ge 3 ] || {{ echo \"not ready $n\"; exit 1; }}\necho ok",
                c = count.display()
            ),
        );
        let healthy = health(&argv, &[], Duration::from_secs(5)).await.unwrap();
        assert_eq!(healthy.attempts, 3);
        assert_eq!(healthy.output, "ok\n");
    }

    #[tokio::test]
    async fn health_gives_up_at_the_deadline_with_the_last_output() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(dir.path(), "echo 'upstream not ready' >&2\nexit 7");
        let started = std::time::Instant::now();
        let err = health(&argv, &[], Duration::from_millis(700))
            .await
            .unwrap_err();
        // Gave up at its deadline (0.7 s, the script fails for ever), with a wide margin.
        assert!(started.elapsed() < Duration::from_secs(7));
        let VerifyError::Unhealthy { attempts, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(*attempts > 1);
        assert_eq!(
            err.to_string(),
            format!(
                "the health check did not pass within 0.7s: health check command {} \
                 exited with status 7\n\
                 ---------- output ----------\n\
                 upstream not ready\n\
                 ----------------------------",
                argv[0]
            )
        );
    }

    #[tokio::test]
    async fn health_fails_at_once_when_the_command_cannot_run() {
        let argv = vec!["/nonexistent/certkeeper-health".to_owned()];
        let err = health(&argv, &[], Duration::from_secs(30))
            .await
            .unwrap_err();
        let VerifyError::Unhealthy {
            attempts: 1, last, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert!(matches!(last, CommandError::Spawn { .. }), "{last:?}");
    }
}
