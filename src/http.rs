//! The HTTP endpoint on `http.listen`: `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive), `/readyz` (consuming, every
//! assigned partition's state restored).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

crate::section! {
    /// `[http]`: metrics and health.
    pub struct HttpConfig {
        /// Where `/metrics`, `/healthz` and `/readyz` are served.
        pub listen: String = "0.0.0.0:9898".into(),
    }
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
    /// Binds `listen` (an error names the address) and serves on the
    /// current tokio runtime.
    pub async fn bind(listen: &str, metrics: Arc<Metrics>) -> Result<Endpoint, HttpError> {
        let bind_error = |source| HttpError::Bind {
            listen: listen.to_string(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let status: Arc<std::sync::RwLock<Arc<dyn Status>>> =
            Arc::new(std::sync::RwLock::new(Arc::new(NotYet)));
        let st = status.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let metrics = metrics.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let status = st.read().unwrap_or_else(|e| e.into_inner()).clone();
                        handle(req, metrics.clone(), status)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
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
