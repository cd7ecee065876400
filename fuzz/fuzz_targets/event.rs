//! The event parser on arbitrary bytes: it never panics, and what it
//! accepts keeps the contract's promises.
#![no_main]

use credwatch::source::event::{parse_event, ParseLimits, RejectReason};
use libfuzzer_sys::fuzz_target;

/// 2026-11-28T00:00:00Z: a fixed "now", so a crash reproduces.
const NOW: i64 = 1_795_737_600_000;

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::new(65_536, NOW);
    match parse_event(data, &limits) {
        Ok(ev) => {
            let account = &*ev.account;
            assert!(!account.is_empty(), "accepted an empty account");
            assert!(account.len() <= 320, "accepted an account of {} bytes", account.len());
            assert!(
                !account.chars().any(char::is_control),
                "accepted control characters in an account"
            );
            assert_eq!(account, account.trim(), "the account is not trimmed");
            assert!(ev.ts >= 946_684_800_000, "accepted a time before 2000");
            assert!(ev.ts <= NOW + limits.max_future, "accepted a time too far ahead");
            if let Some(ip) = ev.src_ip {
                assert_eq!(ip, ip.to_canonical(), "a mapped address was not unmapped");
            }
        }
        Err(r) => {
            assert!(RejectReason::ALL.contains(&r.reason));
            // A reject's detail goes into logs and headers: it must be one
            // short line that names no value from the payload.
            assert!(r.detail.len() < 200, "long detail: {}", r.detail);
            assert!(!r.detail.contains('\n'), "multi-line detail: {}", r.detail);
        }
    }
});
