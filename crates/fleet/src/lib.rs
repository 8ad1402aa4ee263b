//! certkeeper's only door to etcd v3 for fleet mode: one client ([`Fleet`]) that elects one
//! issuer per shared certificate, publishes its generations with guarded transactions, keeps
//! each host's state under the host's lease and watches for new generations. Consensus,
//! leases and watches are etcd's; nothing here re-implements them.
//!
//! Keys, under `/certkeeper/<fleet>/certs/<cert>/`:
//!
//! | key | value |
//! |---|---|
//! | `current` | the current [`Generation`] |
//! | `generations/<serial>` | the last [`KEPT_GENERATIONS`] generations (serial zero-padded to 20 digits) |
//! | `order` | the [`OrderRecord`] in flight; it outlives its leader so the next one resumes it |
//! | `hosts/<host>` | each host's [`HostState`], on that host's lease |
//! | `leader` | the election: the leading host's id, on its leadership's lease |
//! | `canary/<serial>/<slot>` | the host holding a canary slot of a pending generation, on its lease ([`protocol`]) |
//! | `results/<serial>/<host>` | a host's durable result for a generation, counted by verdicts ([`protocol`]) |
//!
//! The [`protocol`] module builds the fleet's decisions on these: for one shared certificate
//! on one host, [`Fleet::decide`] says whether to issue, deploy as a canary or in the rollout,
//! revert, or wait; [`Fleet::publish_new`], [`Fleet::report_result`] and [`Fleet::judge`]
//! move a generation from `pending` to `good` or `bad`. Its module documentation has the
//! rules.
//!
//! Every value is readable by anyone with read access to etcd (and sits in clear on the
//! members' disks): a [`Generation`] holds the private key only sealed, as bytes the caller
//! sealed with the fleet key.

mod error;
mod lease;
pub mod protocol;
mod record;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp,
};
use tokio::sync::Mutex;

pub use error::{Error, Result, Revision};
pub use lease::Leadership;
use lease::Lease;
pub use record::{Generation, HostResult, HostState, OrderRecord, SealedKey, Verdict};
pub use watch::CurrentWatch;

/// How many generations of a certificate etcd keeps (the current one included), for a
/// revert to the previous one.
pub const KEPT_GENERATIONS: u64 = 3;

/// How to reach etcd and who this host is.
#[derive(Debug, Clone)]
pub struct Options {
    /// The fleet's name: keys live under `/certkeeper/<name>/`.
    pub name: String,
    /// This host's id in the fleet.
    pub host: String,
    /// `http://host:port` or `https://host:port` (https needs `ca_file`).
    pub endpoints: Vec<String>,
    /// The CA that signed the members' certificates (TLS to etcd).
    pub ca_file: Option<PathBuf>,
    /// This host's client certificate and key (mTLS), both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd authentication.
    pub username: Option<String>,
    pub password: Option<Password>,
    /// The TTL of this host's lease (host states) and of leaderships.
    pub lease_ttl: Duration,
    /// How long to wait for a link to a member.
    pub connect_timeout: Duration,
    /// How long any one request may take before it fails with [`Error::Timeout`].
    pub request_timeout: Duration,
    /// How a link that stays open finds out that its member is gone: `true`, HTTP/2 pings
    /// every 10 s (a dead member is noticed within one request timeout after a ping, but the
    /// process wakes for each); `false`, TCP keepalive probes, which the kernel sends
    /// without waking the process (a member that vanished without closing the connection is
    /// noticed only after the kernel's probes run out, minutes later; one that exits or
    /// restarts closes it and is noticed at once). The daemon's watches use `false`, so that
    /// an idle daemon sleeps.
    pub pings: bool,
}

impl Options {
    /// Options with the defaults: plain HTTP, no auth, a 15 s lease, 5 s timeouts.
    pub fn new(name: &str, host: &str, endpoints: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            host: host.to_owned(),
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            lease_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            pings: true,
        }
    }
}

/// An etcd password; its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// A connection to the fleet's etcd. Dropping it stops keeping this host's lease alive, so
/// its host states expire after `lease_ttl`, as a dead host's do.
pub struct Fleet {
    client: Client,
    prefix: String,
    host: String,
    lease_ttl: Duration,
    timeout: Duration,
    host_lease: Mutex<Option<Lease>>,
    /// What [`Fleet::prefetch`] read for each certificate, taken by its next decide.
    prefetched: std::sync::Mutex<std::collections::HashMap<String, protocol::Generations>>,
}

impl Fleet {
    /// Checks the options and sets up the link. Members are dialled lazily: this succeeds
    /// without a quorum (except with a username, which must log in first).
    pub async fn connect(options: &Options) -> Result<Self> {
        check_name("fleet name", &options.name)?;
        check_name("host id", &options.host)?;
        let tls = tls_options(options)?;
        if options.endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoints: list at least one",
            });
        }
        for endpoint in &options.endpoints {
            check_endpoint(endpoint, tls.is_some())?;
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_require_leader(true);
        connect = match options.pings {
            true => connect.with_keep_alive(Duration::from_secs(10), options.request_timeout),
            false => connect
                .with_keep_alive_while_idle(false)
                .with_tcp_keepalive(Duration::from_secs(60)),
        };
        if let Some(tls) = tls {
            connect = connect.with_tls(tls);
        }
        match (&options.username, &options.password) {
            (Some(user), Some(password)) => {
                connect = connect.with_user(user.clone(), password.0.clone());
            }
            (Some(_), None) => return Err(Error::Auth("a username needs a password")),
            (None, Some(_)) => return Err(Error::Auth("a password needs a username")),
            (None, None) => {}
        }
        let client = timed(
            "connect",
            options.request_timeout + options.connect_timeout,
            Client::connect(&options.endpoints, Some(connect)),
        )
        .await?;
        Ok(Self {
            client,
            prefix: format!("/certkeeper/{}/", options.name),
            host: options.host.clone(),
            lease_ttl: options.lease_ttl,
            timeout: options.request_timeout,
            host_lease: Mutex::new(None),
            prefetched: std::sync::Mutex::default(),
        })
    }

    /// This host's id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The key of `leaf` under certificate `cert` (`/certkeeper/<fleet>/certs/<cert>/<leaf>`).
    pub fn key(&self, cert: &str, leaf: &str) -> String {
        format!("{}certs/{cert}/{leaf}", self.prefix)
    }

    /// Whether etcd has a quorum and answers: a linearizable read within the request timeout.
    pub async fn connected(&self) -> bool {
        self.probe().await.is_ok()
    }

    /// [`Fleet::connected`] with the reason when not.
    pub async fn probe(&self) -> Result<()> {
        let key = format!("{}health", self.prefix);
        call("health read", self.timeout, &self.client, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
        Ok(())
    }

    /// Tries once to become `cert`'s issuer: a lease of `ttl` (kept alive in the background)
    /// and a transaction that creates the `leader` key only if it is absent. `None` when
    /// another host leads.
    pub async fn try_campaign(&self, cert: &str, ttl: Duration) -> Result<Option<Leadership>> {
        check_name("certificate name", cert)?;
        let key = self.key(cert, "leader");
        // A read first: a host that does not lead costs etcd no lease grant and revoke.
        if self.get_raw(&key).await?.is_some() {
            return Ok(None);
        }
        let lease = Lease::grant(&self.client, ttl, self.timeout).await?;
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.host.as_str(),
                Some(PutOptions::new().with_lease(lease.id())),
            )]);
        let resp = match self.txn("election", &txn).await {
            Ok(resp) => resp,
            Err(e) => {
                lease.revoke().await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            lease.revoke().await;
            return Ok(None);
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Some(Leadership::new(cert.to_owned(), key, revision, lease)))
    }

    /// Waits until this host leads `cert`: tries, and when another host leads, watches the
    /// `leader` key until it is deleted (resigned or its lease expired), then tries again.
    pub async fn campaign(&self, cert: &str, ttl: Duration) -> Result<Leadership> {
        loop {
            if let Some(leadership) = self.try_campaign(cert, ttl).await? {
                return Ok(leadership);
            }
            watch::until_deleted(&self.client, &self.key(cert, "leader"), ttl).await;
        }
    }

    /// The host that leads `cert`, if any.
    pub async fn leader(&self, cert: &str) -> Result<Option<String>> {
        check_name("certificate name", cert)?;
        let Some((value, _)) = self.get_raw(&self.key(cert, "leader")).await? else {
            return Ok(None);
        };
        Ok(Some(String::from_utf8_lossy(&value).into_owned()))
    }

    /// The current generation of `cert` and the revision it was read at (to pass to
    /// [`Fleet::publish`]).
    pub async fn current(&self, cert: &str) -> Result<Option<(Generation, i64)>> {
        check_name("certificate name", cert)?;
        self.get_json(&self.key(cert, "current")).await
    }

    /// A kept generation of `cert`.
    pub async fn generation(&self, cert: &str, serial: u64) -> Result<Option<Generation>> {
        check_name("certificate name", cert)?;
        Ok(self
            .get_json(&self.generation_key(cert, serial))
            .await?
            .map(|(g, _)| g))
    }

    /// Publishes `generation` as `cert`'s current one, in one transaction that succeeds only
    /// if `current` is still at `read` (the mod revision [`Fleet::current`] gave, or `None`
    /// when there was none) and the serial was never published: two publishers that read the
    /// same revision can never both succeed; the loser gets [`Error::Conflict`]. It also keeps
    /// the generation under `generations/` and drops those older than [`KEPT_GENERATIONS`].
    /// Returns the revision of the write.
    pub async fn publish(
        &self,
        cert: &str,
        generation: &Generation,
        read: Option<i64>,
    ) -> Result<i64> {
        self.publish_with(cert, generation, read, Vec::new(), Vec::new())
            .await
    }

    /// [`Fleet::publish`] with more guards and operations in the same transaction (the
    /// protocol's leadership guard, canary slot and clean-ups).
    async fn publish_with(
        &self,
        cert: &str,
        generation: &Generation,
        read: Option<i64>,
        guards: Vec<Compare>,
        extra: Vec<TxnOp>,
    ) -> Result<i64> {
        check_name("certificate name", cert)?;
        check_name("host id", &generation.issued_by)?;
        let current = self.key(cert, "current");
        let kept = self.generation_key(cert, generation.serial);
        let value = to_json(generation);
        let guard = match read {
            Some(rev) => Compare::mod_revision(current.as_str(), CompareOp::Equal, rev),
            None => Compare::version(current.as_str(), CompareOp::Equal, 0),
        };
        let mut ops = vec![
            TxnOp::put(current.as_str(), value.as_str(), None),
            TxnOp::put(kept.as_str(), value.as_str(), None),
        ];
        if generation.serial >= KEPT_GENERATIONS {
            let first_kept = self.generation_key(cert, generation.serial + 1 - KEPT_GENERATIONS);
            let from = self.generation_key(cert, 0);
            ops.push(TxnOp::delete(
                from.as_str(),
                Some(DeleteOptions::new().with_range(first_kept)),
            ));
        }
        ops.extend(extra);
        let mut compares = vec![guard, Compare::version(kept.as_str(), CompareOp::Equal, 0)];
        compares.extend(guards);
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self.txn("publish", &txn).await?;
        if !resp.succeeded() {
            return Err(Error::Conflict {
                key: current,
                expected: Revision(read),
            });
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Sets the verdict of generation `serial` of `cert`: on `current` too when it is the
    /// current one. Each write is guarded on the revision read, and retried a few times when
    /// another writer came between.
    pub async fn set_verdict(&self, cert: &str, serial: u64, verdict: Verdict) -> Result<()> {
        check_name("certificate name", cert)?;
        let current_key = self.key(cert, "current");
        let kept_key = self.generation_key(cert, serial);
        for _ in 0..VERDICT_ATTEMPTS {
            let (key, mut generation, rev, both) = self
                .verdict_target(cert, serial, &current_key, &kept_key)
                .await?;
            generation.verdict = verdict.clone();
            let kept = both.then_some(kept_key.as_str());
            if self.write_verdict(&key, kept, &generation, rev).await? {
                return Ok(());
            }
        }
        Err(Error::Conflict {
            key: current_key,
            expected: Revision(None),
        })
    }

    /// Writes this host's state for `cert` under this host's lease (granted on first use and
    /// kept alive while this [`Fleet`] lives; granted again if it was lost).
    pub async fn report(&self, cert: &str, state: &HostState) -> Result<()> {
        check_name("certificate name", cert)?;
        let lease_id = self.host_lease_id().await?;
        let key = self.key(cert, &format!("hosts/{}", self.host));
        let value = to_json(state);
        call("host report", self.timeout, &self.client, |mut c| {
            let (key, value) = (key.clone(), value.clone());
            let opts = PutOptions::new().with_lease(lease_id);
            async move { c.put(key, value, Some(opts)).await }
        })
        .await?;
        Ok(())
    }

    /// This host's lease: granted on first use, kept alive while this [`Fleet`] lives,
    /// granted again if it was lost.
    async fn host_lease_id(&self) -> Result<i64> {
        let mut slot = self.host_lease.lock().await;
        match slot.as_ref() {
            Some(lease) if lease.is_alive() => Ok(lease.id()),
            _ => {
                let lease = Lease::grant(&self.client, self.lease_ttl, self.timeout).await?;
                let id = lease.id();
                *slot = Some(lease);
                Ok(id)
            }
        }
    }

    /// Every live host's state for `cert`, by host id.
    pub async fn hosts(&self, cert: &str) -> Result<Vec<(String, HostState)>> {
        check_name("certificate name", cert)?;
        let prefix = self.key(cert, "hosts/");
        let resp = call("host states read", self.timeout, &self.client, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        let mut hosts = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let host = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            hosts.push((host, from_json(&key, kv.value())?));
        }
        Ok(hosts)
    }

    /// The order in flight for `cert`.
    pub async fn order(&self, cert: &str) -> Result<Option<OrderRecord>> {
        check_name("certificate name", cert)?;
        Ok(self
            .get_json(&self.key(cert, "order"))
            .await?
            .map(|(o, _)| o))
    }

    /// Records the order in flight (`order` placed with `issuer`; `account`: the sealed
    /// credentials of the account that placed it), only while `leadership` still holds the
    /// `leader` key.
    pub async fn set_order(
        &self,
        leadership: &Leadership,
        order: &str,
        issuer: &str,
        account: Option<SealedKey>,
    ) -> Result<()> {
        let record = OrderRecord {
            order: order.to_owned(),
            issuer: issuer.to_owned(),
            account,
            host: self.host.clone(),
            lease: format!("{:x}", leadership.lease_id()),
            at: time::OffsetDateTime::now_utc(),
        };
        let key = self.key(leadership.cert(), "order");
        let op = TxnOp::put(key.as_str(), to_json(&record), None);
        self.as_leader(leadership, op).await
    }

    /// Forgets the order in flight, only while `leadership` still holds the `leader` key.
    pub async fn clear_order(&self, leadership: &Leadership) -> Result<()> {
        let key = self.key(leadership.cert(), "order");
        self.as_leader(leadership, TxnOp::delete(key.as_str(), None))
            .await
    }

    async fn as_leader(&self, leadership: &Leadership, op: TxnOp) -> Result<()> {
        let not_leader = || Error::NotLeader {
            cert: leadership.cert().to_owned(),
        };
        if !leadership.is_current() {
            return Err(not_leader());
        }
        let txn = Txn::new().when([leadership.guard()]).and_then([op]);
        if self.txn("order write", &txn).await?.succeeded() {
            Ok(())
        } else {
            Err(not_leader())
        }
    }

    /// New generations of `cert` as they are published, after revision `after` (the one
    /// [`Fleet::current`] gave; `None`: from now). The watch resumes from the last revision
    /// it saw when the link to etcd breaks, so none is missed while etcd keeps its history.
    pub fn watch_current(&self, cert: &str, after: Option<i64>) -> Result<CurrentWatch> {
        check_name("certificate name", cert)?;
        Ok(CurrentWatch::start(
            self.client.clone(),
            self.key(cert, "current"),
            after,
            self.timeout,
        ))
    }

    /// Where generation `serial` of `cert` is read for a verdict: `current` when it is the
    /// current one (then the kept copy is written too: the flag), else its kept copy; with
    /// its revision.
    async fn verdict_target(
        &self,
        cert: &str,
        serial: u64,
        current_key: &str,
        kept_key: &str,
    ) -> Result<(String, Generation, i64, bool)> {
        match self.current(cert).await? {
            Some((g, rev)) if g.serial == serial => Ok((current_key.to_owned(), g, rev, true)),
            _ => match self.get_json::<Generation>(kept_key).await? {
                Some((g, rev)) => Ok((kept_key.to_owned(), g, rev, false)),
                None => Err(Error::UnknownGeneration {
                    cert: cert.to_owned(),
                    serial,
                }),
            },
        }
    }

    /// Writes `generation` (with its new verdict) at `key`, and at `kept` too when given, if
    /// `key` is still at revision `rev`; whether it was written.
    async fn write_verdict(
        &self,
        key: &str,
        kept: Option<&str>,
        generation: &Generation,
        rev: i64,
    ) -> Result<bool> {
        let value = to_json(generation);
        let mut ops = vec![TxnOp::put(key, value.as_str(), None)];
        if let Some(kept) = kept {
            ops.push(TxnOp::put(kept, value.as_str(), None));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then(ops);
        Ok(self.txn("verdict", &txn).await?.succeeded())
    }

    async fn txn(&self, op: &'static str, txn: &Txn) -> Result<etcd_client::TxnResponse> {
        call(op, self.timeout, &self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    fn generation_key(&self, cert: &str, serial: u64) -> String {
        self.key(cert, &format!("generations/{serial:020}"))
    }

    async fn get_raw(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let resp = call("read", self.timeout, &self.client, |mut c| {
            let key = key.to_owned();
            async move { c.get(key, None).await }
        })
        .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>> {
        match self.get_raw(key).await? {
            Some((value, rev)) => Ok(Some((from_json(key, &value)?, rev))),
            None => Ok(None),
        }
    }
}

/// Checks one path segment of a key: a fleet, certificate or host name.
pub fn check_name(what: &'static str, value: &str) -> Result<()> {
    let ok = (1..=128).contains(&value.len())
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            value: certkeeper_base::text::escape_control(value),
        })
    }
}

fn check_endpoint(endpoint: &str, tls: bool) -> Result<()> {
    let bad = |reason| Error::InvalidEndpoint {
        endpoint: certkeeper_base::text::escape_control(endpoint),
        reason,
    };
    let authority = if let Some(rest) = endpoint.strip_prefix("https://") {
        if !tls {
            return Err(bad(
                "https needs ca_file (the CA of the members' certificates)",
            ));
        }
        rest
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if tls {
            return Err(bad("ca_file is set: use https://"));
        }
        rest
    } else {
        return Err(bad("use http://host:port or https://host:port"));
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('@') {
        // The endpoint is shown in errors: credentials go in username/password_file.
        return Err(Error::InvalidEndpoint {
            endpoint: "(hidden: it holds credentials)".to_owned(),
            reason: "credentials in an endpoint are refused: use username and password_env or password_file",
        });
    }
    if authority.contains(['/', '?', '#']) || authority.is_empty() {
        return Err(bad(
            "use http://host:port or https://host:port, without a path",
        ));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(bad("a port is needed, as in https://10.0.0.1:2379")),
    }
}

fn tls_options(options: &Options) -> Result<Option<TlsOptions>> {
    let read = |what, path: &PathBuf| {
        certkeeper_base::fsutil::read_regular(path, certkeeper_base::fsutil::MAX_FILE).map_err(
            |source| Error::ReadFile {
                what,
                path: path.clone(),
                source,
            },
        )
    };
    let Some(ca_file) = &options.ca_file else {
        if options.cert_file.is_some() || options.key_file.is_some() {
            return Err(Error::Tls("cert_file and key_file need ca_file"));
        }
        return Ok(None);
    };
    let mut tls =
        TlsOptions::new().ca_certificate(Certificate::from_pem(read("CA file", ca_file)?));
    match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(Error::Tls("cert_file and key_file go together")),
    }
    Ok(Some(tls))
}

async fn timed<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Etcd { op, source }),
        Err(_) => Err(Error::Timeout { op, timeout }),
    }
}

/// One request on a clone of `client`, tried again while it failed before reaching a member
/// that could apply it (a member down, no leader yet), until `timeout` from the first try:
/// the balancer may hand a request to a member that is down while others answer. An attempt
/// that has no answer within [`ATTEMPT_TIMEOUT`] is tried again too (a connection to a
/// member that just died can hang rather than fail); a write whose answer was lost that way
/// may then find its own effect: a publish retried so comes back as a conflict, and its
/// caller re-reads the current generation (every write here is guarded or idempotent).
async fn call<T, F, Fut>(
    op: &'static str,
    timeout: Duration,
    client: &Client,
    mut f: F,
) -> Result<T>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = deadline.min(tokio::time::Instant::now() + ATTEMPT_TIMEOUT);
        match tokio::time::timeout_at(attempt, f(client.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if unreached(&e) && tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Err(source)) => return Err(Error::Etcd { op, source }),
            Err(_) if attempt < deadline => {}
            Err(_) => return Err(Error::Timeout { op, timeout }),
        }
    }
}

/// Whether etcd was out of reach: no member answered, or none had a leader.
fn unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            matches!(
                i32::from(status.code()),
                GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED
            )
        }
        _ => false,
    }
}

/// Whether a request failed on its way (before any member could have applied it, or on a
/// connection to a member that died): tried again, which every write here allows, being
/// guarded or idempotent.
fn unreached(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match i32::from(status.code()) {
            GRPC_UNAVAILABLE => {
                status.message().contains("connect error") || status.message().contains("no leader")
            }
            // The stream to a member broke under the request (the member was killed).
            GRPC_UNKNOWN => status.message().contains("transport error"),
            _ => false,
        },
        _ => false,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing these records cannot fail: plain structs with string keys.
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| Error::Record {
        key: key.to_owned(),
        source: Box::new(e),
    })
}

const VERDICT_ATTEMPTS: usize = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long one attempt of a request may go unanswered before it is tried again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// gRPC's UNKNOWN status code (what a broken stream gives).
const GRPC_UNKNOWN: i32 = 2;
/// gRPC's UNAVAILABLE status code.
const GRPC_UNAVAILABLE: i32 = 14;
/// gRPC's DEADLINE_EXCEEDED status code.
const GRPC_DEADLINE_EXCEEDED: i32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_key_segment() {
        for good in ["www", "web-pool", "a.b_c-1", &"x".repeat(128)] {
            assert!(check_name("host id", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "é",
            "a\nb",
            &"x".repeat(129),
        ] {
            let err = check_name("certificate name", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("certificate name \""),
                "{bad:?}: {err}"
            );
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn endpoints_are_checked_before_any_request() {
        assert!(check_endpoint("http://127.0.0.1:2379", false).is_ok());
        assert!(check_endpoint("https://etcd1.example:2379/", true).is_ok());
        assert!(check_endpoint("https://[::1]:2379", true).is_ok());
        let cases = [
            ("https://10.0.0.1:2379", false, "https needs ca_file"),
            ("http://10.0.0.1:2379", true, "ca_file is set: use https://"),
            (
                "10.0.0.1:2379",
                false,
                "use http://host:port or https://host:port",
            ),
            ("http://10.0.0.1", false, "a port is needed"),
            ("http://10.0.0.1:0", false, "a port is needed"),
            ("http://10.0.0.1:2379/v3", false, "without a path"),
            (
                "http://u:pw@10.0.0.1:2379",
                false,
                "credentials in an endpoint are refused",
            ),
        ];
        for (endpoint, tls, expected) in cases {
            let err = check_endpoint(endpoint, tls).unwrap_err().to_string();
            assert!(err.contains(expected), "{endpoint}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[tokio::test]
    async fn options_that_cannot_work_fail_at_connect() {
        let base = Options::new("web-pool", "web1", vec!["http://127.0.0.1:1".into()]);
        let mut o = base.clone();
        o.endpoints.clear();
        assert!(matches!(
            Fleet::connect(&o).await,
            Err(Error::InvalidEndpoint { .. })
        ));
        let mut o = base.clone();
        o.name = "web/pool".into();
        assert!(matches!(
            Fleet::connect(&o).await,
            Err(Error::InvalidName {
                what: "fleet name",
                ..
            })
        ));
        let mut o = base.clone();
        o.cert_file = Some("client.pem".into());
        let err = Fleet::connect(&o).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "etcd tls: cert_file and key_file need ca_file"
        );
        let mut o = base.clone();
        o.ca_file = Some("/nonexistent/ca.pem".into());
        let err = Fleet::connect(&o).await.err().unwrap();
        assert!(
            err.to_string()
                .starts_with("reading the etcd CA file /nonexistent/ca.pem: "),
            "{err}"
        );
        let mut o = base.clone();
        o.username = Some("certkeeper".into());
        let err = Fleet::connect(&o).await.err().unwrap();
        assert_eq!(err.to_string(), "etcd auth: a username needs a password");
        let mut o = base;
        o.password = Some(Password("s3cret".into()));
        assert!(!format!("{o:?}").contains("s3cret"));
    }
}
