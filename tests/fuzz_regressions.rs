//! The fuzz targets' checks (tests/common/parser_contract.rs) on the seeds
//! in fuzz/seeds/ and on every input in fuzz/regressions/: when a fuzzer
//! finds a crash, its input is copied there under a name that says what it
//! broke (`fuzz/regressions/event/<what-it-broke>`), and it runs here, in
//! every `cargo test`, from then on.

use credwatch_testkit::parser_contract;

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = format!("{dir}/{target}/{}", e.file_name().to_string_lossy());
            if name.ends_with(".gitkeep") {
                continue;
            }
            out.push((name, std::fs::read(e.path()).expect("read input")));
        }
    }
    out.sort();
    out
}

fn run_all(target: &str, check: fn(&[u8])) -> usize {
    let all = inputs(target);
    for (name, data) in &all {
        if std::panic::catch_unwind(|| check(data)).is_err() {
            panic!("fuzz input {name} breaks the parser's promises (message above)");
        }
    }
    all.len()
}

#[test]
fn event_seeds_and_regressions_keep_the_parsers_promises() {
    let n = run_all("event", parser_contract::check_event);
    assert!(
        n >= 4,
        "the event seeds are in fuzz/seeds/event ({n} found)"
    );
}

#[test]
fn config_seeds_and_regressions_keep_the_parsers_promises() {
    let n = run_all("config", parser_contract::check_config);
    assert!(
        n >= 2,
        "the config seeds are in fuzz/seeds/config ({n} found)"
    );
}

/// The seed with a secret must be a config the parser accepts: a rejected
/// seed never reaches the redaction check (it once named a key that does
/// not exist, `policy.breaker.max_lock_share`, and checked nothing).
#[test]
fn the_config_seed_with_a_secret_is_accepted_and_redacted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/config/full.toml");
    let text = std::fs::read_to_string(path).expect("read the seed");
    let settings = credwatch::config::Config::from_toml_with_env(&text, "full.toml", &[])
        .unwrap_or_else(|e| panic!("fuzz/seeds/config/full.toml is not a valid config: {e}"));
    let secret = settings.config.webhook.secret.clone();
    assert!(secret.starts_with("whsec_") && secret.len() >= 12);
    let printed = settings.config.to_redacted_toml();
    assert!(!printed.contains(&secret) && printed.contains("<redacted>"));
}

#[test]
fn account_seeds_and_regressions_keep_the_parsers_promises() {
    let n = run_all("account", parser_contract::check_account);
    assert!(
        n >= 8,
        "the account seeds are in fuzz/seeds/account ({n} found)"
    );
}

#[test]
fn maillog_seeds_and_regressions_keep_the_readers_promises() {
    let n = run_all("maillog", parser_contract::check_maillog);
    assert!(
        n >= 4,
        "the maillog seeds are in fuzz/seeds/maillog ({n} found)"
    );
}
