//! The demo receiver's check of a Standard Webhooks signature, written
//! from the specification and independent of [`crate::sink::webhook::sign`]
//! (which made the signature): the secret is decoded here, the signed
//! content built whole, and each `v1,` entry of the header verified in
//! constant time.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// True when one of the space-separated signatures in `header` is the
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` under the key of `secret`
/// (`whsec_` + base64).
pub fn standard_webhook(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
    else {
        return false;
    };
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    header.split(' ').any(|entry| {
        let Some(sig) = entry.strip_prefix("v1,").and_then(|b| B64.decode(b).ok()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(&content);
        mac.verify_slice(&sig).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::standard_webhook;

    // The Standard Webhooks specification's example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn accepts_the_specifications_example() {
        assert!(standard_webhook(SECRET, ID, "1614265330", BODY, SIG));
        assert!(standard_webhook(
            SECRET,
            ID,
            "1614265330",
            BODY,
            &format!("v1,AAAA {SIG}")
        ));
    }

    #[test]
    fn refuses_a_changed_body_timestamp_id_or_key() {
        assert!(!standard_webhook(SECRET, ID, "1614265330", b"{}", SIG));
        assert!(!standard_webhook(SECRET, ID, "1614265331", BODY, SIG));
        assert!(!standard_webhook(
            SECRET,
            "msg_other",
            "1614265330",
            BODY,
            SIG
        ));
        assert!(!standard_webhook(
            "whsec_c2Vjb25k",
            ID,
            "1614265330",
            BODY,
            SIG
        ));
        assert!(!standard_webhook(SECRET, ID, "1614265330", BODY, ""));
    }

    #[test]
    fn agrees_with_the_signer_it_checks() {
        let keys = crate::sink::webhook::parse_secrets(SECRET).unwrap();
        let sig = crate::sink::webhook::sign(&keys, "cw_1", 7, b"{\"a\":1}");
        assert!(standard_webhook(SECRET, "cw_1", "7", b"{\"a\":1}", &sig));
    }
}
