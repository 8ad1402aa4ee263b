//! `run --metrics-listen ADDR`: `GET /metrics` answers the Prometheus text that
//! `certkeeper metrics` prints, plus the last pass's duration and outcomes. Anything else is
//! 404 (or 405 for a method other than GET and HEAD). HTTP/1.1 through hyper, with a bound
//! on slow clients (headers within [`HEADER_TIMEOUT`]) and on connections served at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::metrics;

/// What `/metrics` shows: the config in force and the last pass.
#[derive(Clone, Debug)]
pub struct Shown {
    /// The config in force (replaced on a reload).
    pub config: Arc<Config>,
    /// The last pass, once one has run.
    pub last: Option<metrics::Pass>,
}

/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` (so that a bad address fails at startup, with its error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shown: watch::Receiver<Shown>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("Metrics listener: accept failed: {e}");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shown = shown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| answer(req, shown.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("Metrics listener: connection ended: {e}");
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
