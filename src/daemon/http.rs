//! `run --metrics-listen ADDR`: `GET /metrics` answers the Prometheus text that
//! `certkeeper metrics` prints, plus the last pass's duration and outcomes and the last
//! probe of what each `verify.tls_connect` serves (`certkeeper_served_*`). Anything else is
//! 404 (or 405 for a method other than GET and HEAD). HTTP/1.1 through hyper, with a bound
//! on slow clients (headers within [`HEADER_TIMEOUT`]) and on connections open at once
//! ([`MAX_CONNECTIONS`]). A new connection is always accepted: at the bound, the oldest open
//! connection that has not yet sent its request is closed to make room (the oldest of all when
//! every one has), so idle or slow clients cannot keep a scraper waiting.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::metrics;

/// What `/metrics` shows: the config in force and the last pass.
#[derive(Clone, Debug)]
pub struct Shown {
    /// The config in force (replaced on a reload).
    pub config: Arc<Config>,
    /// The last pass, once one has run.
    pub last: Option<metrics::Pass>,
    /// The last probe of what each `verify.tls_connect` serves.
    pub served: Arc<Vec<crate::probe::Finding>>,
}

/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; a new one beyond this closes the oldest idle one.
const MAX_CONNECTIONS: usize = 64;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` (so that a bad address fails at startup, with its error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// One open connection, as the accept loop sees it.
struct Open {
    id: u64,
    /// Set once hyper has read the whole request head.
    requested: Arc<AtomicBool>,
    /// Tells the connection's task to close it.
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Conns {
    next: u64,
    open: VecDeque<Open>,
}

impl Conns {
    /// Makes room for one more: closes the oldest connection that has not sent its request,
    /// or the oldest of all when every one has (a client that does not read its answer).
    fn make_room(&mut self) {
        while self.open.len() >= MAX_CONNECTIONS {
            let victim = self
                .open
                .iter()
                .position(|c| !c.requested.load(Ordering::Acquire))
                .unwrap_or(0);
            if let Some(c) = self.open.remove(victim) {
                c.close.notify_one();
            }
        }
    }
}

/// Removes its connection from [`Conns`] when the connection's task ends.
struct Gone {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

impl Drop for Gone {
    fn drop(&mut self) {
        let id = self.id;
        lock(&self.conns).open.retain(|c| c.id != id);
    }
}

/// The lock holds no invariant a panic could break (a list of handles), so a poisoned one is
/// used as it is.
fn lock(conns: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    conns.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shown: watch::Receiver<Shown>) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("Metrics listener: accept failed: {e}");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requested = Arc::new(AtomicBool::new(false));
        let close = Arc::new(Notify::new());
        let id = {
            let mut c = lock(&conns);
            c.make_room();
            let id = c.next;
            c.next += 1;
            c.open.push_back(Open {
                id,
                requested: requested.clone(),
                close: close.clone(),
            });
            id
        };
        let gone = Gone {
            conns: conns.clone(),
            id,
        };
        let shown = shown.clone();
        tokio::spawn(async move {
            let _gone = gone;
            let service = service_fn(move |req| {
                requested.store(true, Ordering::Release);
                answer(req, shown.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = conn => {
                    if let Err(e) = ended {
                        tracing::debug!("Metrics listener: connection ended: {e}");
                    }
                }
                // Dropping the connection closes its socket.
                () = close.notified() => {
                    tracing::debug!("Metrics listener: closed an idle connection to make room");
                }
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    shown: watch::Receiver<Shown>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let status_only = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(status_only(
            StatusCode::NOT_FOUND,
            "Not found; try /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status_only(StatusCode::METHOD_NOT_ALLOWED, "Only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let current = shown.borrow().clone();
    // Reading the live files and state records is blocking file IO.
    let text = tokio::task::spawn_blocking(move || {
        metrics::render(&current.config, current.last.as_ref())
            + &metrics::render_served(&current.served)
    })
    .await
    .unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    Ok(r)
}
