//! What the fleet's etcd says of the shared certificates, read only, for the operator's
//! commands (`fleet status`, `check`, `metrics`): the current generation, the leader and
//! each live host's state, and a way to run such reads within a fixed time from code that
//! is not async (a monitoring plugin must answer even when etcd does not).

use std::future::Future;
use std::time::Duration;

use certkeeper_fleet::{Fleet, Generation, HostState, KEPT_GENERATIONS};

/// One shared certificate as etcd has it.
#[derive(Debug, Clone)]
pub struct CertView {
    /// The certificate's name.
    pub name: String,
    /// The current generation, if one was published.
    pub current: Option<Generation>,
    /// The host that leads its issuance, if any.
    pub leader: Option<String>,
    /// Each host whose lease is alive and that reported a state, by host id.
    pub hosts: Vec<(String, HostState)>,
}

/// Reads `cert`'s current generation, leader and host states (three reads at once).
pub async fn read(fleet: &Fleet, cert: &str) -> Result<CertView, certkeeper_fleet::Error> {
    let (current, leader, mut hosts) =
        tokio::try_join!(fleet.current(cert), fleet.leader(cert), fleet.hosts(cert))?;
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(CertView {
        name: cert.to_owned(),
        current: current.map(|(g, _)| g),
        leader,
        hosts,
    })
}

/// The serial of the generation of `cert` whose leaf has SHA-256 `fingerprint` (hex, any
/// case): `current` or one of the older generations etcd keeps; `None` when the leaf is
/// none of them (a pair from before the fleet, or from an older generation no longer kept).
pub async fn serial_of(
    fleet: &Fleet,
    cert: &str,
    current: &Generation,
    fingerprint: &str,
) -> Result<Option<u64>, certkeeper_fleet::Error> {
    if current.fingerprint.eq_ignore_ascii_case(fingerprint) {
        return Ok(Some(current.serial));
    }
    for back in 1..KEPT_GENERATIONS {
        let Some(serial) = current.serial.checked_sub(back) else {
            break;
        };
        if let Some(g) = fleet.generation(cert, serial).await?
            && g.fingerprint.eq_ignore_ascii_case(fingerprint)
        {
            return Ok(Some(g.serial));
        }
    }
    Ok(None)
}

/// Runs the future `f` makes on a thread and a runtime of its own, for at most `budget`:
/// callable from plain code and from a blocking task of another runtime (the daemon's
/// `/metrics`). `None` when the budget ran out; whatever `f` left running is dropped then,
/// without waiting for it.
pub fn within<T, F, Fut>(budget: Duration, f: F) -> Option<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            // The timer is made inside the runtime: it needs the runtime's clock.
            let out = runtime
                .block_on(async { tokio::time::timeout(budget, f()).await })
                .ok();
            // A request still in flight (a member that never answers) must not hold us.
            runtime.shutdown_background();
            out
        })
        .join()
        .ok()
        .flatten()
    })
}
