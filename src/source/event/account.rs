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

/// The key of the network `ip` belongs to: its first `v4` (IPv4) or `v6`
/// (IPv6) bits, hashed like [`address_key`]. With 32 and 128 it is the
/// address's own key.
pub fn network_key(ip: IpAddr, v4: u8, v6: u8) -> u64 {
    address_key(truncate(ip, v4, v6))
}

/// `ip` with only its first `v4` or `v6` bits kept.
pub fn truncate(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(v4.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u32::from(v6.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}
