//! Dovecot's auth policy server (`auth_policy_server_url`, Dovecot 2.3 and
//! 2.4): `POST /?command=allow` before and after the password check, and
//! `POST /?command=report` when the login has succeeded or failed, each
//! with Dovecot's JSON body (`login`, `remote`, `protocol`, `pwhash`,
//! `session_id`, `device_id`, `tls`; on report `success`, `policy_reject`
//! and 2.4's `fail_type`).
//!
//! * `allow` is answered from memory: `{"status":-1,"msg":…}` for a locked
//!   account (Dovecot fails the login with `msg` as the reason the client
//!   sees), `{"status":N}` to hold a spraying source N seconds (a tarpit,
//!   when `tarpit_secs` is set), else `{"status":0}`.
//! * every `report` becomes a login event on the input topic, judged like
//!   any other; Dovecot's `pwhash` goes with it.
//!
//! Authentication, as Dovecot sends it: HTTP Basic from the URL's userinfo
//! (`http://credwatch:SECRET@host:port/`, any user name) or an API-key
//! header (`auth_policy_server_api_header = X-API-Key: SECRET`).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;

use super::emit::Emitter;
use super::tarpit::Tarpit;
use super::LockView;
use crate::http::Open;
use crate::metrics::Metrics;
use crate::section::Checks;
use crate::source::event::{canonical_account, parse_ip, AccountForm, Fields};
use crate::time::now_millis;

const SERVER: &str = "dovecot";

crate::section! {
    /// `[dovecot_policy]`: the Dovecot auth policy server. Point Dovecot's
    /// `auth_policy_server_url` at it (see docs/enforcement.md).
    pub struct DovecotPolicyConfig {
        /// Where it listens (`127.0.0.1:9899`); empty: not served.
        pub listen: String = String::new(),
        /// The shared secret Dovecot must send: the password of the URL's
        /// userinfo (HTTP Basic, any user name), or the value of the
        /// `api_header`. Or `CREDWATCH_DOVECOT_POLICY_SECRET`. Empty: any
        /// client is answered (only on loopback or a private network).
        pub secret: String = String::new(),
        /// The header that carries the secret when Dovecot sends it as an
        /// API key (`auth_policy_server_api_header`; a value without a
        /// name is sent as `X-API-Key`).
        pub api_header: String = "X-API-Key".into(),
        /// What a locked account's user is told (Dovecot passes it to the
        /// IMAP/POP3 client, and to Postfix as the SMTP AUTH failure).
        pub message: String = "Your account is locked for your protection. Please contact support.".into(),
        /// Seconds Dovecot holds each login attempt from a source that is
        /// spraying now (many failures on several accounts); 0: no tarpit.
        pub tarpit_secs: u64 = 0,
        /// Failed logins from one source (an IPv6 /64) within the window
        /// that make it a sprayer, for the tarpit.
        pub tarpit_failures: u32 = 20,
        /// Distinct accounts among those failures.
        pub tarpit_accounts: usize = 5,
        /// The tarpit's window, in seconds.
        pub tarpit_window_secs: u64 = 600,
        /// Largest request body accepted, in bytes.
        pub max_body_bytes: usize = 16_384,
        /// Connections served at once (Dovecot opens up to 100 per auth
        /// process and keeps them alive).
        pub max_connections: usize = 1024,
        /// Connections at once from one address (a Dovecot host).
        pub max_connections_per_address: usize = 512,
        /// A request's headers must arrive within this many seconds (also
        /// between requests of a kept-alive connection).
        pub header_timeout_secs: u64 = 10,
    }
}

impl DovecotPolicyConfig {
    pub fn check(&self, c: &mut Checks) {
        if !self.listen.trim().is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            c.fail(
                "listen",
                "must be an address and port such as 127.0.0.1:9899, or empty",
            );
        }
        if self.api_header.trim().is_empty()
            || !self
                .api_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            c.fail(
                "api_header",
                "must be an HTTP header name such as X-API-Key",
            );
        }
        if self.message.contains(['\r', '\n', '\t']) {
            c.fail(
                "message",
                "must be one line (Dovecot sends it to the client)",
            );
        }
        if self.tarpit_secs > 0 {
            c.positive("tarpit_failures", u64::from(self.tarpit_failures));
            c.positive("tarpit_accounts", self.tarpit_accounts as u64);
            c.positive("tarpit_window_secs", self.tarpit_window_secs);
        }
        c.at_least("max_body_bytes", self.max_body_bytes as u64, 512);
        c.positive("max_connections", self.max_connections as u64);
        c.positive(
            "max_connections_per_address",
            self.max_connections_per_address as u64,
        );
        c.positive("header_timeout_secs", self.header_timeout_secs);
    }

    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }
}

/// A boolean as Dovecot sends it (a JSON boolean; a development state of
/// 2.4 sent `"true"`).
fn flex_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B<'a> {
        Bool(bool),
        Text(&'a str),
        Other(serde::de::IgnoredAny),
    }
    Ok(match B::deserialize(d)? {
        B::Bool(b) => b,
        B::Text(t) => t == "true",
        B::Other(_) => false,
    })
}

/// Dovecot's request body (unknown attributes, and nested ones, ignored).
#[derive(Deserialize, Default)]
struct Body<'a> {
    #[serde(borrow, default)]
    login: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    remote: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    protocol: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pwhash: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    device_id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "flex_bool")]
    success: bool,
    #[serde(default, deserialize_with = "flex_bool")]
    policy_reject: bool,
    #[serde(borrow, default)]
    fail_type: Option<Cow<'a, str>>,
}

/// Dovecot's service name as the contract's protocol (and metric label).
fn protocol(service: &str) -> &'static str {
    match service {
        "imap" => "imap",
        "pop3" => "pop3",
        // Dovecot's submission-login, and Postfix's SASL through Dovecot.
        "submission" | "smtp" | "esmtp" => "smtp",
        _ => "other",
    }
}

/// What both kinds of request share.
pub struct Server {
    cfg: DovecotPolicyConfig,
    locks: Arc<LockView>,
    emitter: Arc<Emitter>,
    metrics: Arc<Metrics>,
    form: AccountForm,
    trusted: Vec<ipnet::IpNet>,
    tarpit: Option<Tarpit>,
    /// The refusal body, built once.
    refusal: Bytes,
    tarpit_body: Bytes,
}

/// The running server.
pub struct Running {
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen} (dovecot_policy.listen): {source}; choose a free port")]
pub struct BindError {
    listen: String,
    source: std::io::Error,
}

impl Server {
    pub fn new(
        cfg: &DovecotPolicyConfig,
        locks: Arc<LockView>,
        emitter: Arc<Emitter>,
        metrics: Arc<Metrics>,
        form: AccountForm,
        trusted: Vec<ipnet::IpNet>,
    ) -> Server {
        Server {
            refusal: Bytes::from(serde_json::json!({"status": -1, "msg": cfg.message}).to_string()),
            tarpit_body: Bytes::from(serde_json::json!({"status": cfg.tarpit_secs}).to_string()),
            tarpit: (cfg.tarpit_secs > 0).then(|| {
                Tarpit::new(
                    cfg.tarpit_window_secs,
                    cfg.tarpit_failures,
                    cfg.tarpit_accounts,
                )
            }),
            cfg: cfg.clone(),
            locks,
            emitter,
            metrics,
            form,
            trusted,
        }
    }

    /// Binds `listen` and serves on the current tokio runtime.
    pub async fn serve(self) -> Result<Running, BindError> {
        let listen = self.cfg.listen.trim().to_string();
        let err = |source| BindError {
            listen: listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&listen).await.map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        if self.cfg.secret.is_empty() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "dovecot_policy.secret is empty: any client that reaches this address can ask about accounts and send login reports. Set a secret, or listen on loopback only.");
        }
        let me = Arc::new(self);
        let open: Arc<Mutex<Open>> = Arc::default();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "Dovecot policy server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(slot) = crate::http::take(
                    &open,
                    peer.ip().to_canonical(),
                    me.cfg.max_connections,
                    me.cfg.max_connections_per_address,
                ) else {
                    me.error("over_connection_cap");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let me = me.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let gauge = me.metrics.policy_connections.with_label_values(&[SERVER]);
                    gauge.inc();
                    let m = me.clone();
                    let svc = service_fn(move |req| {
                        let m = m.clone();
                        async move { Ok::<_, std::convert::Infallible>(m.handle(req).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(me.cfg.header_timeout_secs))
                        .serve_connection(TokioIo::new(stream), svc);
                    if conn.await.is_err() {
                        me.error("io");
                    }
                    gauge.dec();
                });
            }
        });
        tracing::info!(%addr, "Serving Dovecot's auth policy requests (POST /?command=allow|report).");
        Ok(Running { addr })
    }

    fn error(&self, reason: &str) {
        self.metrics
            .policy_errors
            .with_label_values(&[SERVER, reason])
            .inc();
    }

    fn reply(&self, code: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("static response")
    }

    fn fail(&self, code: StatusCode, reason: &'static str, msg: &str) -> Response<Full<Bytes>> {
        self.error(reason);
        let body = serde_json::json!({"error": reason, "message": msg}).to_string();
        self.reply(code, Bytes::from(body))
    }

    /// True when the request carries the secret (or none is configured).
    fn authorised(&self, req: &Request<Incoming>) -> bool {
        let secret = self.cfg.secret.as_bytes();
        if secret.is_empty() {
            return true;
        }
        if let Some(v) = req.headers().get(self.cfg.api_header.as_str()) {
            if constant_time_eq(v.as_bytes(), secret) {
                return true;
            }
        }
        let basic = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            });
        basic.is_some_and(|userpass| {
            userpass
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|i| constant_time_eq(&userpass[i + 1..], secret))
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return self.fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "POST /?command=allow or /?command=report, as Dovecot sends them",
            );
        }
        if !self.authorised(&req) {
            return self.fail(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the request does not carry dovecot_policy.secret (HTTP Basic or the API-key header)",
            );
        }
        let command = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("command="))
                .map(str::to_string)
        });
        let Some(command) = command.filter(|c| c == "allow" || c == "report") else {
            return self.fail(
                StatusCode::NOT_FOUND,
                "not_found",
                "unknown command: Dovecot sends ?command=allow and ?command=report",
            );
        };
        let collect = Limited::new(req.into_body(), self.cfg.max_body_bytes).collect();
        let wait = Duration::from_secs(self.cfg.header_timeout_secs);
        let Ok(collected) = tokio::time::timeout(wait, collect).await else {
            return self.fail(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the body did not arrive within dovecot_policy.header_timeout_secs",
            );
        };
        let body = match collected {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return self.fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the body is larger than dovecot_policy.max_body_bytes",
                )
            }
            Err(_) => {
                return self.fail(StatusCode::BAD_REQUEST, "io", "the body could not be read")
            }
        };
        let started = Instant::now();
        let parsed: Result<Body, _> = serde_json::from_slice(&body);
        let Ok(b) = parsed else {
            return self.fail(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body is not Dovecot's JSON object of string attributes",
            );
        };
        let proto = protocol(b.protocol.as_deref().unwrap_or(""));
        let account = b
            .login
            .as_deref()
            .filter(|l| !l.trim().is_empty())
            .and_then(|l| canonical_account(l, &self.form).ok());
        let now = now_millis();
        let (verdict, resp) = if command == "allow" {
            let remote = b.remote.as_deref().and_then(parse_ip);
            if account
                .as_deref()
                .is_some_and(|a| self.locks.lookup(a, now).is_some())
            {
                ("refuse", self.refusal.clone())
            } else if self.tarpitted(remote, now) {
                ("tarpit", self.tarpit_body.clone())
            } else {
                ("allow", Bytes::from_static(br#"{"status":0}"#))
            }
        } else {
            self.report(&b, account.as_deref(), proto, now);
            ("report", Bytes::from_static(br#"{"status":0}"#))
        };
        self.metrics
            .policy_requests
            .with_label_values(&[SERVER, verdict, proto])
            .inc();
        self.metrics
            .policy_duration
            .with_label_values(&[SERVER])
            .observe(started.elapsed().as_secs_f64());
        self.reply(StatusCode::OK, resp)
    }

    fn tarpitted(&self, remote: Option<IpAddr>, now: i64) -> bool {
        match (&self.tarpit, remote) {
            (Some(t), Some(ip)) => {
                !crate::detect::is_trusted(&self.trusted, ip) && t.spraying(ip, now)
            }
            _ => false,
        }
    }

    /// A report becomes the contract's login event.
    fn report(&self, b: &Body<'_>, account: Option<&str>, proto: &'static str, now: i64) {
        let skip = || {
            self.metrics
                .policy_events
                .with_label_values(&[SERVER, "skipped"])
                .inc()
        };
        // Refused by a policy (ours, most likely: the account is locked),
        // or the server's own trouble: not an outcome of a password.
        let internal = matches!(b.fail_type.as_deref(), Some("internal" | "policy"));
        let (Some(account), Some(remote)) =
            (account, b.remote.as_deref().filter(|r| !r.is_empty()))
        else {
            return skip();
        };
        if b.policy_reject || internal {
            return skip();
        }
        let ok = b.success;
        if !ok {
            if let (Some(t), Some(ip)) = (&self.tarpit, parse_ip(remote)) {
                t.failure(ip, account, now);
            }
        }
        let opt =
            |v: &Option<Cow<'_, str>>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let fields = Fields {
            ts: now,
            kind: "auth",
            account: account.to_string(),
            protocol: Some(proto),
            src_ip: Some(remote.to_string()),
            result: Some(if ok { "success" } else { "failure" }),
            // The contract keeps at most 16 hex digits; with
            // auth_policy_hash_truncate = 0 Dovecot sends the whole digest.
            pwhash: b
                .pwhash
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| h.get(..16).unwrap_or(h).to_string()),
            session: opt(&b.session_id),
            client: opt(&b.device_id),
            ..Fields::default()
        };
        self.emitter.send(SERVER, &fields);
    }
}

/// Compares without stopping at the first difference (the time an answer
/// takes says nothing of how much of the secret was right).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_as_dovecot_sends_them_are_read() {
        let allow = br#"{"device_id":"","login":"alice","protocol":"imap","pwhash":"0262","remote":"127.0.0.1","session_id":"x","tls":false}"#;
        let b: Body = serde_json::from_slice(allow).unwrap();
        assert_eq!(b.login.as_deref(), Some("alice"));
        assert!(!b.success);
        let report = br#"{"login":"a","remote":"::1","success":true,"policy_reject":false,"tls":true,"fail_type":"","attrs":{"x":"y"}}"#;
        let b: Body = serde_json::from_slice(report).unwrap();
        assert!(b.success && !b.policy_reject);
        let dev = br#"{"login":"a","success":"true","policy_reject":"false"}"#;
        let b: Body = serde_json::from_slice(dev).unwrap();
        assert!(b.success && !b.policy_reject);
        assert!(serde_json::from_slice::<Body>(br#"{"login":{"x":1}}"#).is_err());
        assert!(serde_json::from_slice::<Body>(b"[1]").is_err());
    }

    #[test]
    fn services_map_to_the_contracts_protocols() {
        assert_eq!(protocol("imap"), "imap");
        assert_eq!(protocol("submission"), "smtp");
        assert_eq!(protocol("smtp"), "smtp");
        assert_eq!(protocol("sieve"), "other");
        assert_eq!(protocol("made-up"), "other");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cres", b"s3cret"));
    }
}
