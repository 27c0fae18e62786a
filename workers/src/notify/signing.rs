//! Standard Webhooks signatures (contract section 13): `webhook-signature` is
//! `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`, keyed with the
//! base64-decoded part of a `whsec_` secret. While a secret is rotated the operator configures two
//! (space-separated) and every request carries one signature per secret, so receivers holding
//! either verify it. Receivers use any Standard Webhooks library; the unit test below reproduces
//! the specification's published test vector, which is what says they will accept ours.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What is wrong with `WEBHOOK_SECRET`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("WEBHOOK_SECRET is empty")]
    Empty,
    #[error("a WEBHOOK_SECRET entry does not start with whsec_")]
    NoPrefix,
    #[error("a WEBHOOK_SECRET entry is not base64 after whsec_")]
    NotBase64,
    #[error("a WEBHOOK_SECRET entry decodes to {0} bytes (24 to 64 are needed)")]
    Length(usize),
}

/// The configured secrets' keys, in the order they were given.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl Signer {
    /// Parses `WEBHOOK_SECRET`: one or more `whsec_<base64>` separated by spaces.
    pub fn parse(secrets: &str) -> Result<Signer, SecretError> {
        let keys = secrets
            .split_whitespace()
            .map(decode_secret)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` header: one `v1,<signature>` per secret, space-separated.
    pub fn signature_header(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|key| sign(key, webhook_id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix("whsec_").ok_or(SecretError::NoPrefix)?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::NotBase64)?;
    // The contract asks for 24-64 random bytes; the specification's own test vector has 24.
    if !(24..=64).contains(&key.len()) {
        return Err(SecretError::Length(key.len()));
    }
    Ok(key)
}

/// One `v1,<base64>` signature with one key.
fn sign(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// The Standard Webhooks specification's test vector (the reference libraries test against it).
    #[test]
    fn the_specification_test_vector_is_reproduced() {
        let signer = Signer::parse(VECTOR_SECRET).expect("the vector's secret");
        assert_eq!(
            signer.signature_header(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_while_rotating_give_two_signatures_in_their_order() {
        let other = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let signer = Signer::parse(&format!("{VECTOR_SECRET}  {other}")).expect("two secrets");
        let header = signer.signature_header(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let signatures: Vec<&str> = header.split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(
            signatures[0],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signatures[1].starts_with("v1,"));
        assert_ne!(signatures[0], signatures[1]);
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert_eq!(Signer::parse("").err(), Some(SecretError::Empty));
        assert_eq!(
            Signer::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").err(),
            Some(SecretError::NoPrefix)
        );
        assert_eq!(
            Signer::parse("whsec_%%%").err(),
            Some(SecretError::NotBase64)
        );
        let short = format!("whsec_{}", STANDARD.encode([1u8; 16]));
        assert_eq!(Signer::parse(&short).err(), Some(SecretError::Length(16)));
    }
}
