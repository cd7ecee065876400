//! Accounts and addresses: normalised as the contract compares them, and
//! keyed for the state tables by a keyed hash an outsider cannot aim.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::OnceLock;

use super::{Reject, RejectReason};

/// The longest account the contract accepts.
pub(super) const MAX_ACCOUNT_BYTES: usize = 320;

fn account_hasher() -> &'static std::hash::RandomState {
    static H: OnceLock<std::hash::RandomState> = OnceLock::new();
    H.get_or_init(std::hash::RandomState::new)
}

/// The state-map key of a normalised (trimmed, lower-cased) account.
///
/// A keyed SipHash with a per-process random key: 64 bits, so two accounts
/// share state only with probability about n²/2⁶⁵ (10 M accounts: 3·10⁻⁶),
/// and an outsider cannot aim a collision because the key is secret.
pub fn account_key(normalised: &str) -> u64 {
    account_hasher().hash_one(normalised)
}

/// The state-map key of a source address (same secret key as accounts; the
/// 17-byte input can never equal an account's hash input).
pub fn address_key(ip: IpAddr) -> u64 {
    let mut b = [0u8; 17];
    match ip {
        IpAddr::V4(v4) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&v6.octets());
        }
    }
    account_hasher().hash_one(b)
}

/// Trims and lower-cases an account as the contract says accounts compare.
pub fn normalise_account(raw: &str) -> Result<Box<str>, Reject> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(Reject::new(RejectReason::BadAccount, "`account` is empty"));
    }
    if t.len() > MAX_ACCOUNT_BYTES {
        return Err(Reject::new(
            RejectReason::BadAccount,
            format!(
                "`account` is {} bytes, at most {MAX_ACCOUNT_BYTES} allowed",
                t.len()
            ),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(Reject::new(
            RejectReason::BadAccount,
            "`account` contains control characters",
        ));
    }
    Ok(
        if t.bytes().any(|b| b.is_ascii_uppercase()) || !t.is_ascii() {
            t.to_lowercase().into_boxed_str()
        } else {
            t.into()
        },
    )
}

/// Parses an address: IPv4, IPv6, an IPv6 zone id (`fe80::1%eth0`, the zone
/// is dropped) and IPv4-mapped IPv6 (`::ffff:192.0.2.1`, seen as IPv4).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = match s.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() && addr.contains(':') => addr,
        Some(_) => return None,
        None => s,
    };
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
