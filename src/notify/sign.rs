//! What a webhook request carries: the JSON body of an event and its
//! signature.
//!
//! The signature is `HMAC-SHA256(secret, "{timestamp}.{body}")`, hex,
//! sent as `x-portcullis-signature: sha256=<hex>` with the timestamp (Unix
//! seconds) in `x-portcullis-timestamp`: the bytes signed are the decimal
//! timestamp, one `.` and the exact request body. Signing the timestamp
//! lets a receiver refuse replays of old requests (it should, beyond a few
//! minutes), and a fresh timestamp on every attempt keeps retries valid.

use aws_lc_rs::hmac;
use serde_json::{Value, json};

use crate::store::EventRecord;

/// Header carrying `sha256=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-portcullis-signature";
/// Header carrying the signed timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-portcullis-timestamp";
/// Header carrying the delivery id (the same on every attempt; for idempotency).
pub const DELIVERY_HEADER: &str = "x-portcullis-delivery";
/// Header carrying the event name.
pub const EVENT_HEADER: &str = "x-portcullis-event";

/// The body of a webhook request for `e`.
pub fn body(e: &EventRecord) -> Value {
    json!({
        "id": e.id,
        "type": e.event,
        "occurred_at": e.at,
        "token_id": e.token_id,
        "owner": { "issuer": e.owner_issuer, "user_id": e.owner_id },
        "actor": e.actor,
        "data": e.data,
    })
}

/// `sha256=<hex>` of `"{timestamp}.{body}"` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

/// Checks a signature the way a receiver should (constant time). For
/// tests and for Rust receivers.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = timestamp.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"0123456789abcdef", b"1700000000.{}", hashlib.sha256).
        let s = signature(b"0123456789abcdef", 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "sha256=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
        assert!(verify(b"0123456789abcdef", 1_700_000_000, b"{}", &s));
        assert!(!verify(b"0123456789abcdef", 1_700_000_001, b"{}", &s));
        assert!(!verify(b"0123456789abcdef", 1_700_000_000, b"{ }", &s));
        assert!(!verify(b"another key 0000", 1_700_000_000, b"{}", &s));
        assert!(!verify(b"0123456789abcdef", 1_700_000_000, b"{}", "md5=00"));
    }
}
