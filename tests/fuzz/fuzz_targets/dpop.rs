//! DPoP proof checking (`portcullis::dpop`).
//!
//! Input: 1 control byte, then the text under test (lossy UTF-8):
//! * `[0] % 3 == 0`: the text is a whole proof;
//! * `[0] % 3 == 1`: the text is the proof's claims, signed with a fixed
//!   ES256 key whose public JWK the header carries;
//! * `[0] % 3 == 2`: the text is the header's `jwk`, the proof signed with
//!   the fixed key.
//!
//! Properties:
//! * `proof::verify`, `proof::thumbprint` and `htu::normalize` never panic;
//! * `htu::normalize` is idempotent;
//! * a proof that passes names the request: `htm` equals the method, `htu`
//!   normalises to the URL, `ath` hashes the token, `iat` is in the window,
//!   and its key's thumbprint is the expected one.
#![no_main]

use std::sync::OnceLock;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use portcullis::dpop::{DpopConfig, ProofInput, ReplayCache, htu, proof, sha256_b64url};
use serde_json::{Value, json};

const URL: &str = "https://api.example.org/a";
const TOKEN: &str = "access.token.x";
const NOW: i64 = 1_800_000_000;

struct Fixed {
    key: EncodingKey,
    jwk: Value,
    jkt: String,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EncodingKey::from_ec_der(doc.as_ref());
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap())
            .unwrap();
        jwk.as_object_mut()
            .unwrap()
            .retain(|k, _| ["kty", "crv", "x", "y"].contains(&k.as_str()));
        let jkt = proof::thumbprint(jwk.as_object().unwrap()).unwrap();
        Fixed { key, jwk, jkt }
    })
}

fn sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &fixed().key, Algorithm::ES256).unwrap();
    format!("{input}.{sig}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let f = fixed();
    if let Some(n) = htu::normalize(&text) {
        assert_eq!(htu::normalize(&n).as_deref(), Some(n.as_str()), "{text:?}");
    }
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": f.jwk}).to_string();
    let proof_text = match ctl % 3 {
        0 => text.to_string(),
        1 => sign(header.as_bytes(), text.as_bytes()),
        _ => {
            let h = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{text}}}"#);
            if let Ok(Value::Object(jwk)) = serde_json::from_str::<Value>(&text) {
                let _ = proof::thumbprint(&jwk);
            }
            sign(h.as_bytes(), br#"{"jti":"j","htm":"POST","htu":"https://api.example.org/a","iat":1800000000,"ath":"x"}"#)
        }
    };
    let input = ProofInput {
        proof: &proof_text,
        method: "POST",
        url: URL,
        access_token: TOKEN,
        expected_jkt: &f.jkt,
        now: NOW,
    };
    let cfg = DpopConfig::default();
    let replay = ReplayCache::new(16, std::time::Duration::from_secs(70));
    if let Ok(ok) = proof::verify(&input, &cfg, &replay) {
        assert_eq!(ok.jkt, f.jkt);
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(proof_text.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["htm"], "POST", "{text:?}");
        let htu = claims["htu"].as_str().unwrap();
        assert_eq!(htu::normalize(htu).as_deref(), Some(URL), "{text:?}");
        assert_eq!(claims["ath"], sha256_b64url(TOKEN.as_bytes()), "{text:?}");
        let iat = claims["iat"].as_i64().unwrap();
        assert!((NOW - 65..=NOW + 5).contains(&iat), "{text:?}");
    }
});
