//! The HTTP endpoint on `http.listen`: `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive), `/readyz` (consuming, every
//! assigned partition's state restored).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

crate::section! {
    /// `[http]`: metrics and health.
    pub struct HttpConfig {
        /// Where `/metrics`, `/healthz` and `/readyz` are served.
        pub listen: String = "0.0.0.0:9898".into(),
        /// A client must send a request's headers within this many seconds
        /// (also between requests on a kept-alive connection), or it is
        /// disconnected: a slow client cannot hold a connection.
        pub header_timeout_secs: u64 = 10,
        /// The longest a connection may stay open, in seconds (Prometheus
        /// reconnects for its next scrape).
        pub connection_timeout_secs: u64 = 120,
        /// Connections served at once; more are closed at once, so the
        /// process never runs out of file descriptors.
        pub max_connections: usize = 256,
        /// Connections served at once from one client address, so that one
        /// client cannot take them all and the kubelet's probes still get
        /// through.
        pub max_connections_per_address: usize = 8,
    }
}

impl HttpConfig {
    pub fn check(&self, c: &mut crate::section::Checks) {
        c.positive("header_timeout_secs", self.header_timeout_secs);
        c.positive("connection_timeout_secs", self.connection_timeout_secs);
        c.positive("max_connections", self.max_connections as u64);
        c.positive(
            "max_connections_per_address",
            self.max_connections_per_address as u64,
        );
    }
}

/// Connections open now, in all and per client address.
#[derive(Default)]
pub(crate) struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// A served connection's place in [`Open`], given back when it closes.
pub(crate) struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.total -= 1;
        if let Some(n) = o.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.per_address.remove(&self.ip);
            }
        }
    }
}

fn take_slot(open: &Arc<Mutex<Open>>, ip: IpAddr, cfg: &HttpConfig) -> Option<Slot> {
    take(
        open,
        ip,
        cfg.max_connections,
        cfg.max_connections_per_address,
    )
}

/// A place for a connection from `ip`, if under both caps (the policy
/// servers share this with the metrics endpoint).
pub(crate) fn take(
    open: &Arc<Mutex<Open>>,
    ip: IpAddr,
    max: usize,
    per_address: usize,
) -> Option<Slot> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    let mine = o.per_address.get(&ip).copied().unwrap_or(0);
    if o.total >= max || mine >= per_address {
        return None;
    }
    o.total += 1;
    *o.per_address.entry(ip).or_default() += 1;
    Some(Slot {
        open: open.clone(),
        ip,
    })
}

/// The endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {listen} (http.listen): {source}; choose a free port, e.g. CREDWATCH_HTTP_LISTEN=127.0.0.1:0")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
}

/// What `/readyz` asks of the service.
pub trait Status: Send + Sync {
    fn ready(&self) -> bool;
}

/// What `/readyz` answers before the service exists.
pub struct NotYet;

impl Status for NotYet {
    fn ready(&self) -> bool {
        false
    }
}

/// Serves the endpoint until the runtime stops. `status` can be swapped
/// once the service has started.
pub struct Endpoint {
    pub addr: SocketAddr,
    status: Arc<std::sync::RwLock<Arc<dyn Status>>>,
}

impl Endpoint {
    /// Binds `cfg.listen` (an error names the address) and serves on the
    /// current tokio runtime, within `cfg`'s timeouts and connection caps.
    pub async fn bind(cfg: &HttpConfig, metrics: Arc<Metrics>) -> Result<Endpoint, HttpError> {
        let listen = cfg.listen.as_str();
        let bind_error = |source| HttpError::Bind {
            listen: listen.to_string(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let cfg = cfg.clone();
        let open: Arc<Mutex<Open>> = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let addr = listener.local_addr().map_err(bind_error)?;
        let status: Arc<std::sync::RwLock<Arc<dyn Status>>> =
            Arc::new(std::sync::RwLock::new(Arc::new(NotYet)));
        let st = status.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait a
                        // little instead of spinning.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(slot) = take_slot(&open, peer.ip().to_canonical(), &cfg) else {
                    // Over a cap: closed at once (counted, logged at most
                    // every 30 s).
                    let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == 1 || n.is_multiple_of(1000) {
                        tracing::warn!(refused = n, max_connections = cfg.max_connections, max_connections_per_address = cfg.max_connections_per_address, "HTTP connection refused: over the connection cap (http.max_connections, http.max_connections_per_address).");
                    }
                    drop(stream);
                    continue;
                };
                let metrics = metrics.clone();
                let st = st.clone();
                let (header, life) = (
                    Duration::from_secs(cfg.header_timeout_secs),
                    Duration::from_secs(cfg.connection_timeout_secs),
                );
                tokio::spawn(async move {
                    let _slot = slot;
                    let svc = service_fn(move |req| {
                        let status = st.read().unwrap_or_else(|e| e.into_inner()).clone();
                        handle(req, metrics.clone(), status)
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header)
                        .serve_connection(TokioIo::new(stream), svc);
                    let _ = tokio::time::timeout(life, conn).await;
                });
            }
        });
        Ok(Endpoint { addr, status })
    }

    pub fn set_status(&self, s: Arc<dyn Status>) {
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

async fn handle(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    status: Arc<dyn Status>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |code: StatusCode, body: &'static str| {
        Response::builder()
            .status(code)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("static response")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    Ok(match req.uri().path() {
        "/metrics" => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(metrics.render())))
            .expect("metrics response"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if status.ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: joining the consumer group or restoring partition state\n",
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    })
}
