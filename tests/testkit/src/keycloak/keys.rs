//! Key material for the Keycloak stand-in: generation (with a process-wide
//! pool of RSA keys), Keycloak-shaped JWKs with a self-signed `x5c`
//! certificate, and compact-JWS signing with arbitrary headers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RSA_PKCS1_SHA256,
};
use aws_lc_rs::{digest, rand::SystemRandom, rsa};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};

/// Key family of a JWS algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Rsa,
    Ec,
    Ed,
    Hmac,
}

pub(super) fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
    }
}

/// The algorithm the stand-in publishes for keys of a family.
pub(super) fn published_alg(f: Family) -> Algorithm {
    match f {
        Family::Rsa => Algorithm::RS256,
        Family::Ec => Algorithm::ES256,
        Family::Ed => Algorithm::EdDSA,
        Family::Hmac => Algorithm::HS256,
    }
}

pub(super) fn alg_name(alg: Algorithm) -> String {
    match serde_json::to_value(alg) {
        Ok(Value::String(s)) => s,
        _ => format!("{alg:?}"),
    }
}

pub(super) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A Keycloak-looking kid: 43 base64url characters.
pub(super) fn random_kid() -> String {
    b64url(&rand::random::<[u8; 32]>())
}

// ---------------------------------------------------------------------------
// RSA pool: RSA-2048 generation costs ~50 ms, so keys are pre-generated in the
// background and handed out once each (no two stand-ins share a signing key).

static RSA_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static RSA_REFILLING: AtomicBool = AtomicBool::new(false);
const RSA_POOL_TARGET: usize = 4;

fn generate_rsa_pkcs8() -> Vec<u8> {
    let kp = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).expect("generate RSA-2048 key");
    let der: Pkcs8V1Der<'static> = kp.as_der().expect("RSA key to PKCS#8");
    der.as_ref().to_vec()
}

fn refill_rsa_pool_in_background() {
    if RSA_REFILLING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("fake-keycloak-rsa-pool".into())
        .spawn(|| {
            loop {
                let len = RSA_POOL.lock().unwrap_or_else(|e| e.into_inner()).len();
                if len >= RSA_POOL_TARGET {
                    break;
                }
                let k = generate_rsa_pkcs8();
                RSA_POOL.lock().unwrap_or_else(|e| e.into_inner()).push(k);
            }
            RSA_REFILLING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        RSA_REFILLING.store(false, Ordering::Release);
    }
}

/// A fresh RSA-2048 key (PKCS#8 DER) never handed out before in this process.
fn take_rsa_pkcs8() -> Vec<u8> {
    let pooled = RSA_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    refill_rsa_pool_in_background();
    pooled.unwrap_or_else(generate_rsa_pkcs8)
}

/// RSA key shared by all stand-ins for the published `use: "enc"` key.
fn shared_enc_rsa_pkcs8() -> &'static [u8] {
    static K: OnceLock<Vec<u8>> = OnceLock::new();
    K.get_or_init(generate_rsa_pkcs8)
}

/// RSA key never published by any stand-in.
fn unpublished_rsa_pkcs8() -> &'static [u8] {
    static K: OnceLock<Vec<u8>> = OnceLock::new();
    K.get_or_init(generate_rsa_pkcs8)
}

// ---------------------------------------------------------------------------

/// A private key plus its public JWK (Keycloak shape, with `kid`).
pub(super) struct KeyEntry {
    pub kid: String,
    /// The algorithm published in the JWK (`RS256`, `ES256`, `EdDSA`,
    /// `RSA-OAEP` for the enc key, `HS256` for the oct key).
    pub alg: Algorithm,
    pub active: bool,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub jwk: Value,
    /// SubjectPublicKeyInfo DER (empty for oct).
    pub spki_der: Vec<u8>,
}

fn pem_wrap(tag: &str, der: &[u8]) -> String {
    let p = pem::Pem::new(tag, der.to_vec());
    pem::encode_config(
        &p,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

impl KeyEntry {
    pub fn spki_pem(&self) -> String {
        pem_wrap("PUBLIC KEY", &self.spki_der)
    }

    fn finish(
        kid: String,
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
        spki_der: Vec<u8>,
    ) -> KeyEntry {
        let parsed: Jwk = serde_json::from_value(jwk.clone()).expect("stand-in JWK parses");
        let decoding = DecodingKey::from_jwk(&parsed).expect("stand-in JWK to DecodingKey");
        KeyEntry {
            kid,
            alg,
            active: true,
            encoding,
            decoding,
            jwk,
            spki_der,
        }
    }

    fn rsa_from_pkcs8(pkcs8: &[u8], realm: &str, use_: &str, jwk_alg: &str) -> KeyEntry {
        let kid = random_kid();
        let kp = rsa::KeyPair::from_pkcs8(pkcs8).expect("RSA PKCS#8");
        let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().expect("RSA SPKI");
        let spki_der = spki.as_ref().to_vec();
        // jsonwebtoken's RSA signer wants PKCS#1; its PEM loader extracts it from PKCS#8.
        let encoding = EncodingKey::from_rsa_pem(pem_wrap("PRIVATE KEY", pkcs8).as_bytes())
            .expect("RSA EncodingKey");
        let base = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("RSA JWK");
        let mut jwk = serde_json::to_value(&base).expect("JWK to JSON");
        let cert = self_signed_cert(
            realm,
            &spki_der,
            |tbs| {
                let rng = SystemRandom::new();
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, tbs, &mut sig)
                    .expect("RSA sign certificate");
                sig
            },
            SigAlgOid::RsaSha256,
        );
        decorate(&mut jwk, &kid, use_, jwk_alg, Some(&cert));
        KeyEntry::finish(kid, Algorithm::RS256, encoding, jwk, spki_der)
    }

    /// A fresh RSA-2048 `use: "sig"` key (`RS256`).
    pub fn new_rsa_sig(realm: &str) -> KeyEntry {
        Self::rsa_from_pkcs8(&take_rsa_pkcs8(), realm, "sig", "RS256")
    }

    /// The RSA `use: "enc"` (`RSA-OAEP`) key.
    pub fn new_rsa_enc(realm: &str) -> KeyEntry {
        Self::rsa_from_pkcs8(shared_enc_rsa_pkcs8(), realm, "enc", "RSA-OAEP")
    }

    /// An RSA key that is never published (fresh kid, shared material).
    pub fn unpublished_rsa() -> KeyEntry {
        Self::rsa_from_pkcs8(unpublished_rsa_pkcs8(), "unpublished", "sig", "RS256")
    }

    /// A fresh P-256 `ES256` signing key.
    pub fn new_ec(realm: &str) -> KeyEntry {
        let kid = random_kid();
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate P-256 key");
        let pkcs8 = doc.as_ref().to_vec();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
            .expect("P-256 PKCS#8");
        let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().expect("EC SPKI");
        let spki_der = spki.as_ref().to_vec();
        let encoding = EncodingKey::from_ec_der(&pkcs8);
        let base = Jwk::from_encoding_key(&encoding, Algorithm::ES256).expect("EC JWK");
        let mut jwk = serde_json::to_value(&base).expect("JWK to JSON");
        let cert = self_signed_cert(
            realm,
            &spki_der,
            |tbs| {
                kp.sign(&rng, tbs)
                    .expect("ECDSA sign certificate")
                    .as_ref()
                    .to_vec()
            },
            SigAlgOid::EcdsaSha256,
        );
        decorate(&mut jwk, &kid, "sig", "ES256", Some(&cert));
        KeyEntry::finish(kid, Algorithm::ES256, encoding, jwk, spki_der)
    }

    /// A fresh Ed25519 `EdDSA` signing key (Keycloak publishes OKP keys
    /// without a certificate).
    pub fn new_ed() -> KeyEntry {
        let kid = random_kid();
        let kp = Ed25519KeyPair::generate().expect("generate Ed25519 key");
        let pkcs8 = kp.to_pkcs8().expect("Ed25519 PKCS#8");
        let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().expect("Ed25519 SPKI");
        let encoding = EncodingKey::from_ed_der(pkcs8.as_ref());
        let mut jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(kp.public_key().as_ref()),
        });
        decorate(&mut jwk, &kid, "sig", "EdDSA", None);
        KeyEntry::finish(kid, Algorithm::EdDSA, encoding, jwk, spki.as_ref().to_vec())
    }

    /// A symmetric key published as `kty: "oct"` (a validator must ignore it).
    pub fn new_oct() -> KeyEntry {
        let kid = random_kid();
        let secret = rand::random::<[u8; 32]>();
        let mut jwk = json!({ "kty": "oct", "k": b64url(&secret) });
        decorate(&mut jwk, &kid, "sig", "HS256", None);
        KeyEntry::finish(
            kid,
            Algorithm::HS256,
            EncodingKey::from_secret(&secret),
            jwk,
            Vec::new(),
        )
    }
}

impl super::FakeKeycloak {
    /// Publishes fresh material of the same family under an existing
    /// signing key's `kid`, in its place (a realm that re-used a key id).
    /// Tokens signed with the old material no longer verify under that kid.
    pub fn replace_key_material(&self, kid: &str) {
        let (alg, active) = {
            let inner = self.shared.lock();
            let k = inner.sig_keys.iter().find(|k| k.kid == kid);
            let k = k.unwrap_or_else(|| panic!("no published signing key {kid}"));
            (k.alg, k.active)
        };
        let realm = self.realm();
        let mut entry = match family(alg) {
            Family::Rsa => KeyEntry::new_rsa_sig(&realm),
            Family::Ec => KeyEntry::new_ec(&realm),
            Family::Ed => KeyEntry::new_ed(),
            Family::Hmac => panic!("replace_key_material: only signing keys"),
        };
        entry.kid = kid.to_owned();
        entry.jwk["kid"] = json!(kid);
        entry.active = active;
        let mut inner = self.shared.lock();
        if let Some(slot) = inner.sig_keys.iter_mut().find(|k| k.kid == kid) {
            *slot = entry;
        }
    }
}

fn decorate(jwk: &mut Value, kid: &str, use_: &str, alg: &str, cert: Option<&[u8]>) {
    let obj = jwk.as_object_mut().expect("JWK is an object");
    obj.insert("kid".into(), json!(kid));
    obj.insert("use".into(), json!(use_));
    obj.insert("alg".into(), json!(alg));
    if let Some(cert) = cert {
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert);
        let sha256 = digest::digest(&digest::SHA256, cert);
        obj.insert("x5c".into(), json!([STANDARD.encode(cert)]));
        obj.insert("x5t".into(), json!(b64url(sha1.as_ref())));
        obj.insert("x5t#S256".into(), json!(b64url(sha256.as_ref())));
    }
}

// ---------------------------------------------------------------------------
// Minimal DER writer for a self-signed X.509 v3 certificate (CN=<realm>),
// like the one Keycloak attaches to its generated RSA/EC keys.

#[derive(Clone, Copy)]
enum SigAlgOid {
    RsaSha256,
    EcdsaSha256,
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn sig_alg_identifier(alg: SigAlgOid) -> Vec<u8> {
    match alg {
        // 1.2.840.113549.1.1.11 sha256WithRSAEncryption, NULL params
        SigAlgOid::RsaSha256 => seq(&[
            &der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
            ),
            &[0x05, 0x00],
        ]),
        // 1.2.840.10045.4.3.2 ecdsa-with-SHA256, no params
        SigAlgOid::EcdsaSha256 => seq(&[&der(
            0x06,
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        )]),
    }
}

fn self_signed_cert(
    cn: &str,
    spki_der: &[u8],
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
    alg: SigAlgOid,
) -> Vec<u8> {
    let version = der(0xa0, &der(0x02, &[0x02]));
    let mut serial_bytes = rand::random::<[u8; 8]>();
    serial_bytes[0] = (serial_bytes[0] & 0x7f) | 0x01;
    let serial = der(0x02, &serial_bytes);
    let sig_alg = sig_alg_identifier(alg);
    // Name: SEQUENCE { SET { SEQUENCE { OID 2.5.4.3 (CN), UTF8String } } }
    let name = seq(&[&der(
        0x31,
        &seq(&[&der(0x06, &[0x55, 0x04, 0x03]), &der(0x0c, cn.as_bytes())]),
    )]);
    let validity = seq(&[&der(0x17, b"250101000000Z"), &der(0x17, b"350101000000Z")]);
    let tbs = seq(&[
        &version, &serial, &sig_alg, &name, &validity, &name, spki_der,
    ]);
    let signature = sign(&tbs);
    let mut bits = vec![0u8];
    bits.extend_from_slice(&signature);
    seq(&[&tbs, &sig_alg, &der(0x03, &bits)])
}

// ---------------------------------------------------------------------------

/// Compact JWS with an arbitrary JSON header (so tests can add `crit`, `jku`,
/// duplicate `alg`s, drop `typ`, ...). The signature is computed with `alg`
/// regardless of what the header claims.
pub(super) fn sign_compact(
    header: &Map<String, Value>,
    claims: &Value,
    key: &EncodingKey,
    alg: Algorithm,
) -> String {
    let h = b64url(&serde_json::to_vec(header).expect("header JSON"));
    let c = b64url(&serde_json::to_vec(claims).expect("claims JSON"));
    let message = format!("{h}.{c}");
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg)
        .unwrap_or_else(|e| panic!("signing with {alg:?} failed: {e}"));
    format!("{message}.{sig}")
}
