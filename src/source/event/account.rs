//! Accounts and addresses: normalised as the contract compares them, and
//! keyed for the state tables by a keyed hash an outsider cannot aim.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::OnceLock;

use siphasher::sip::SipHasher13;

use super::{Reject, RejectReason};

/// The longest account the contract accepts.
pub(super) const MAX_ACCOUNT_BYTES: usize = 320;

/// The secret key of the state tables' hash: random per process, unless
/// durable state gave one that every instance shares ([`set_state_key`]).
static KEY: OnceLock<[u64; 2]> = OnceLock::new();

fn key() -> &'static [u64; 2] {
    KEY.get_or_init(|| {
        let r = std::hash::RandomState::new();
        [r.hash_one(1u8), r.hash_one(2u8)]
    })
}

fn hasher() -> SipHasher13 {
    let k = key();
    SipHasher13::new_with_keys(k[0], k[1])
}

/// Sets the hash key every instance of a group shares, so that durable
/// state written by one process is found by another. Must come before any
/// key is computed; false if another key is already in use.
pub fn set_state_key(k: [u64; 2]) -> bool {
    *KEY.get_or_init(|| k) == k
}

/// The state-map key of a normalised (trimmed, lower-cased) account.
///
/// A keyed SipHash-1-3 with a secret key (random per process, or the one
/// the group's durable state holds): 64 bits, so two accounts share state
/// only with probability about n²/2⁶⁵ (10 M accounts: 3·10⁻⁶), and an
/// outsider cannot aim a collision because the key is secret.
pub fn account_key(normalised: &str) -> u64 {
    let mut h = hasher();
    h.write(normalised.as_bytes());
    // UTF-8 never has 0xff (nor 0xfe, which ends an address's input).
    h.write_u8(0xff);
    h.finish()
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
    let mut h = hasher();
    h.write(&b);
    h.write_u8(0xfe);
    h.finish()
}

/// How logins are spelled on this platform: what [`canonical_account`]
/// folds together (`[events]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountForm {
    /// Characters that begin a sub-address in the local part: with `+`,
    /// `frank+x@example.jp` is `frank@example.jp`. Empty: none.
    pub subaddress: Box<str>,
    /// The domain of a bare login (`frank`) where logins are addresses.
    pub default_domain: Option<Box<str>>,
}

impl Default for AccountForm {
    fn default() -> Self {
        AccountForm {
            subaddress: "+".into(),
            default_domain: None,
        }
    }
}

/// Unicode format characters (general category Cf): invisible, and
/// removed, so that `fr\u{200b}ank` is `frank`.
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891
        | 0x08E2 | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064
        | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD
        | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001
        | 0xE0020..=0xE007F)
}

/// An account in its one form ([`canonical_account`]): up to 23 bytes
/// inline (nearly every login), a longer one shared, so that an event's
/// account is kept or cloned without an allocation.
pub type AccountName = smol_str::SmolStr;

/// The one form an account has, whatever its spelling: Unicode NFKC
/// (fullwidth `ｆｒａｎｋ＠ｅｘａｍｐｌｅ．ｊｐ` is `frank@example.jp`), no
/// format characters (zero-width spaces, direction marks), trimmed, lower
/// case, no trailing dot on the domain, no sub-address (per
/// [`AccountForm::subaddress`]), and the default domain on a bare login
/// (per [`AccountForm::default_domain`]). Every key, `protected_accounts`,
/// the alias map and the actions use it.
pub fn canonical_account(raw: &str, form: &AccountForm) -> Result<AccountName, Reject> {
    // Nearly every account is already in its form: printable ASCII, lower
    // case, no sub-address, no trailing dot. A pass over the bytes and a
    // search for each separator say so (the general path reads the text
    // three times).
    let b = raw.as_bytes();
    let sub = form.subaddress.as_bytes();
    if !b.is_empty()
        && b.len() <= MAX_ACCOUNT_BYTES
        && b[b.len() - 1] != b'.'
        && b.iter()
            // Without stopping early, so that it runs many bytes at a time.
            .fold(true, |ok, c| {
                ok & c.is_ascii_graphic() & !c.is_ascii_uppercase()
            })
        && !sub.iter().any(|s| b.contains(s))
        && (form.default_domain.is_none() || b.contains(&b'@'))
    {
        return Ok(AccountName::new(raw));
    }
    canonical_in_general(raw, form)
}

/// [`canonical_account`] for any text.
fn canonical_in_general(raw: &str, form: &AccountForm) -> Result<AccountName, Reject> {
    if raw.chars().any(char::is_control) {
        return Err(Reject::new(
            RejectReason::BadAccount,
            "`account` contains control characters",
        ));
    }
    let t = raw.trim();
    let plain = t.bytes().all(|b| {
        b.is_ascii_graphic() && !b.is_ascii_uppercase() && !form.subaddress.as_bytes().contains(&b)
    }) && !t.ends_with('.')
        && (form.default_domain.is_none() || t.contains('@'));
    let folded = if plain {
        AccountName::new(t)
    } else {
        AccountName::from(fold(t, form))
    };
    if folded.is_empty() {
        return Err(Reject::new(RejectReason::BadAccount, "`account` is empty"));
    }
    if folded.len() > MAX_ACCOUNT_BYTES {
        return Err(Reject::new(
            RejectReason::BadAccount,
            format!(
                "`account` is {} bytes, at most {MAX_ACCOUNT_BYTES} allowed",
                folded.len()
            ),
        ));
    }
    Ok(folded)
}

fn fold(t: &str, form: &AccountForm) -> String {
    use unicode_normalization::UnicodeNormalization;
    // Bound the work on hostile input: the contract's accounts are short.
    let t: String = t.chars().take(4 * MAX_ACCOUNT_BYTES).collect();
    let n: String = t.nfkc().filter(|c| !is_format(*c)).collect();
    let lower = n.trim().to_lowercase();
    let (local, domain) = match lower.rsplit_once('@') {
        Some((l, d)) => (l, Some(d.trim_end_matches('.'))),
        None => (lower.as_str(), None),
    };
    let local = match local.find(|c: char| form.subaddress.contains(c)) {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    };
    match (domain, &form.default_domain) {
        (Some(d), _) => format!("{local}@{d}"),
        (None, Some(d)) if !local.is_empty() => format!("{local}@{d}"),
        (None, _) => local.to_string(),
    }
}

/// [`canonical_account`] with the standard form (`+` sub-addresses, no
/// default domain).
pub fn normalise_account(raw: &str) -> Result<AccountName, Reject> {
    canonical_account(raw, &AccountForm::default())
}

/// Parses an address: IPv4, IPv6, an IPv6 zone id (`fe80::1%eth0`, the zone
/// is dropped) and IPv4-mapped IPv6 (`::ffff:192.0.2.1`, seen as IPv4).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    // Trimming looks for Unicode's spaces at both ends; an address that
    // begins and ends with a visible ASCII character has none.
    let visible = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    let s = if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    };
    if let Some(v4) = dotted_quad(s) {
        return Some(IpAddr::V4(v4));
    }
    let s = match s.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() && addr.contains(':') => addr,
        Some(_) => return None,
        None => s,
    };
    if let Some(v6) = hex_groups(s) {
        return Some(IpAddr::V6(v6).to_canonical());
    }
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The common case of an IPv6 address without the standard parser's
/// generality: groups of one to four hex digits, eight of them or fewer
/// around one `::`, as the standard parser accepts them. `None` leaves
/// the text to it (an embedded IPv4 address, anything malformed).
fn hex_groups(s: &str) -> Option<std::net::Ipv6Addr> {
    /// Reads `part`'s groups into `out`; how many, or `None`.
    fn groups(part: &[u8], out: &mut [u16]) -> Option<usize> {
        if part.is_empty() {
            return Some(0);
        }
        let mut n = 0;
        for g in part.split(|&b| b == b':') {
            if g.is_empty() || g.len() > 4 || n == out.len() {
                return None;
            }
            let mut v = 0u16;
            for &b in g {
                v = v << 4 | char::from(b).to_digit(16)? as u16;
            }
            out[n] = v;
            n += 1;
        }
        Some(n)
    }
    let b = s.as_bytes();
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let double = b.windows(2).position(|w| w == b"::");
    let (h, t) = match double {
        Some(at) => (
            groups(&b[..at], &mut head[..7])?,
            groups(&b[at + 2..], &mut tail[..7])?,
        ),
        None => (groups(b, &mut head)?, 0),
    };
    match double {
        None if h == 8 => {}
        // `::` stands for at least one group of zeros.
        Some(_) if h + t <= 7 => head[8 - t..].copy_from_slice(&tail[..t]),
        _ => return None,
    }
    Some(head.into())
}

/// The common case of [`parse_ip`] without the standard parser's
/// generality: four decimal octets, no leading zeros, as the standard
/// parser accepts them. `None` leaves the text to it.
fn dotted_quad(s: &str) -> Option<std::net::Ipv4Addr> {
    // One pass over the bytes (splitting on '.' searched for each dot).
    let b = s.as_bytes();
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, o) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut n = 0u16;
        while i < b.len() && i - start < 3 && b[i].is_ascii_digit() {
            n = n * 10 + u16::from(b[i] - b'0');
            i += 1;
        }
        if i == start || (i - start > 1 && b[start] == b'0') {
            return None;
        }
        *o = u8::try_from(n).ok()?;
    }
    (i == b.len()).then_some(std::net::Ipv4Addr::from(octets))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_account_form_agrees_with_the_general_one() {
        let forms = [
            AccountForm::default(),
            AccountForm {
                subaddress: "+-".into(),
                default_domain: Some("example.jp".into()),
            },
        ];
        let seeds = [
            "frank@example.jp",
            "frank",
            "Frank@Example.JP",
            "frank+news@example.jp",
            "frank-news@example.jp",
            "frank@example.jp.",
            " frank@example.jp",
            "frank@example.jp\t",
            "fr\u{200b}ank@example.jp",
            "ｆｒａｎｋ＠ｅｘａｍｐｌｅ．ｊｐ",
            "",
            ".",
            "@",
            "+x@example.jp",
            "a\u{7f}b@example.jp",
        ];
        let long = "a".repeat(MAX_ACCOUNT_BYTES) + "@x";
        let mut cases: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        cases.push(long);
        cases.push("a".repeat(MAX_ACCOUNT_BYTES));
        // Every seed with each printable ASCII byte put at each end.
        for seed in seeds {
            for c in 0x20u8..0x7f {
                cases.push(format!("{}{seed}", c as char));
                cases.push(format!("{seed}{}", c as char));
            }
        }
        for form in &forms {
            for c in &cases {
                assert_eq!(
                    canonical_account(c, form),
                    canonical_in_general(c, form),
                    "{c:?}"
                );
            }
        }
    }

    #[test]
    fn the_quick_ipv4_parser_agrees_with_the_standard_one() {
        let cases = [
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.4 ",
            "1.2.3.a",
            "1000.1.1.1",
            "+1.2.3.4",
            "1.2.3.04",
            "10.0.0.10",
            "",
        ];
        for c in cases {
            let std = c.parse::<std::net::Ipv4Addr>().ok();
            assert_eq!(dotted_quad(c), std, "{c:?}");
        }
        for n in 0..2000u32 {
            let s = format!("{}.{}.{}.{}", n % 300, n / 7 % 260, n % 10, n / 3);
            assert_eq!(dotted_quad(&s), s.parse().ok(), "{s}");
        }
    }

    #[test]
    fn the_quick_ipv6_parser_agrees_with_the_standard_one() {
        let agrees = |c: &str| {
            if let Some(quick) = hex_groups(c) {
                assert_eq!(Some(quick), c.parse().ok(), "{c:?}");
            }
            hex_groups(c).is_some()
        };
        for c in [
            "2001:db8::1",
            "::",
            "::1",
            "1::",
            "2001:DB8:0:0:8:800:200C:417A",
            "fe80::1:2:3:4:5:6",
            "0000:0000:0000:0000:0000:0000:0000:0001",
            "::ffff:c000:0201",
        ] {
            assert!(agrees(c), "not on the quick path: {c}");
        }
        for c in [
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4::5:6:7:8",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            ":::",
            "1:::2",
            "1::2::3",
            ":1::2",
            "1::2:",
            "12345::",
            "g::1",
            "::ffff:192.0.2.1",
            "",
            ":",
            "1",
        ] {
            assert!(!agrees(c), "the quick path took {c:?}");
        }
        // Random texts of the characters an address is made of: the quick
        // path takes only what the standard parser reads the same.
        let alphabet = b"0123456789abcdefABCDEF:::::0.g";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut taken = 0;
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            let text: String = (0..len)
                .map(|_| char::from(alphabet[next() as usize % alphabet.len()]))
                .collect();
            let text = text.replacen(":::", "::", 1);
            taken += usize::from(agrees(&text));
        }
        assert!(
            taken > 100,
            "the random texts reach the quick path ({taken})"
        );
    }
}
