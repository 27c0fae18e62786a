//! Standard Webhooks signatures (contract section 13): `webhook-signature` is
//! `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`, keyed with the
//! base64-decoded part of a `whsec_` secret. While a secret is rotated the operator configures two
//! (space-separated) and every request carries one signature per secret, so receivers holding
//! either verify it. Receivers use any Standard Webhooks library; the unit test below reproduces
//! the specification's published test vector, which is what says they will accept ours.
//!
//! One implementation for both ends the system has: the notify worker signs with it, and the
//! gateway's development-mode receiver (`gateway/src/dev.rs`) verifies with it.

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
            .map(|key| {
                format!(
                    "v1,{}",
                    STANDARD.encode(mac(key, webhook_id, timestamp, body))
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A receiver's check: some `v1,` entry of `header` is the signature of the request with one
    /// of the secrets (compared in constant time), and `timestamp` is within [`TOLERANCE_SECS`]
    /// of `now` (unix seconds), so a captured request cannot be replayed later.
    pub fn verify(
        &self,
        webhook_id: &str,
        timestamp: i64,
        body: &[u8],
        header: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        if now.abs_diff(timestamp) > TOLERANCE_SECS {
            return Err(VerifyError::Timestamp);
        }
        let signatures: Vec<Vec<u8>> = header
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .collect();
        let matches = self.keys.iter().any(|key| {
            signatures.iter().any(|signature| {
                hmac(key, webhook_id, timestamp, body)
                    .verify_slice(signature)
                    .is_ok()
            })
        });
        if matches {
            Ok(())
        } else {
            Err(VerifyError::Signature)
        }
    }
}

/// How far a request's `webhook-timestamp` may be from the receiver's clock (the specification's
/// five minutes).
pub const TOLERANCE_SECS: u64 = 300;

/// Why a receiver refuses a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("webhook-timestamp is more than five minutes away from now")]
    Timestamp,
    #[error("no webhook-signature entry matches")]
    Signature,
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

/// The HMAC of one request with one key, fed `"<webhook-id>.<webhook-timestamp>.<body>"`.
fn hmac(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
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
    mac
}

/// The raw signature of one request with one key.
fn mac(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    hmac(key, webhook_id, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
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
    fn a_receiver_verifies_the_vector_and_refuses_forgeries_and_stale_requests() {
        let signer = Signer::parse(VECTOR_SECRET).expect("the vector's secret");
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(signer.verify(id, ts, body, header, ts + 10), Ok(()));
        // Any entry may match: a sender rotating its secret sends two.
        let rotating = format!("v1,bm90IGl0 {header}");
        assert_eq!(signer.verify(id, ts, body, &rotating, ts - 299), Ok(()));
        assert_eq!(
            signer.verify(id, ts, br#"{"test": 1}"#, header, ts),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            signer.verify("msg_other", ts, body, header, ts),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            signer.verify(
                id,
                ts,
                body,
                "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                ts
            ),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            signer.verify(id, ts, body, "", ts),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            signer.verify(id, ts, body, header, ts + 301),
            Err(VerifyError::Timestamp)
        );
        let other = Signer::parse(&format!("whsec_{}", STANDARD.encode([7u8; 32])))
            .expect("another secret");
        assert_eq!(
            other.verify(id, ts, body, header, ts),
            Err(VerifyError::Signature)
        );
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
