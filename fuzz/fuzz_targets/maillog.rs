//! The Dovecot and Postfix log-line reader on arbitrary bytes (the
//! promises are in tests/support/src/parser_contract.rs, shared with
//! tests/fuzz_regressions.rs).
#![no_main]

#[path = "../../tests/support/src/parser_contract.rs"]
mod parser_contract;

libfuzzer_sys::fuzz_target!(|data: &[u8]| parser_contract::check_maillog(data));
