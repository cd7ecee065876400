//! Standard Webhooks v1 signatures: the secrets, and the signature header.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The keys of `webhook.secret`: `whsec_` + base64, several separated by
/// spaces. The error never contains the value.
pub fn parse_secrets(text: &str) -> Result<Vec<Vec<u8>>, String> {
    text.split_whitespace()
        .enumerate()
        .map(|(i, s)| {
            let b64 = s.strip_prefix("whsec_").ok_or_else(|| {
                format!("secret #{} must start with whsec_ followed by the base64 key (the value is not shown)", i + 1)
            })?;
            let key = B64
                .decode(b64)
                .map_err(|_| format!("secret #{} is not valid base64 after whsec_ (the value is not shown)", i + 1))?;
            if key.is_empty() {
                return Err(format!("secret #{} is empty", i + 1));
            }
            Ok(key)
        })
        .collect()
}

/// `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))
/// for each key, separated by spaces.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference
        // libraries (msg_p5jXN8AQM9LWM0D4loKWxJek, MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw).
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &keys,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  whsec_c2Vjb25k").unwrap();
        let sig = sign(&keys, "cw_1", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        for (bad, says) in [
            ("sk_live_abcdefgh", "must start with whsec_"),
            ("whsec_***secret***", "not valid base64"),
            ("whsec_", "is empty"),
            (
                "whsec_c2Vjb25k sk_live_abcdefgh",
                "secret #2 must start with whsec_",
            ),
        ] {
            let e = parse_secrets(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            for part in bad.split_whitespace() {
                let value = part.trim_start_matches("whsec_");
                assert!(value.is_empty() || !e.contains(value), "{bad}: {e}");
            }
        }
    }
}
