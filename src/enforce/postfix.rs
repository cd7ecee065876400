//! Postfix's SMTP access policy delegation server (`check_policy_service`):
//! `name=value` lines ended by an empty line, one `action=…` line and an
//! empty line back, over TCP or a UNIX socket, many requests on one
//! persistent connection.
//!
//! * a request of an authenticated session (`sasl_username`) whose login is
//!   locked gets `lock_action` (REJECT by default) at whatever stage it is
//!   asked, so that the next message of a session opened before the lock
//!   is refused too;
//! * at `submission_state` (END-OF-MESSAGE by default) each authenticated
//!   message becomes a submission event on the input topic;
//! * optionally (`sender_check`), a sender the login does not own is
//!   refused: the platform's "sender = login" rule with the alias map, the
//!   domain administrators and the canonical form of `sender_mismatch`;
//!   `dry_run` only counts and logs what it would refuse;
//! * an unauthenticated request is answered `DUNNO` at once; with
//!   `hosted_domains` set, a null-sender recipient at RCPT in one of them
//!   is counted as a bounce to that account.
//!
//! A request that breaks the protocol (too long, too many attributes, not
//! `name=value`) is counted and its connection closed without an answer,
//! as Postfix's documentation asks: Postfix then tries again or takes its
//! `default_action`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::emit::Emitter;
use super::listen::{valid, Conn, Listener};
use super::LockView;
use crate::detect::sender_mismatch::Owners;
use crate::http::Open;
use crate::metrics::Metrics;
use crate::section::Checks;
use crate::source::event::{canonical_account, AccountForm, Fields};
use crate::time::now_millis;

const SERVER: &str = "postfix";

crate::section! {
    /// `[postfix_policy]`: the Postfix policy delegation server. Name it in
    /// Postfix's `check_policy_service` (see docs/enforcement.md).
    pub struct PostfixPolicyConfig {
        /// Where it listens: `127.0.0.1:10040`, or `unix:/path` for a UNIX
        /// socket; empty: not served.
        pub listen: String = String::new(),
        /// Permissions of the UNIX socket (octal), so that Postfix's user
        /// can connect.
        pub socket_mode: String = "0666".into(),
        /// What a locked login's messages get: `REJECT` (5xx: the mail
        /// client shows an error; nothing is queued), `DEFER_IF_PERMIT` or
        /// `DEFER` (4xx: the client keeps the message and retries, so
        /// nothing is lost if the lock was a mistake), or `HOLD` (queued on
        /// hold for an administrator to release or delete).
        pub lock_action: String = "REJECT".into(),
        /// The text that goes with `lock_action` (what the sender's mail
        /// client shows).
        pub lock_message: String = "Your account is locked for your protection. Please contact support.".into(),
        /// The protocol state whose requests become submission events:
        /// `END-OF-MESSAGE` (the message's real size and recipients; hook
        /// the server into `smtpd_end_of_data_restrictions`) or `DATA`.
        pub submission_state: String = "END-OF-MESSAGE".into(),
        /// Refuse a sender the login does not own (its own address, the
        /// alias map and domain administrators of
        /// `[detectors.sender_mismatch]`): `off`, `dry_run` (count and log
        /// only: `credwatch_policy_requests_total{verdict="would_refuse_sender"}`)
        /// or `enforce`.
        pub sender_check: String = "off".into(),
        /// What a foreign sender gets when `sender_check = "enforce"`.
        pub sender_action: String = "REJECT".into(),
        /// The text that goes with `sender_action`.
        pub sender_message: String = "5.7.1 You may not send as this address.".into(),
        /// Domains whose null-sender (`<>`) recipients are counted as
        /// bounces (when the server also answers the inbound smtpd); empty:
        /// none.
        pub hosted_domains: Vec<String> = Vec::new(),
        /// An idle connection is closed after this many seconds (Postfix's
        /// own `smtpd_policy_service_max_idle` is 300).
        pub idle_timeout_secs: u64 = 330,
        /// A request, once begun, must be complete within this many seconds.
        pub request_timeout_secs: u64 = 10,
        /// Largest request, in bytes.
        pub max_request_bytes: usize = 16_384,
        /// Most attributes in one request (Postfix 3.7 sends 30).
        pub max_attributes: usize = 128,
        /// Connections served at once (Postfix opens one per smtpd process).
        pub max_connections: usize = 1024,
    }
}

const ACTIONS: [&str; 4] = ["REJECT", "DEFER", "DEFER_IF_PERMIT", "HOLD"];

impl PostfixPolicyConfig {
    pub fn check(&self, c: &mut Checks) {
        let l = self.listen.trim();
        if !l.is_empty() && !valid(l) {
            c.fail(
                "listen",
                "must be ADDR:PORT such as 127.0.0.1:10040, or unix:/absolute/path, or empty",
            );
        }
        if u32::from_str_radix(&self.socket_mode, 8).is_err() {
            c.fail("socket_mode", "must be an octal mode such as 0666");
        }
        for (key, v) in [
            ("lock_action", &self.lock_action),
            ("sender_action", &self.sender_action),
        ] {
            if !ACTIONS.contains(&v.as_str()) {
                c.fail(key, format!("must be one of {}", ACTIONS.join(", ")));
            }
        }
        for (key, v) in [
            ("lock_message", &self.lock_message),
            ("sender_message", &self.sender_message),
        ] {
            if v.contains(['\r', '\n']) {
                c.fail(key, "must be one line");
            }
        }
        if !["END-OF-MESSAGE", "DATA"].contains(&self.submission_state.as_str()) {
            c.fail("submission_state", "must be END-OF-MESSAGE or DATA");
        }
        if !["off", "dry_run", "enforce"].contains(&self.sender_check.as_str()) {
            c.fail("sender_check", "must be off, dry_run or enforce");
        }
        c.positive("idle_timeout_secs", self.idle_timeout_secs);
        c.positive("request_timeout_secs", self.request_timeout_secs);
        c.at_least("max_request_bytes", self.max_request_bytes as u64, 1024);
        c.at_least("max_attributes", self.max_attributes as u64, 8);
        c.positive("max_connections", self.max_connections as u64);
    }

    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }
}

/// Why a connection is closed without an answer.
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    TooLarge,
    TooManyAttributes,
    NotNameValue,
    /// A begun request was not completed in time.
    Timeout,
    /// No request began within the idle timeout (not an error).
    Idle,
}

impl Bad {
    fn reason(&self) -> &'static str {
        match self {
            Bad::TooLarge => "too_large",
            Bad::TooManyAttributes => "too_large",
            Bad::NotNameValue => "bad_request",
            Bad::Timeout | Bad::Idle => "timeout",
        }
    }
}

/// One request's attributes that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    request: String,
    state: String,
    sasl_username: String,
    sasl_method: String,
    sender: String,
    recipient: String,
    recipient_count: u64,
    client_address: String,
    queue_id: String,
    instance: String,
}

impl Request {
    fn set(&mut self, name: &[u8], value: &[u8]) {
        let v = || String::from_utf8_lossy(value).into_owned();
        match name {
            b"request" => self.request = v(),
            b"protocol_state" => self.state = v(),
            b"sasl_username" => self.sasl_username = v(),
            b"sasl_method" => self.sasl_method = v(),
            b"sender" => self.sender = v(),
            b"recipient" => self.recipient = v(),
            b"recipient_count" => self.recipient_count = v().trim().parse().unwrap_or(0),
            b"client_address" => self.client_address = v(),
            b"queue_id" => self.queue_id = v(),
            b"instance" => self.instance = v(),
            // Unknown attributes are ignored, as the protocol asks.
            _ => {}
        }
    }
}

/// Reads one request; `Ok(None)` at a clean end of the connection.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    cfg: &PostfixPolicyConfig,
    first: Duration,
) -> Result<Option<Request>, Bad> {
    let mut req = Request::default();
    let mut line = Vec::with_capacity(128);
    let mut used = 0usize;
    let mut attributes = 0usize;
    let started = Instant::now();
    loop {
        line.clear();
        let left = cfg.max_request_bytes.saturating_sub(used) as u64 + 1;
        // The first line may wait for as long as the connection may idle;
        // the rest of a begun request must come quickly.
        let wait = if used == 0 {
            first
        } else {
            Duration::from_secs(cfg.request_timeout_secs).saturating_sub(started.elapsed())
        };
        let mut bounded = (&mut *r).take(left);
        let read = tokio::time::timeout(wait, bounded.read_until(b'\n', &mut line));
        let n = match read.await {
            Err(_) if used == 0 => return Err(Bad::Idle),
            Err(_) => return Err(Bad::Timeout),
            Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            // End of the connection: clean only between requests.
            return if used == 0 {
                Ok(None)
            } else {
                Err(Bad::NotNameValue)
            };
        }
        used += n;
        if used > cfg.max_request_bytes {
            return Err(Bad::TooLarge);
        }
        if line.last() != Some(&b'\n') {
            // The connection ended in the middle of a line.
            return Err(Bad::NotNameValue);
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.is_empty() {
            if attributes == 0 {
                // A stray empty line between requests.
                continue;
            }
            return Ok(Some(req));
        }
        attributes += 1;
        if attributes > cfg.max_attributes {
            return Err(Bad::TooManyAttributes);
        }
        let Some(eq) = body.iter().position(|&b| b == b'=') else {
            return Err(Bad::NotNameValue);
        };
        if eq == 0 {
            return Err(Bad::NotNameValue);
        }
        req.set(&body[..eq], &body[eq + 1..]);
    }
}

/// What each connection's requests share.
pub struct Server {
    cfg: PostfixPolicyConfig,
    locks: Arc<LockView>,
    emitter: Arc<Emitter>,
    metrics: Arc<Metrics>,
    form: AccountForm,
    owners: Option<Owners>,
    hosted: Vec<String>,
    refusal: String,
    sender_refusal: String,
    log: crate::kafka::Logger,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen} (postfix_policy.listen): {source}")]
pub struct BindError {
    listen: String,
    source: std::io::Error,
}

/// The running server: where it listens.
pub struct Running {
    pub addr: String,
}

impl Server {
    pub fn new(
        cfg: &PostfixPolicyConfig,
        sender: &crate::detect::sender_mismatch::SenderMismatchConfig,
        locks: Arc<LockView>,
        emitter: Arc<Emitter>,
        metrics: Arc<Metrics>,
        form: AccountForm,
    ) -> Server {
        let hosted = cfg
            .hosted_domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        Server {
            refusal: format!("action={} {}\n\n", cfg.lock_action, cfg.lock_message),
            sender_refusal: format!("action={} {}\n\n", cfg.sender_action, cfg.sender_message),
            owners: (cfg.sender_check != "off").then(|| Owners::new(sender, &form)),
            cfg: cfg.clone(),
            locks,
            emitter,
            metrics,
            form,
            hosted,
            log: crate::kafka::Logger::new("postfix-policy", None),
        }
    }

    pub async fn serve(self) -> Result<Running, BindError> {
        let listen = self.cfg.listen.trim().to_string();
        let mode = u32::from_str_radix(&self.cfg.socket_mode, 8).unwrap_or(0o666);
        let listener = Listener::bind(&listen, mode)
            .await
            .map_err(|source| BindError {
                listen: listen.clone(),
                source,
            })?;
        let addr = listener.describe();
        let me = Arc::new(self);
        let open: Arc<Mutex<Open>> = Arc::default();
        tokio::spawn(async move {
            loop {
                let (conn, ip) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "Postfix policy server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let max = me.cfg.max_connections;
                let Some(slot) = crate::http::take(&open, ip, max, max) else {
                    me.error("over_connection_cap");
                    drop(conn);
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let gauge = me.metrics.policy_connections.with_label_values(&[SERVER]);
                    gauge.inc();
                    me.connection(conn).await;
                    gauge.dec();
                });
            }
        });
        tracing::info!(%addr, "Serving Postfix's policy delegation requests (check_policy_service).");
        Ok(Running { addr })
    }

    fn error(&self, reason: &str) {
        self.metrics
            .policy_errors
            .with_label_values(&[SERVER, reason])
            .inc();
    }

    async fn connection(&self, conn: Box<dyn Conn>) {
        let (r, mut w) = tokio::io::split(conn);
        let mut r = BufReader::new(r);
        let idle = Duration::from_secs(self.cfg.idle_timeout_secs);
        // The message whose foreign sender was last refused here, so that
        // one message's several recipients make one event.
        let mut refused_instance = String::new();
        loop {
            let req = match read_request(&mut r, &self.cfg, idle).await {
                Ok(Some(req)) => req,
                Ok(None) => return,
                // An idle connection: Postfix reconnects when it needs to.
                Err(Bad::Idle) => return,
                Err(bad) => {
                    self.error(bad.reason());
                    if self.log.allow(bad.reason()).is_some() {
                        tracing::warn!(reason = bad.reason(), "A Postfix policy request broke the protocol; its connection is closed without an answer (logged at most every 30 s).");
                    }
                    return;
                }
            };
            let started = Instant::now();
            let (verdict, answer) = self.answer(&req, &mut refused_instance);
            if w.write_all(answer.as_bytes()).await.is_err() || w.flush().await.is_err() {
                self.error("io");
                return;
            }
            self.metrics
                .policy_requests
                .with_label_values(&[SERVER, verdict, "smtp"])
                .inc();
            self.metrics
                .policy_duration
                .with_label_values(&[SERVER])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// The verdict and the answer to one request.
    fn answer<'a>(
        &'a self,
        req: &Request,
        refused_instance: &mut String,
    ) -> (&'static str, &'a str) {
        const DUNNO: &str = "action=DUNNO\n\n";
        if req.request != "smtpd_access_policy" {
            self.error("bad_request");
            return ("allow", DUNNO);
        }
        let login = req.sasl_username.trim();
        if login.is_empty() {
            self.bounce(req);
            return ("allow", DUNNO);
        }
        let Ok(account) = canonical_account(login, &self.form) else {
            return ("allow", DUNNO);
        };
        let now = now_millis();
        if self.locks.lookup(&account, now).is_some() {
            return ("refuse", &self.refusal);
        }
        if let Some(owners) = &self.owners {
            if !req.sender.is_empty() {
                let foreign = owners.foreign(&account, &req.sender);
                if !foreign.is_empty() {
                    if *refused_instance != req.instance || req.instance.is_empty() {
                        refused_instance.clone_from(&req.instance);
                        // The attempt is evidence even when refused.
                        self.submission(req, &account, now, req.recipient_count.max(1));
                    }
                    if self.cfg.sender_check == "enforce" {
                        return ("refuse_sender", &self.sender_refusal);
                    }
                    if self.log.allow("would_refuse_sender").is_some() {
                        tracing::info!(%account, sender = %foreign[0], "Would refuse a sender the login does not own (postfix_policy.sender_check = \"dry_run\"; logged at most every 30 s).");
                    }
                    return ("would_refuse_sender", DUNNO);
                }
            }
        }
        if req.state == self.cfg.submission_state {
            self.submission(req, &account, now, req.recipient_count);
        }
        ("allow", DUNNO)
    }

    fn submission(&self, req: &Request, account: &str, now: i64, rcpts: u64) {
        if req.client_address.parse::<IpAddr>().is_err() {
            self.metrics
                .policy_events
                .with_label_values(&[SERVER, "skipped"])
                .inc();
            return;
        }
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let fields = Fields {
            ts: now,
            kind: "submission",
            account: account.to_string(),
            src_ip: Some(req.client_address.clone()),
            mechanism: opt(&req.sasl_method),
            mail_from: Some(if req.sender.is_empty() {
                "<>".to_string()
            } else {
                req.sender.clone()
            }),
            rcpt_count: Some(rcpts),
            queue_id: opt(&req.queue_id),
            ..Fields::default()
        };
        self.emitter.send(SERVER, &fields);
    }

    /// A null-sender recipient in a hosted domain, at RCPT: a bounce.
    fn bounce(&self, req: &Request) {
        if self.hosted.is_empty() || !req.sender.is_empty() || req.state != "RCPT" {
            return;
        }
        let Some((_, domain)) = req.recipient.rsplit_once('@') else {
            return;
        };
        let domain = domain.trim_end_matches('.').to_lowercase();
        if !self.hosted.contains(&domain) {
            return;
        }
        let fields = Fields {
            ts: now_millis(),
            kind: "bounce",
            account: req.recipient.clone(),
            queue_id: (!req.queue_id.is_empty()).then(|| req.queue_id.clone()),
            ..Fields::default()
        };
        self.emitter.send(SERVER, &fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8], cfg: &PostfixPolicyConfig) -> Vec<Result<Option<Request>, Bad>> {
        let mut r = BufReader::new(input);
        let mut out = Vec::new();
        loop {
            let x = read_request(&mut r, cfg, Duration::from_secs(1)).await;
            let stop = !matches!(x, Ok(Some(_)));
            out.push(x);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn requests_are_read_as_postfix_sends_them() {
        let cfg = PostfixPolicyConfig::default();
        let two = b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsasl_username=bob@example.jp\nsender=bob@example.jp\nrecipient_count=3\nclient_address=192.0.2.7\nqueue_id=5741C9B84F8\nccert_subject=\nunknown_thing=x=y\n\nrequest=smtpd_access_policy\nprotocol_state=RCPT\n\n";
        let got = read(two, &cfg).await;
        assert_eq!(got.len(), 3, "{got:?}");
        let first = got[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(first.state, "END-OF-MESSAGE");
        assert_eq!(first.sasl_username, "bob@example.jp");
        assert_eq!(first.recipient_count, 3);
        assert_eq!(first.queue_id, "5741C9B84F8");
        assert!(matches!(got[2], Ok(None)), "a clean end between requests");
    }

    #[tokio::test]
    async fn requests_that_break_the_protocol_are_refused_by_reason() {
        let cfg = PostfixPolicyConfig {
            max_request_bytes: 1024,
            max_attributes: 8,
            ..Default::default()
        };
        let long = format!("request={}\n\n", "x".repeat(2000));
        assert_eq!(read(long.as_bytes(), &cfg).await[0], Err(Bad::TooLarge));
        let many: String = (0..9).map(|i| format!("a{i}=1\n")).collect::<String>() + "\n";
        assert_eq!(
            read(many.as_bytes(), &cfg).await[0],
            Err(Bad::TooManyAttributes)
        );
        assert_eq!(
            read(b"no equals sign\n\n", &cfg).await[0],
            Err(Bad::NotNameValue)
        );
        assert_eq!(read(b"=value\n\n", &cfg).await[0], Err(Bad::NotNameValue));
        assert_eq!(
            read(b"request=smtpd_acc", &cfg).await[0],
            Err(Bad::NotNameValue)
        );
    }

    #[test]
    fn settings_are_checked() {
        let bad = PostfixPolicyConfig {
            listen: "unix:relative".into(),
            lock_action: "OK".into(),
            sender_check: "maybe".into(),
            submission_state: "RCPT".into(),
            ..Default::default()
        };
        let mut c = Checks::new();
        bad.check(&mut c);
        let problems: Vec<String> = c.into_problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
