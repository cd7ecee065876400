//! `[webhook]`: Standard Webhooks delivery.

use super::signing::parse_secrets;
use crate::section::Checks;

crate::section! {
    /// `[webhook]`: Standard Webhooks delivery (used by `credwatch run`).
    pub struct WebhookConfig {
        /// Endpoints; empty means no webhooks (actions still go to Kafka).
        pub urls: Vec<String> = Vec::new(),
        /// `whsec_` + base64 of the key, or from `CREDWATCH_WEBHOOK_SECRET`.
        /// Several, separated by spaces, while rotating keys: every request
        /// then carries one signature per key. Never printed.
        pub secret: String = String::new(),
        /// Time for one request (connect, send, answer), in seconds.
        pub timeout_secs: u64 = 15,
        /// First retry after this many milliseconds (the spec's first
        /// retry), doubling (with ±20 % jitter) up to `max_backoff_secs`.
        pub initial_backoff_ms: u64 = 5000,
        /// Longest wait between two attempts, in seconds.
        pub max_backoff_secs: u64 = 3600,
        /// Give an action up (failed, copied to the dead-letter topic) when
        /// it is still not delivered this long after its first attempt, in
        /// seconds (the spec's schedule reaches about a day).
        pub retry_horizon_secs: u64 = 86_400,
        /// Requests in flight per endpoint.
        pub concurrency: usize = 32,
        /// Extra CA certificate (PEM) to trust besides the system's. Empty:
        /// the system's only.
        pub ca_file: String = String::new(),
    }
}

impl WebhookConfig {
    pub fn check(&self, c: &mut Checks) {
        if self
            .urls
            .iter()
            .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            c.fail("urls", "every URL must start with http:// or https://");
        }
        if let Err(message) = parse_secrets(&self.secret) {
            c.fail("secret", message);
        }
        if !self.urls.is_empty() && self.secret.trim().is_empty() {
            c.fail(
                "secret",
                "webhook.urls are set but there is no secret: set webhook.secret or CREDWATCH_WEBHOOK_SECRET (whsec_ + base64 key)",
            );
        }
        c.positive("timeout_secs", self.timeout_secs);
        c.positive("initial_backoff_ms", self.initial_backoff_ms);
        c.positive("max_backoff_secs", self.max_backoff_secs);
        c.positive("concurrency", self.concurrency as u64);
    }
}
