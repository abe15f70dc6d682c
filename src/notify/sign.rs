//! What a webhook request carries: the JSON body of an event and its
//! signature.
//!
//! The signature is `HMAC-SHA256(secret, "{timestamp}.{delivery}.{body}")`,
//! hex, sent as `x-portcullis-signature: sha256=<hex>` with the timestamp
//! (Unix seconds) in `x-portcullis-timestamp` and the delivery id in
//! `x-portcullis-delivery`: the bytes signed are the decimal timestamp, a
//! `.`, the delivery id as sent, a `.` and the exact request body. Signing
//! the timestamp lets a receiver refuse replays of old requests (it should,
//! beyond a few minutes), and a fresh timestamp on every attempt keeps
//! retries valid. Signing the delivery id makes the receiver's
//! deduplication on it safe: a replay inside the freshness window with a
//! new id no longer verifies.

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

/// The bytes signed: `"{timestamp}.{delivery}.{body}"`.
fn message(timestamp: i64, delivery: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{timestamp}.{delivery}.").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// `sha256=<hex>` of `"{timestamp}.{delivery}.{body}"` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, delivery: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &message(timestamp, delivery, body));
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// Checks a signature the way a receiver should (constant time). For
/// tests and for Rust receivers.
pub fn verify(secret: &[u8], timestamp: i64, delivery: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &message(timestamp, delivery, body), &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_delivery_and_body() {
        // Computed independently with Python's hmac module: hmac.new(
        // b"0123456789abcdef", b"1700000000.<id>.{}", hashlib.sha256).
        let k = b"0123456789abcdef";
        let id = "0190f3a2-7d4e-7c11-9a55-1b2c3d4e5f60";
        let s = signature(k, 1_700_000_000, id, b"{}");
        assert_eq!(
            s,
            "sha256=38c267ff5c54c77ae13b2989159d41fd6c5d3e14a7e5b3238d5e0543b1f736ac"
        );
        assert!(verify(k, 1_700_000_000, id, b"{}", &s));
        assert!(!verify(k, 1_700_000_001, id, b"{}", &s));
        assert!(!verify(k, 1_700_000_000, id, b"{ }", &s));
        // A replay under a new delivery id (to pass deduplication) fails.
        let other = "0190f3a2-7d4e-7c11-9a55-1b2c3d4e5f61";
        assert!(!verify(k, 1_700_000_000, other, b"{}", &s));
        assert!(!verify(b"another key 0000", 1_700_000_000, id, b"{}", &s));
        assert!(!verify(k, 1_700_000_000, id, b"{}", "md5=00"));
    }
}
