//! etcd leases kept alive in the background, and the leadership built on one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Result, call, timed};

/// A lease and the task that keeps it alive. Dropping it stops the keepalive: the lease then
/// expires on etcd's side after its TTL, as a crashed host's does.
pub(crate) struct Lease {
    id: i64,
    state: Arc<State>,
    task: JoinHandle<()>,
    client: Client,
    timeout: Duration,
}

struct State {
    /// No later than when etcd drops the lease if it hears nothing more: the send time of
    /// the last answered request plus the TTL etcd gave.
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

impl State {
    fn alive(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && Instant::now() < self.valid_until()
    }

    fn valid_until(&self) -> Instant {
        // A poisoned lock only means a keepalive task panicked: its last value still holds.
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn extend(&self, until: Instant) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

impl Lease {
    pub(crate) async fn grant(client: &Client, ttl: Duration, timeout: Duration) -> Result<Self> {
        // etcd counts in whole seconds; below 2 s it raises the TTL to its own minimum anyway.
        let secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let resp = call("lease grant", timeout, client, |mut c| async move {
            c.lease_grant(secs, None).await
        })
        .await?;
        let granted = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
        let state = Arc::new(State {
            valid_until: Mutex::new(sent + granted),
            lost: AtomicBool::new(false),
        });
        let task = tokio::spawn(keep_alive(
            client.clone(),
            resp.id(),
            granted,
            state.clone(),
        ));
        Ok(Self {
            id: resp.id(),
            state,
            task,
            client: client.clone(),
            timeout,
        })
    }

    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.state.alive()
    }

    /// Ends the lease now (and every key on it); best effort: if etcd cannot be reached the
    /// lease expires by itself.
    pub(crate) async fn revoke(self) {
        self.task.abort();
        self.state.lost.store(true, Ordering::SeqCst);
        let mut c = self.client.clone();
        let _ = timed("lease revoke", self.timeout, c.lease_revoke(self.id)).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive(client: Client, id: i64, ttl: Duration, state: Arc<State>) {
    let every = (ttl / 3).max(Duration::from_millis(500));
    loop {
        let mut c = client.clone();
        if let Ok(Ok((mut keeper, mut stream))) =
            tokio::time::timeout(every, c.lease_keep_alive(id)).await
        {
            loop {
                let sent = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(every, stream.message()).await {
                    Ok(Ok(Some(resp))) if resp.ttl() <= 0 => {
                        // etcd no longer knows the lease: it expired or was revoked.
                        state.lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Ok(Some(resp))) => {
                        let secs = u64::try_from(resp.ttl()).unwrap_or(0);
                        state.extend(sent + Duration::from_secs(secs));
                    }
                    _ => break,
                }
                tokio::time::sleep(every).await;
            }
        }
        if !state.alive() {
            state.lost.store(true, Ordering::SeqCst);
            tracing::debug!(lease = format!("{id:x}"), "etcd lease lost");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// This host leads one certificate: it holds the `leader` key on a lease of its own, kept
/// alive in the background. Leadership ends when the lease is lost (etcd unreachable for a
/// TTL, or the lease revoked), when it is dropped (the keepalive stops: another host may
/// lead after the TTL) or resigned (at once).
pub struct Leadership {
    cert: String,
    key: String,
    create_revision: i64,
    lease: Lease,
}

impl Leadership {
    pub(crate) fn new(cert: String, key: String, create_revision: i64, lease: Lease) -> Self {
        Self {
            cert,
            key,
            create_revision,
            lease,
        }
    }

    /// Whether this host still leads, as far as it can know without asking etcd: the lease
    /// was renewed less than a TTL ago (counted from when the renewal was sent, so this turns
    /// false no later than etcd drops the lease). Writes that need leadership are also
    /// guarded in etcd on the `leader` key.
    pub fn is_current(&self) -> bool {
        self.lease.is_alive()
    }

    /// The certificate led.
    pub fn cert(&self) -> &str {
        &self.cert
    }

    /// The leadership's lease id.
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// Gives up leadership now: revokes the lease, which deletes the `leader` key, so a
    /// waiting host leads at once.
    pub async fn resign(self) {
        self.lease.revoke().await;
    }

    /// The transaction guard that holds while this leadership's `leader` key stands.
    pub(crate) fn guard(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.create_revision)
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("cert", &self.cert)
            .field("lease", &format_args!("{:x}", self.lease.id()))
            .field("current", &self.is_current())
            .finish()
    }
}
