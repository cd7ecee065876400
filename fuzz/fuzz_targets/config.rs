//! The config parser on arbitrary text: it never panics, and an accepted
//! config prints without its secret.
#![no_main]

use credwatch::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_with_env(text, "fuzz.toml", &[]) {
        Ok(settings) => {
            let printed = settings.config.to_redacted_toml();
            let secret = settings.config.webhook.secret.trim();
            if secret.len() >= 12 {
                assert!(!printed.contains(secret), "the secret is printed");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
        }
    }
});
