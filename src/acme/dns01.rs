//! DNS-01, independent of any provider: the record name, CNAME following, publishing through a
//! [`DnsProvider`], the propagation check, and removal of every record created.
//!
//! - The name is `_acme-challenge.<bare domain>.`, lower-case with the trailing dot. An apex
//!   and its wildcard share it (two values under one name); the bare domain comes from the
//!   authorization's identifier, never from a name with `*.` in it.
//! - A CNAME on that name is followed (via the configured resolvers, else the system's) and
//!   the record is created where it points, so credentials can be limited to a delegated zone.
//! - Before the CA is told, the exact value must be visible at every configured resolver, or
//!   else at every authoritative server of the record's zone. Lookups bypass any cache.
//! - [`Published`] owns what was created: [`Published::cleanup`] removes it on every normal
//!   path, and when the future that holds it is dropped (cancellation, panic) its `Drop`
//!   spawns the removal on the runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certkeeper_dns::{DnsProvider, RecordHandle, TxtRecord};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::Notify;

use crate::config::DnsSettings;

/// Why publishing, checking or removing a challenge record failed. The provider, zone and
/// record are named here; the provider's own error says what its API answered.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider could not create the record.
    #[error("dns provider {provider} could not create TXT {fqdn}: {source}")]
    Present {
        /// The provider's config key.
        provider: String,
        /// The record's name.
        fqdn: String,
        /// What the provider said.
        #[source]
        source: certkeeper_dns::Error,
    },
    /// The provider could not remove a record it created.
    #[error("dns provider {provider} could not remove TXT {fqdn}{}: {source}", zone_suffix(.zone))]
    Cleanup {
        /// The provider's config key.
        provider: String,
        /// The record's name.
        fqdn: String,
        /// The zone, when the provider resolved one.
        zone: Option<String>,
        /// What the provider said.
        #[source]
        source: certkeeper_dns::Error,
    },
    /// The record did not become visible in time.
    #[error(
        "TXT {fqdn} with the challenge value was not visible at {} within {} (last answer: {last}); check that dns provider {provider} publishes to the zone these servers answer for, or raise dns.propagation_timeout",
        list(.servers),
        crate::text::seconds(*.waited)
    )]
    PropagationTimeout {
        /// The provider's config key.
        provider: String,
        /// The record's name.
        fqdn: String,
        /// The servers asked.
        servers: Vec<SocketAddr>,
        /// How long it waited.
        waited: Duration,
        /// What the slowest server answered last.
        last: String,
    },
    /// A lookup needed to place or check the record failed.
    #[error("dns lookup of {name} ({kind}) failed: {reason}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// The record type.
        kind: &'static str,
        /// The resolver's error.
        reason: String,
    },
    /// No authoritative server could be found for the record's zone.
    #[error(
        "no authoritative name server found for {fqdn}; set dns.resolvers to the servers that must see the record"
    )]
    NoAuthoritative {
        /// The record's name.
        fqdn: String,
    },
}

/// The TXT record name for an identifier: `_acme-challenge.<bare domain>.`, lower-case.
/// A leading `*.` (wildcard) is removed: the apex and its wildcard share the name.
pub fn record_name(identifier: &str) -> String {
    let bare = identifier.strip_prefix("*.").unwrap_or(identifier);
    let bare = bare.trim_end_matches('.').to_ascii_lowercase();
    format!("_acme-challenge.{bare}.")
}

/// One challenge to publish: the authorization's bare domain and the record value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The bare domain (no `*.`).
    pub domain: String,
    /// The DNS-01 value (base64url SHA-256 of the key authorization).
    pub value: String,
}

/// Records created through one provider, removed by [`Published::cleanup`] or, if that never
/// runs, by `Drop`.
pub struct Published {
    provider: Arc<dyn DnsProvider>,
    provider_name: String,
    handles: Vec<RecordHandle>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("provider", &self.provider_name)
            .field("records", &self.handles.len())
            .finish()
    }
}

impl Published {
    /// The records as created (after CNAME following).
    pub fn records(&self) -> Vec<TxtRecord> {
        self.handles.iter().map(|h| h.record.clone()).collect()
    }

    /// Removes every record created. Returns what could not be removed (already logged).
    pub async fn cleanup(mut self) -> Vec<Error> {
        let handles = std::mem::take(&mut self.handles);
        remove_all(&*self.provider, &self.provider_name, handles).await
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        if self.handles.is_empty() {
            return;
        }
        let handles = std::mem::take(&mut self.handles);
        let provider = self.provider.clone();
        let name = self.provider_name.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                tracing::info!(provider = %name, records = handles.len(),
                    "Removing challenge records of an interrupted order.");
                CLEANUPS.fetch_add(1, Ordering::SeqCst);
                rt.spawn(async move {
                    remove_all(&*provider, &name, handles).await;
                    CLEANUPS.fetch_sub(1, Ordering::SeqCst);
                    CLEANED.notify_waiters();
                });
            }
            Err(_) => {
                for h in &handles {
                    tracing::warn!(provider = %name, fqdn = %h.record.fqdn,
                        "Challenge record left behind: no runtime to remove it.");
                }
            }
        }
    }
}

/// Removals spawned by `Published`'s drop that have not finished.
static CLEANUPS: AtomicUsize = AtomicUsize::new(0);
/// Woken when one of them finishes.
static CLEANED: Notify = Notify::const_new();

/// Waits, at most `bound`, until the challenge records of interrupted orders are removed
/// (the removals their drop started); returns whether all were. A stopping daemon calls it
/// before it exits, so that no record it created outlives it.
pub async fn settle(bound: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let notified = CLEANED.notified();
        tokio::pin!(notified);
        // Registered before the count is read, so a removal finishing in between still wakes
        // this waiter.
        notified.as_mut().enable();
        if CLEANUPS.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let left = CLEANUPS.load(Ordering::SeqCst);
            tracing::warn!(
                orders = left,
                "Gave up waiting for the removal of challenge records."
            );
            return left == 0;
        }
    }
}

/// Publishes every challenge through `provider`, after following CNAMEs. On failure, what was
/// already created is removed before the error returns.
pub async fn publish(
    provider: Arc<dyn DnsProvider>,
    provider_name: &str,
    challenges: &[Challenge],
    settings: &DnsSettings,
) -> Result<Published, Error> {
    let mut published = Published {
        provider: provider.clone(),
        provider_name: provider_name.to_owned(),
        handles: Vec::with_capacity(challenges.len()),
    };
    let lookup = LookupServers::new(&settings.resolvers)?;
    for ch in challenges {
        let name = record_name(&ch.domain);
        let fqdn = match follow_cname(&lookup, &name).await {
            Ok(fqdn) => fqdn,
            Err(e) => {
                published.cleanup().await;
                return Err(e);
            }
        };
        if fqdn != name {
            tracing::info!(from = %name, to = %fqdn, "Following CNAME for the challenge record.");
        }
        let record = TxtRecord {
            fqdn: fqdn.clone(),
            value: ch.value.clone(),
        };
        tracing::debug!(provider = %provider_name, fqdn = %fqdn, "Creating challenge record.");
        match provider.present(&record).await {
            Ok(handle) => published.handles.push(handle),
            Err(source) => {
                published.cleanup().await;
                return Err(Error::Present {
                    provider: provider_name.to_owned(),
                    fqdn,
                    source,
                });
            }
        }
    }
    Ok(published)
}

/// Waits until every record is visible with its exact value at every configured resolver
/// (or, with none configured, at the authoritative servers of its zone).
pub async fn wait_visible(
    provider_name: &str,
    records: &[TxtRecord],
    settings: &DnsSettings,
) -> Result<(), Error> {
    wait_visible_via(provider_name, records, settings, None).await
}

/// [`wait_visible`], finding authoritative servers through `authority` (the system resolver
/// and port 53 when `None`).
async fn wait_visible_via(
    provider_name: &str,
    records: &[TxtRecord],
    settings: &DnsSettings,
    authority: Option<Authority>,
) -> Result<(), Error> {
    let start = Instant::now();
    let deadline = start + settings.propagation_timeout;
    let authority = match (settings.resolvers.is_empty(), authority) {
        (false, _) => None,
        (true, Some(a)) => Some(a),
        (true, None) => Some(Authority::system()?),
    };
    for record in records {
        let servers = match &authority {
            None => settings.resolvers.clone(),
            Some(a) => a.servers_for(&record.fqdn).await?,
        };
        let resolvers: Vec<(SocketAddr, TokioResolver)> = servers
            .iter()
            .map(|s| resolver_for(&[*s]).map(|r| (*s, r)))
            .collect::<Result<_, _>>()?;
        tracing::info!(fqdn = %record.fqdn, servers = %list(&servers),
            timeout = %crate::text::seconds(settings.propagation_timeout), "Waiting for the challenge record to propagate.");
        let mut pending: Vec<usize> = (0..resolvers.len()).collect();
        let mut last = String::from("none yet");
        loop {
            let mut still = Vec::new();
            for &i in &pending {
                let (server, resolver) = &resolvers[i];
                let seen = txt_values(resolver, &record.fqdn).await;
                match &seen {
                    Ok(values) if values.iter().any(|v| v == &record.value) => {}
                    Ok(values) => {
                        last = format!("{server}: {} other value(s)", values.len());
                        tracing::debug!(fqdn = %record.fqdn, %server, values = values.len(),
                            "Challenge value not visible yet.");
                        still.push(i);
                    }
                    Err(e) => {
                        last = format!("{server}: {e}");
                        tracing::debug!(fqdn = %record.fqdn, %server, error = %e,
                            "Challenge record not visible yet.");
                        still.push(i);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                tracing::info!(fqdn = %record.fqdn, elapsed = %crate::text::seconds(start.elapsed()),
                    "Challenge record is visible.");
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::PropagationTimeout {
                    provider: provider_name.to_owned(),
                    fqdn: record.fqdn.clone(),
                    servers: pending.iter().map(|&i| resolvers[i].0).collect(),
                    waited: start.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(settings.poll_interval.min(deadline - now)).await;
        }
    }
    Ok(())
}

/// The TXT values at `fqdn` as each server that must see it answers now: every configured
/// resolver or, with none configured, every authoritative server of its zone. Each server's
/// answer is its values, or why it gave none (a timeout, a refusal).
pub async fn txt_seen(
    fqdn: &str,
    settings: &DnsSettings,
) -> Result<Vec<(SocketAddr, Result<Vec<String>, String>)>, Error> {
    let servers = if settings.resolvers.is_empty() {
        Authority::system()?.servers_for(fqdn).await?
    } else {
        settings.resolvers.clone()
    };
    let mut out = Vec::with_capacity(servers.len());
    for server in servers {
        let resolver = resolver_for(&[server])?;
        let seen = txt_values(&resolver, fqdn).await.map_err(|e| e.to_string());
        out.push((server, seen));
    }
    Ok(out)
}

/// Where CNAME lookups go: the configured resolvers, else the system's.
struct LookupServers(TokioResolver);

impl LookupServers {
    fn new(resolvers: &[SocketAddr]) -> Result<Self, Error> {
        if !resolvers.is_empty() {
            return resolver_for(resolvers).map(LookupServers);
        }
        system_resolver().map(LookupServers)
    }
}

/// Follows CNAMEs from `name` (at most [`MAX_CNAME_HOPS`]) and returns the final name,
/// lower-case with the trailing dot.
async fn follow_cname(lookup: &LookupServers, name: &str) -> Result<String, Error> {
    let mut current = name.to_owned();
    for _ in 0..MAX_CNAME_HOPS {
        let answer = match lookup.0.lookup(current.as_str(), RecordType::CNAME).await {
            Ok(answer) => answer,
            Err(e) if is_no_records(&e) => return Ok(current),
            Err(e) => {
                return Err(Error::Lookup {
                    name: current,
                    kind: "CNAME",
                    reason: e.to_string(),
                });
            }
        };
        let target = answer.answers().iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name.to_ascii().eq_ignore_ascii_case(&current) => {
                Some(c.0.to_ascii())
            }
            _ => None,
        });
        match target {
            Some(t) => current = fqdn(&t),
            None => return Ok(current),
        }
    }
    Err(Error::Lookup {
        name: name.to_owned(),
        kind: "CNAME",
        reason: format!("more than {MAX_CNAME_HOPS} CNAMEs in a row"),
    })
}

/// Where the authoritative servers of a record's zone are found: the resolver that answers
/// the NS and address lookups, and the port those servers answer on.
struct Authority {
    finder: TokioResolver,
    port: u16,
}

impl Authority {
    /// The system's resolver, and servers on port 53.
    fn system() -> Result<Authority, Error> {
        Ok(Authority {
            finder: system_resolver()?,
            port: 53,
        })
    }

    /// The authoritative servers of the zone that holds `fqdn`: the closest enclosing name
    /// with NS records, each server's addresses. Names of servers that do not resolve are
    /// skipped; a zone none of whose servers resolve is an error.
    async fn servers_for(&self, fqdn: &str) -> Result<Vec<SocketAddr>, Error> {
        let labels: Vec<&str> = fqdn.trim_end_matches('.').split('.').collect();
        for i in 0..labels.len() {
            let zone = format!("{}.", labels[i..].join("."));
            let Ok(ns) = self.finder.lookup(zone.as_str(), RecordType::NS).await else {
                continue;
            };
            let hosts: Vec<String> = ns
                .answers()
                .iter()
                .filter(|r| r.name.to_ascii().eq_ignore_ascii_case(&zone))
                .filter_map(|r| match &r.data {
                    RData::NS(n) => Some(n.0.to_ascii()),
                    _ => None,
                })
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let mut servers = Vec::new();
            for host in &hosts {
                match self.finder.lookup_ip(host.as_str()).await {
                    Ok(ips) => servers.extend(ips.iter().map(|ip| SocketAddr::new(ip, self.port))),
                    Err(e) => tracing::debug!(%host, error = %e, "Cannot resolve name server."),
                }
            }
            if servers.is_empty() {
                break;
            }
            servers.sort();
            servers.dedup();
            tracing::debug!(%zone, servers = %list(&servers), "Authoritative servers found.");
            return Ok(servers);
        }
        Err(Error::NoAuthoritative {
            fqdn: fqdn.to_owned(),
        })
    }
}

/// The TXT values at `name` as one server answers now (CNAMEs followed by the resolver); no
/// such name, or no TXT record there, is no values. The error is the resolver's own, kept
/// whole (a timeout, a refusal), for the propagation check's last word.
async fn txt_values(resolver: &TokioResolver, name: &str) -> Result<Vec<String>, NetError> {
    match resolver.lookup(name, RecordType::TXT).await {
        Ok(answer) => Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|chunk| String::from_utf8_lossy(chunk))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) if is_no_records(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A resolver asking exactly `servers` (UDP, then TCP for truncated answers), without cache,
/// hosts file or search domains.
fn resolver_for(servers: &[SocketAddr]) -> Result<TokioResolver, Error> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            ns
        })
        .collect();
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(uncached())
    .build()
    .map_err(|e| Error::Lookup {
        name: list(servers),
        kind: "resolver setup",
        reason: e.to_string(),
    })
}

fn system_resolver() -> Result<TokioResolver, Error> {
    let err = |e: NetError| Error::Lookup {
        name: "the system resolver configuration".into(),
        kind: "resolver setup",
        reason: e.to_string(),
    };
    Resolver::builder_tokio()
        .map_err(err)?
        .with_options(uncached())
        .build()
        .map_err(err)
}

fn uncached() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = LOOKUP_TIMEOUT;
    opts.attempts = 1;
    opts.use_hosts_file = ResolveHosts::Never;
    opts
}

fn is_no_records(e: &NetError) -> bool {
    matches!(e, NetError::Dns(DnsError::NoRecordsFound(_)))
}

fn fqdn(name: &str) -> String {
    let mut s = name.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn list(servers: &[SocketAddr]) -> String {
    servers
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn zone_suffix(zone: &Option<String>) -> String {
    zone.as_ref()
        .map(|z| format!(" in zone {z}"))
        .unwrap_or_default()
}

async fn remove_all(
    provider: &dyn DnsProvider,
    provider_name: &str,
    handles: Vec<RecordHandle>,
) -> Vec<Error> {
    let mut errors = Vec::new();
    for handle in handles {
        match provider.cleanup(&handle).await {
            Ok(()) => {
                tracing::debug!(provider = %provider_name, fqdn = %handle.record.fqdn,
                    "Removed challenge record.")
            }
            Err(source) => {
                let e = Error::Cleanup {
                    provider: provider_name.to_owned(),
                    fqdn: handle.record.fqdn.clone(),
                    zone: handle.zone.clone(),
                    source,
                };
                tracing::warn!(error = %e, "Challenge record left behind.");
                errors.push(e);
            }
        }
    }
    errors
}

/// CNAMEs followed at most, so that a loop ends.
const MAX_CNAME_HOPS: usize = 8;
/// How long one DNS query may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, NS, TXT};
    use hickory_resolver::proto::rr::{Name, Record};
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    /// A loopback UDP name server for one zone, `example.test.`: NS `ns1` (127.0.0.1) and
    /// `ns2` (no address), and the TXT values at `_acme-challenge.www.example.test.` that the
    /// test sets. Every other question gets an empty answer. It stands in for both the
    /// resolver that finds the zone's servers and the authoritative server itself.
    struct FakeZone {
        addr: SocketAddr,
        txt: Arc<Mutex<Vec<String>>>,
        asked: Arc<Mutex<Vec<String>>>,
    }

    const TXT_NAME: &str = "_acme-challenge.www.example.test.";

    impl FakeZone {
        async fn start() -> FakeZone {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let txt = Arc::new(Mutex::new(Vec::<String>::new()));
            let asked = Arc::new(Mutex::new(Vec::<String>::new()));
            let (t, a) = (Arc::clone(&txt), Arc::clone(&asked));
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let Some(q) = query.queries.first().cloned() else {
                        continue;
                    };
                    let name = q.name().to_ascii().to_ascii_lowercase();
                    a.lock()
                        .unwrap()
                        .push(format!("{} {}", q.query_type(), name));
                    let mut answer = Message::response(query.metadata.id, OpCode::Query);
                    answer.metadata.response_code = ResponseCode::NoError;
                    answer.metadata.authoritative = true;
                    answer.metadata.recursion_desired = query.metadata.recursion_desired;
                    answer.metadata.recursion_available = true;
                    answer.add_query(q.clone());
                    let owner = Name::from_ascii(&name).unwrap();
                    let rdata: Vec<RData> = match (q.query_type(), name.as_str()) {
                        (RecordType::NS, "example.test.") => {
                            ["ns1.example.test.", "ns2.example.test."]
                                .iter()
                                .map(|h| RData::NS(NS(Name::from_ascii(h).unwrap())))
                                .collect()
                        }
                        (RecordType::A, "ns1.example.test.") => {
                            vec![RData::A(A(Ipv4Addr::LOCALHOST))]
                        }
                        (RecordType::TXT, TXT_NAME) => t
                            .lock()
                            .unwrap()
                            .iter()
                            .map(|v| RData::TXT(TXT::new(vec![v.clone()])))
                            .collect(),
                        _ => Vec::new(),
                    };
                    for data in rdata {
                        answer.add_answer(Record::from_rdata(owner.clone(), 0, data));
                    }
                    if let Ok(bytes) = answer.to_vec() {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                }
            });
            FakeZone { addr, txt, asked }
        }

        fn authority(&self) -> Authority {
            Authority {
                finder: resolver_for(&[self.addr]).unwrap(),
                port: self.addr.port(),
            }
        }
    }

    fn settings(timeout_ms: u64) -> DnsSettings {
        DnsSettings {
            resolvers: Vec::new(),
            propagation_timeout: Duration::from_millis(timeout_ms),
            poll_interval: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn authoritative_servers_are_those_of_the_closest_zone_with_ns_records() {
        let zone = FakeZone::start().await;
        let servers = zone.authority().servers_for(TXT_NAME).await.unwrap();
        // ns2 has no address and is skipped; ns1 is asked on the zone's port.
        assert_eq!(
            servers,
            vec![SocketAddr::from(([127, 0, 0, 1], zone.addr.port()))]
        );
        let asked = zone.asked.lock().unwrap().clone();
        // Walked up from the record's own name, stopping at the first name with NS records.
        assert_eq!(
            asked
                .iter()
                .filter(|q| q.starts_with("NS "))
                .collect::<Vec<_>>(),
            [
                "NS _acme-challenge.www.example.test.",
                "NS www.example.test.",
                "NS example.test."
            ]
        );

        let err = zone
            .authority()
            .servers_for("_acme-challenge.nowhere.invalid.")
            .await;
        assert!(matches!(err, Err(Error::NoAuthoritative { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn without_resolvers_the_wait_asks_the_zones_authoritative_servers() {
        let zone = FakeZone::start().await;
        let record = TxtRecord {
            fqdn: TXT_NAME.into(),
            value: "expected-value".into(),
        };
        // Another value only: not visible, and the timeout names the authoritative server.
        zone.txt.lock().unwrap().push("stale-value".into());
        let err = wait_visible_via(
            "hook",
            std::slice::from_ref(&record),
            &settings(300),
            Some(zone.authority()),
        )
        .await
        .unwrap_err();
        match &err {
            Error::PropagationTimeout { servers, last, .. } => {
                assert_eq!(
                    servers,
                    &[SocketAddr::from(([127, 0, 0, 1], zone.addr.port()))]
                );
                assert!(last.contains("1 other value(s)"), "{last}");
            }
            other => panic!("{other:?}"),
        }
        // Once the authoritative server has the exact value, the wait ends.
        zone.txt.lock().unwrap().push("expected-value".into());
        wait_visible_via("hook", &[record], &settings(5_000), Some(zone.authority()))
            .await
            .unwrap();
        let asked = zone.asked.lock().unwrap().clone();
        assert!(
            asked.iter().any(|q| q == &format!("TXT {TXT_NAME}")),
            "{asked:?}"
        );
    }

    #[test]
    fn record_names_are_bare_lower_case_and_absolute() {
        assert_eq!(record_name("example.com"), "_acme-challenge.example.com.");
        assert_eq!(record_name("*.example.com"), "_acme-challenge.example.com.");
        assert_eq!(
            record_name("WWW.Example.COM."),
            "_acme-challenge.www.example.com."
        );
        assert_eq!(
            record_name("*.Sub.Example.com"),
            "_acme-challenge.sub.example.com."
        );
    }

    #[test]
    fn cleanup_error_names_provider_record_and_zone() {
        let e = Error::Cleanup {
            provider: "cf".into(),
            fqdn: "_acme-challenge.example.com.".into(),
            zone: Some("example.com".into()),
            source: certkeeper_dns::Error::Transport("connection reset".into()),
        };
        assert_eq!(
            e.to_string(),
            "dns provider cf could not remove TXT _acme-challenge.example.com. in zone example.com: transport error: connection reset"
        );
    }
}
