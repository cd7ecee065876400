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
    /// A lock lifted by the provider (contract §7).
    Unlock,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Alert => "alert",
            ActionKind::Lock => "lock",
            ActionKind::Unlock => "unlock",
        }
    }
    pub fn event_type(self) -> &'static str {
        match self {
            ActionKind::Alert => "account.alert",
            ActionKind::Lock => "account.lock",
            ActionKind::Unlock => "account.unlock",
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
    mut evidence: Map<String, Value>,
) -> Action {
    bound_evidence(&mut evidence);
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

/// The most an action's evidence may take, serialised: far under Kafka's
/// default message size (1 MB), so that no event, however hostile, makes
/// an action the broker refuses (it would be retried forever and hold its
/// partition's offset back).
pub const MAX_EVIDENCE_BYTES: usize = 32 * 1024;

/// Shrinks evidence over [`MAX_EVIDENCE_BYTES`]: first the incident story
/// goes, then long strings are cut to 256 bytes and long lists to 10 items,
/// and if that is not enough only the scalar facts stay. Whatever was cut,
/// `evidence_truncated: true` says so.
fn bound_evidence(evidence: &mut Map<String, Value>) {
    let size = |e: &Map<String, Value>| serde_json::to_vec(e).map_or(usize::MAX, |v| v.len());
    if size(evidence) <= MAX_EVIDENCE_BYTES {
        return;
    }
    evidence.remove("incident_story");
    fn shrink(v: &mut Value) {
        match v {
            Value::String(s) if s.len() > 256 => {
                let cut = crate::source::event::clip(s, 256).to_string();
                *s = cut + "…";
            }
            Value::Array(a) => {
                a.truncate(10);
                a.iter_mut().for_each(shrink);
            }
            Value::Object(o) => o.values_mut().for_each(shrink),
            _ => {}
        }
    }
    if size(evidence) > MAX_EVIDENCE_BYTES {
        evidence.values_mut().for_each(shrink);
    }
    if size(evidence) > MAX_EVIDENCE_BYTES {
        evidence.retain(|_, v| !(v.is_array() || v.is_object()));
        evidence.values_mut().for_each(shrink);
    }
    evidence.insert("evidence_truncated".into(), Value::Bool(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_bounded_whatever_it_holds() {
        let mut e = Map::new();
        let big = "x".repeat(100_000);
        e.insert("message".into(), serde_json::json!({ "header_from": big }));
        e.insert(
            "senders".into(),
            Value::Array(vec![Value::String(big.clone()); 100]),
        );
        e.insert("incident_story".into(), Value::String(big));
        e.insert("failures".into(), Value::from(12));
        let a = build(
            "a@example.net",
            "sender_mismatch",
            ActionKind::Lock,
            Severity::Critical,
            "why".into(),
            false,
            None,
            0,
            0,
            0,
            0,
            e,
        );
        let json = a.to_json();
        assert!(
            json.len() < MAX_EVIDENCE_BYTES + 2048,
            "{} bytes",
            json.len()
        );
        assert_eq!(a.data.evidence["evidence_truncated"], true);
        assert_eq!(a.data.evidence["failures"], 12);
    }

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
