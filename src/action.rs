//! Actions (contract §2): what credwatch decides, as the JSON that goes to
//! the actions topic, the webhooks and `replay`'s standard output.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::detect::Severity;
use crate::time::{format_rfc3339, Millis};

/// `lock` or `alert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Alert,
    Lock,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Alert => "alert",
            ActionKind::Lock => "lock",
        }
    }
    pub fn event_type(self) -> &'static str {
        match self {
            ActionKind::Alert => "account.alert",
            ActionKind::Lock => "account.lock",
        }
    }
}

/// Why a lock became an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Downgrade {
    /// The detector is in `dry_run`.
    DryRun,
    /// The account is in `policy.protected_accounts`.
    Protected,
    /// The lock-storm breaker is open.
    Breaker,
}

impl Downgrade {
    pub fn as_str(self) -> &'static str {
        match self {
            Downgrade::DryRun => "dry_run",
            Downgrade::Protected => "protected",
            Downgrade::Breaker => "breaker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionData {
    pub account: String,
    pub action: ActionKind,
    pub detector: &'static str,
    pub severity: Severity,
    pub reason: String,
    pub dry_run: bool,
    pub first_event_ts: String,
    pub last_event_ts: String,
    pub evidence: Value,
    /// Added to the contract: why a lock the evidence called for was sent
    /// as an alert (absent when nothing was downgraded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downgraded_by: Option<Downgrade>,
    /// Added to the contract: the incident this action belongs to (stable
    /// across the alerts and the lock of one account's incident).
    pub incident: String,
}

/// One action, as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub timestamp: String,
    pub data: ActionData,
}

impl Action {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an action always serialises")
    }
}

/// `cw_` and 16 hex digits of SHA-256 over the parts, separated so that no
/// two different part lists hash the same bytes.
pub fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut s = String::with_capacity(19);
    s.push_str("cw_");
    for b in &d[..8] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Builds the action JSON.
#[allow(clippy::too_many_arguments)]
pub fn build(
    account: &str,
    detector: &'static str,
    action: ActionKind,
    severity: Severity,
    reason: String,
    dry_run: bool,
    downgraded_by: Option<Downgrade>,
    incident_start: Millis,
    first: Millis,
    last: Millis,
    decided_at: Millis,
    evidence: Map<String, Value>,
) -> Action {
    let start = incident_start.to_string();
    let incident = stable_id(&[account, &start]);
    // A lock that became an alert is a different action from the
    // incident's plain alert (a receiver that dedupes on the id must not
    // drop it), and from the lock sent later.
    let id = match downgraded_by {
        None => stable_id(&[account, detector, &start, action.as_str()]),
        Some(d) => stable_id(&[account, detector, &start, action.as_str(), d.as_str()]),
    };
    Action {
        kind: action.event_type(),
        id,
        timestamp: format_rfc3339(decided_at),
        data: ActionData {
            account: account.to_string(),
            action,
            detector,
            severity,
            reason,
            dry_run,
            first_event_ts: format_rfc3339(first),
            last_event_ts: format_rfc3339(last),
            evidence: Value::Object(evidence),
            downgraded_by,
            incident,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = stable_id(&["alice", "impossible_travel", "1", "lock"]);
        assert_eq!(a, stable_id(&["alice", "impossible_travel", "1", "lock"]));
        assert_eq!(a.len(), 19);
        assert!(a.starts_with("cw_"));
        assert_ne!(a, stable_id(&["alice", "impossible_travel", "1", "alert"]));
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
    }
}
