//! Inputs found by the fuzz targets in tests/fuzz/ (scripts/fuzz), replayed
//! as ordinary tests. Each test feeds the exact bytes of the crash input and
//! checks the property the target found broken.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis::config::{Config, IssuerConfig, MapEnv};
use portcullis::jwt::keys::parse_jwks;
use portcullis::jwt::{IssuerKeys, JwtError, Verifier};
use portcullis::policy::normalize_path;

const ISS: &str = "https://kc.example.org/realms/fuzz";

/// A verifier trusting one ES256 key (kid `es`), as in the `jwt` target.
fn es256_verifier() -> (Verifier, EncodingKey) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EncodingKey::from_ec_der(doc.as_ref());
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("es".into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let body = serde_json::to_vec(&serde_json::json!({ "keys": [jwk] })).unwrap();
    let mut keys = Some(parse_jwks(&body).unwrap().keys);
    let mut ic = IssuerConfig::new(ISS, "portcullis");
    ic.algorithms = vec![Algorithm::ES256];
    let verifier = Verifier::new(&[ic], &Config::default().jwt, |ic| {
        IssuerKeys::fixed(ic, keys.take().unwrap())
    });
    (verifier, key)
}

/// Signs the exact header and payload bytes, as the `jwt` target does.
fn sign(key: &EncodingKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::ES256).unwrap();
    format!("{input}.{sig}")
}

fn verify(v: &Verifier, token: &str) -> Result<(), JwtError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(v.verify(token))
        .map(drop)
}

/// `routes` target: `normalize_path` was not idempotent. `%25` decoded to a
/// bare `%`, which a second pass rejected as an invalid escape; likewise
/// `%3F` / `%23` decoded to `?` / `#`, which a second pass cut off.
#[test]
fn routes_normalize_path_is_idempotent() {
    // Crash input, verbatim (host and method lines absent).
    let crash: &[u8] = b"/a%25";
    let raw = std::str::from_utf8(crash).unwrap();
    for raw in [
        raw,
        "/a%3Fb",
        "/a%3fb?c",
        "/a%23b",
        "/public/%252e%252e/admin",
        "/x%25%32%35",
    ] {
        let once = normalize_path(raw).unwrap();
        let twice = normalize_path(&once);
        assert_eq!(twice.as_deref(), Ok(&*once), "{raw:?} -> {once:?}");
    }
    assert_eq!(normalize_path("/a%25").unwrap(), "/a%25");
    assert_eq!(normalize_path("/a%3fb?c").unwrap(), "/a%3Fb");
    assert_eq!(normalize_path("/a%23b").unwrap(), "/a%23b");
    // Decoded once only: `%252e` is the literal text `%2e`, kept as `%252e`.
    assert_eq!(
        normalize_path("/public/%252e%252e/admin").unwrap(),
        "/public/%252e%252e/admin"
    );
}

/// `jwt` target (mode 1, signed by the trusted key): a payload with invalid
/// UTF-8 inside an unknown claim was accepted. serde_json does not check the
/// UTF-8 of strings it skips, but RFC 7519 §7.2 requires the claims set to be
/// UTF-8 JSON. The same holds for the protected header.
#[test]
fn jwt_non_utf8_segments_are_refused() {
    // Crash input, verbatim: mode byte 1, three parameter bytes, then
    // header JSON, a newline and the payload.
    let crash: &[u8] =
        b"\x01\x00\x00\x00{\"alg\":\"ES256\",\"kid\":\"es\",\"typ\":\"JWT\"}\x0a{\"iss\":\"https:/\
        /kc.example.org/realms/fuzz\",\"aud\":\"portcullis\",\"exp\":4102444800,\"typ\":\"Bearer\
        \",\"sub\":\"s\",\"preferred_ksername\":\"service-account-\xff\xff\xff\xff\xff\xff\xff\
        \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\
        \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\
        \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\
        \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\
        \xff*\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\
        \xff\xff\xff\xffx\"}";
    assert_eq!(crash.len(), 310);
    let body = &crash[4..];
    let nl = body.iter().position(|b| *b == b'\n').unwrap();
    let (header, payload) = (&body[..nl], &body[nl + 1..]);
    let (v, key) = es256_verifier();

    // The same token with valid UTF-8 is accepted: only the bytes differ.
    let clean = String::from_utf8_lossy(payload).into_owned();
    assert_eq!(verify(&v, &sign(&key, header, clean.as_bytes())), Ok(()));

    assert_eq!(
        verify(&v, &sign(&key, header, payload)),
        Err(JwtError::Malformed("payload is not valid UTF-8"))
    );
    let header_bad = b"{\"alg\":\"ES256\",\"kid\":\"es\",\"x\":\"\xff\"}";
    assert_eq!(
        verify(&v, &sign(&key, header_bad, clean.as_bytes())),
        Err(JwtError::Malformed("header is not valid UTF-8"))
    );
}

/// What the `config` target does with one input: YAML, then optionally a NUL
/// and `NAME=value` lines as the environment; load, then validate.
fn config_input(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let (yaml, env) = text.split_once('\0').unwrap_or((&text, ""));
    let env = MapEnv(
        env.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    let cfg = Config::from_yaml_str(yaml, &env).map_err(|e| e.to_string())?;
    cfg.validate()
        .map_err(|errs| format!("{} errors", errs.len()))
}

/// `config` target: figment's env value parser panicked ("byte index is not
/// a char boundary") on a quoted value with a `\` after a non-ASCII
/// character, so a `PORTCULLIS__*` variable could crash start-up.
#[test]
fn config_env_value_with_backslash_after_non_ascii() {
    // Crash input, verbatim (2112 bytes), and its minimised form.
    let crash =
        include_bytes!("fuzz/regressions/config-crash-cfb20c353fd3aae7ed120d1b4e8d1bb4ee9aac03");
    let _ = config_input(crash);
    let _ = config_input(b"\0PORTCULLIS__\xff=\"\xff\\=\"");

    // Such a value is taken literally instead of being cut short.
    let env = |v: &str| MapEnv([("PORTCULLIS__PAT__ISSUER".to_owned(), v.to_owned())].into());
    for v in ["\"é\\n\"", "\"éé\\u0041\"", "[\"ü\\\\\"]"] {
        let err = Config::from_yaml_str("", &env(v)).unwrap_err().to_string();
        assert!(err.contains(v), "{v}: {err}");
    }
    // ASCII values keep figment's parsing (quotes and escapes).
    let cfg = Config::from_yaml_str("", &env("\"opaque\"")).unwrap();
    assert!(format!("{:?}", cfg.pat).contains("Opaque"), "{:?}", cfg.pat);
}

/// `jwt` target (mode 4, `parse_jwks`): a kid published three times was
/// kept. The second copy removed the first and was skipped as a duplicate,
/// but the third was inserted again, so the "ambiguous kid is never used"
/// rule only held for exactly two copies.
#[test]
fn jwks_kid_published_three_times_is_not_used() {
    // Crash input, verbatim: mode byte 4, three parameter bytes, then the
    // JWKS (EC, OKP, an unusable RSA and another OKP, all with kid "ec1",
    // then an RSA key the fuzzer truncated).
    let crash =
        include_bytes!("fuzz/regressions/jwt-crash-77e563757f21a91f8a8d3414ac21baee8d13e464");
    assert_eq!(crash[0] % 5, 4);
    let parsed = parse_jwks(&crash[4..]).unwrap();
    assert!(parsed.keys.get("ec1").is_none(), "{:?}", parsed.keys);
    assert_eq!(
        parsed
            .skipped
            .iter()
            .filter(
                |(kid, why)| kid == "ec1" && *why == portcullis::jwt::keys::KeySkip::DuplicateKid
            )
            .count(),
        2,
        "{:?}",
        parsed.skipped
    );
}

/// `config` target: the process died with SIGSEGV and libFuzzer could not
/// save the input (a stack overflow leaves its handler no stack). Cause:
/// figment's env value parser recurses once per `[` or `{`, so
/// `PORTCULLIS__X=[[[[…` with ~1500 brackets (fewer on smaller stacks)
/// overflowed. The input below is the reconstructed trigger; values nested
/// deeper than any key needs are now taken literally.
#[test]
fn config_env_value_nested_too_deep() {
    for open in ["[", "{a=", "[{a="] {
        let mut data = b"\0PORTCULLIS__POLICY__ROUTES=".to_vec();
        data.extend(open.repeat(8000).bytes());
        // Runs on a test thread (2 MiB stack): this overflowed before.
        let _ = config_input(&data);
    }
    // Normal nesting is still parsed.
    let env = MapEnv(
        [(
            "PORTCULLIS__PAT__GRANTABLE_SCOPES".to_owned(),
            "[\"a:read\", \"b:write\"]".to_owned(),
        )]
        .into(),
    );
    let cfg = Config::from_yaml_str("", &env).unwrap();
    assert_eq!(cfg.pat.grantable_scopes, ["a:read", "b:write"]);
}
