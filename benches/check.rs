//! Criterion benches of the Check path, in-process (no gRPC hop):
//! - `jwt/warm`: a cached JWT through the full decide + the answer encoded
//!   (what tonic writes);
//! - `jwt/cold/{RS256,ES256,EdDSA}`: a unique token each iteration (full
//!   signature verification and claim checks, the answer encoded);
//! - `pat/cached`: a PAT through the full decide (validator cache hit);
//! - `pat/uncached_postgres`: the same PAT with its cache entry evicted every
//!   iteration, against real Postgres (`PORTCULLIS_BENCH_PG_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`; skipped if unreachable);
//! - `sig/RS256/{parsed,unparsed}`: the RS256 signature alone in aws-lc,
//!   key parsed once or on every call (the primitive under `jwt/cold`);
//! - `response/allow`, `response/deny`: decision → the answer's bytes
//!   (what tonic writes): the allow includes the dynamic metadata; its
//!   identity part is written from the identity on every encode
//!   (`authz::render`);
//! - `assertion/hit`: a cached signed identity assertion (hash + lookup);
//!   `assertion/sign`: signing one (ES256), what a miss costs;
//! - `dpop/warm`: a cached DPoP-bound JWT (`cnf.jkt`) with a fresh ES256
//!   proof each iteration, through the full decide + CheckResponse build
//!   (compare with `jwt/warm`: the same token path, bearer);
//! - `dpop/proof_verify`: one proof checked alone (header, RFC 7638
//!   thumbprint, ES256 signature, claims, replay cache).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::authz::request::RequestView;
use portcullis::authz::{CheckInput, CheckService, Decision, Denial, Engine, response};
use portcullis::config::{Config, IssuerConfig};
use portcullis::dpop::{DpopConfig, ProofInput, ReplayCache};
use portcullis::jwt::IssuerKeys;
use portcullis::jwt::keys::parse_jwks;
use portcullis_testkit::Req;
use portcullis_testkit::dpop::DpopClient;
use portcullis_testkit::pg::ScratchDb;
use prost::Message;

const ISS: &str = "https://kc.example.org/realms/bench";

struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
}

fn signer(alg: Algorithm) -> Signer {
    // jsonwebtoken cannot derive an Ed25519 JWK from an EncodingKey
    // (`unimplemented!`), so that one is built from the public key.
    let mut ed_jwk = None;
    let key = match alg {
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
            let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        }
        Algorithm::ES256 => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            EncodingKey::from_ec_der(doc.as_ref())
        }
        Algorithm::EdDSA => {
            use aws_lc_rs::signature::KeyPair;
            use base64::Engine;
            let pair = Ed25519KeyPair::generate().unwrap();
            let x =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            ed_jwk = Some(Jwk {
                common: jsonwebtoken::jwk::CommonParameters {
                    key_algorithm: Some(jsonwebtoken::jwk::KeyAlgorithm::EdDSA),
                    ..Default::default()
                },
                algorithm: jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(
                    jsonwebtoken::jwk::OctetKeyPairParameters {
                        key_type: jsonwebtoken::jwk::OctetKeyPairType::OctetKeyPair,
                        curve: jsonwebtoken::jwk::EllipticCurve::Ed25519,
                        x,
                    },
                ),
            });
            EncodingKey::from_ed_der(pair.to_pkcs8().unwrap().as_ref())
        }
        _ => unreachable!(),
    };
    let mut jwk = ed_jwk.unwrap_or_else(|| Jwk::from_encoding_key(&key, alg).unwrap());
    jwk.common.key_id = Some(format!("{alg:?}"));
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Signer { alg, key, jwk }
}

fn mint(s: &Signer, n: u64) -> String {
    mint_with(s, n, serde_json::json!({}))
}

/// As [`mint`], with `extra` claims merged in.
fn mint_with(s: &Signer, n: u64, extra: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISS, "sub": format!("user-{n}"), "aud": ["api", "account"], "azp": "web",
        "typ": "Bearer", "iat": now, "exp": now + 3600, "jti": format!("jti-{n}"),
        "preferred_username": "alice", "email": "alice@example.org",
        "scope": "openid uploads:read uploads:write",
    });
    let mut claims = claims;
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let mut h = Header::new(s.alg);
    h.kid = s.jwk.common.key_id.clone();
    jsonwebtoken::encode(&h, &claims, &s.key).unwrap()
}

fn service(signers: &[&Signer]) -> CheckService {
    let cfg = Config::default();
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(portcullis::store::Store::connect(&cfg.store, &dir))
        .unwrap();
    rt.block_on(store.migrate()).unwrap();
    service_with_store(signers, store).0
}

/// The service over `store`, and its PAT validator (to evict entries).
fn service_with_store(
    signers: &[&Signer],
    store: portcullis::store::Store,
) -> (CheckService, Arc<portcullis::pat::PatValidator>) {
    let jwks = JwkSet {
        keys: signers.iter().map(|s| s.jwk.clone()).collect(),
    };
    let keys = parse_jwks(&serde_json::to_vec(&jwks).unwrap())
        .unwrap()
        .keys;
    let mut ic = IssuerConfig::new(ISS, "api");
    ic.algorithms = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    // Bearer or DPoP: no cost for bearer tokens (`jwt/*`), proofs for `dpop/*`.
    ic.dpop = portcullis::dpop::DpopMode::Allowed;
    let mut cfg = Config {
        issuers: vec![ic],
        ..Default::default()
    };
    cfg.policy.default = portcullis::policy::DefaultAction::Authenticated;
    let pats = Arc::new(portcullis::pat::PatValidator::new(store, &cfg.pat));
    // Loaded and empty: JWTs are checked in memory, as in the server.
    let denylist = portcullis::revocation::JwtDenyList::new(1000);
    denylist.load_all(&[], 0);
    let shared = portcullis::authz::SharedParts {
        pats: pats.clone(),
        denylist: Arc::new(denylist),
        dpop: Arc::new(portcullis::authz::DpopState::new(Default::default())),
    };
    // The issuer's key manager holds the signers' keys: nothing is fetched.
    let keys = std::sync::Mutex::new(Some(keys));
    let engine = Engine::build_reusing(cfg.engine(), None, shared, |ic| {
        let keys = keys.lock().unwrap().take()?;
        Some(IssuerKeys::fixed(ic, keys))
    })
    .unwrap();
    (
        CheckService::new(Arc::new(ArcSwap::from_pointee(engine))),
        pats,
    )
}

/// A PAT inserted into `store`: (raw token, its hash).
async fn insert_pat(store: &portcullis::store::Store) -> (String, portcullis::pat::TokenHash) {
    use portcullis::pat::format;
    let raw = format::generate("pat_");
    let now = chrono::Utc::now();
    let hash = format::hash(&raw);
    store
        .insert(portcullis::store::NewToken {
            id: uuid::Uuid::new_v4(),
            user_id: "bench".into(),
            // A configured issuer: PATs of other issuers' users are refused.
            user_issuer: ISS.into(),
            username: "bench".into(),
            name: "bench".into(),
            description: None,
            token_hash: hash,
            display_hint: format::display_hint("pat_", &raw),
            scopes: vec!["uploads:*".into()],
            created_at: now,
            expires_at: now + chrono::TimeDelta::days(1),
            rotated_from: None,
            kind: portcullis::store::TokenKind::Opaque,
            jti: None,
            hash_version: Default::default(),
        })
        .await
        .unwrap();
    (raw, hash)
}

/// PATs through the full decide: cached (SQLite), and uncached (Postgres).
fn pat_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rs = signer(Algorithm::RS256);
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default();
    let (svc, _) = rt.block_on(async {
        let store = portcullis::store::Store::connect(&cfg.store, dir.path())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (raw, _) = insert_pat(&store).await;
        let (svc, pats) = service_with_store(&[&rs], store);
        let req = request(&raw);
        assert!(matches!(svc.reply(&req).await.0, Decision::Allow(_)));
        ((svc, req), pats)
    });
    let (svc, req) = svc;
    c.bench_function("pat/cached", |b| {
        b.to_async(&rt).iter(|| async { svc.reply(&req).await })
    });

    let admin_url = std::env::var("PORTCULLIS_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let scratch = match rt.block_on(ScratchDb::create(&admin_url, "portcullis_bench_check")) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("postgres at {admin_url} unreachable ({e}): skipping pat/uncached_postgres");
            return;
        }
    };
    let store_cfg = portcullis::store::StoreConfig {
        kind: portcullis::store::StoreKind::Postgres,
        url: Some(scratch.url.clone()),
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let (svc, pats, req, hash) = rt.block_on(async {
        let store = portcullis::store::Store::connect(&store_cfg, std::path::Path::new("."))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (raw, hash) = insert_pat(&store).await;
        let (svc, pats) = service_with_store(&[&rs], store);
        (svc, pats, request(&raw), hash)
    });
    c.bench_function("pat/uncached_postgres", |b| {
        b.to_async(&rt).iter(|| async {
            pats.evict(&hash).await;
            let (d, _) = svc.reply(&req).await;
            assert!(matches!(d, Decision::Allow(_)));
        })
    });
    drop((svc, pats));
    let _ = rt.block_on(scratch.drop_db());
}

/// The benchmarked request: a GET with a bearer token and two more headers.
/// As the gRPC server decodes it: the benches time the handler alone.
fn request(token: &str) -> CheckInput {
    Req::get("/api/v1/uploads/42?x=1")
        .host("api.example.org")
        .bearer(token)
        .header("user-agent", "bench")
        .header("x-request-id", "abc")
        .input()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rs = signer(Algorithm::RS256);
    let es = signer(Algorithm::ES256);
    let ed = signer(Algorithm::EdDSA);
    let svc = service(&[&rs, &es, &ed]);

    let warm = request(&mint(&rs, 0));
    rt.block_on(svc.reply(&warm));
    // Each iteration also encodes the answer, as tonic does: the identity
    // part is written from the identity at encode (`authz::render`), so
    // `reply` alone would leave that cost out.
    c.bench_function("jwt/warm", |b| {
        b.iter(|| rt.block_on(svc.reply(&warm)).1.encode_to_vec());
    });

    let mut g = c.benchmark_group("jwt/cold");
    for s in [&rs, &es, &ed] {
        let mut n = 1u64;
        g.bench_function(format!("{:?}", s.alg), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    request(&mint(s, n))
                },
                |req| {
                    let (d, reply) = rt.block_on(svc.reply(&req));
                    assert!(matches!(d, Decision::Allow(_)));
                    reply.encode_to_vec()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // The primitive alone, for scale: one RS256 signature checked by aws-lc
    // with the key parsed once (what `jwt/cold/RS256` spends on the
    // signature), and with the key parsed on every call (what jsonwebtoken
    // does with a `DecodingKey`).
    {
        use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
        use base64::Engine;
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let jsonwebtoken::jwk::AlgorithmParameters::RSA(p) = &rs.jwk.algorithm else {
            unreachable!("RS256 signer has an RSA JWK")
        };
        let (n, e) = (b64(&p.n), b64(&p.e));
        let components = RsaPublicKeyComponents { n: &n, e: &e };
        let parsed = components
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .unwrap();
        let token = mint(&rs, 1);
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = b64(sig);
        c.bench_function("sig/RS256/parsed", |b| {
            b.iter(|| parsed.verify_sig(input.as_bytes(), &sig).unwrap())
        });
        c.bench_function("sig/RS256/unparsed", |b| {
            b.iter(|| {
                components
                    .verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig)
                    .unwrap()
            })
        });
    }

    let (allow, _) = rt.block_on(svc.reply(&warm));
    let view_req = request("x");
    let view = RequestView::new(&view_req);
    let deny = Decision::Deny(Denial::unauthenticated("invalid_token", "token expired"));
    c.bench_function("response/allow", |b| {
        b.iter(|| response::reply(&allow, &view).encode_to_vec())
    });
    c.bench_function("response/deny", |b| {
        b.iter(|| response::reply(&deny, &view).encode_to_vec())
    });

    let dir = tempfile::tempdir().unwrap();
    let signer = portcullis::authz::assertion::Assertions::load(
        &portcullis::authz::assertion::AssertionConfig::default(),
        dir.path(),
    )
    .unwrap();
    let Decision::Allow(id) = &allow else {
        panic!("warm token must be allowed")
    };
    signer.assertion(id, "orders", "orders-api").unwrap();
    c.bench_function("assertion/hit", |b| {
        b.iter(|| signer.assertion(id, "orders", "orders-api").unwrap())
    });
    let mut n = 0u64;
    c.bench_function("assertion/sign", |b| {
        b.iter(|| {
            n += 1;
            signer.assertion(id, "orders", &n.to_string()).unwrap()
        })
    });
}

/// DPoP: a bound token (cached after the first Check) with a new proof per
/// iteration, each made before its iteration (a `jti` is single-use).
fn dpop_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rs = signer(Algorithm::RS256);
    let svc = service(&[&rs]);
    let client = DpopClient::new();
    let token = mint_with(&rs, 0, serde_json::json!({"cnf": {"jkt": client.jkt()}}));
    let url = dpop_request(&token, "").url();
    let with_proof = || dpop_request(&token, &client.proof("GET", &url, &token)).input();
    let (first, _) = rt.block_on(svc.reply(&with_proof()));
    assert!(matches!(first, Decision::Allow(_)), "{first:?}");

    let mut g = c.benchmark_group("dpop");
    g.bench_function("warm", |b| {
        b.iter_batched(
            with_proof,
            |req| {
                let (d, _) = rt.block_on(svc.reply(&req));
                assert!(matches!(d, Decision::Allow(_)));
            },
            BatchSize::SmallInput,
        )
    });

    let cfg = DpopConfig::default();
    let replay = ReplayCache::new(cfg.replay_cache_capacity, cfg.max_age + 2 * cfg.leeway);
    let jkt = client.jkt();
    let normalised = portcullis::dpop::htu::normalize(&url).unwrap();
    g.bench_function("proof_verify", |b| {
        b.iter_batched(
            || client.proof("GET", &url, &token),
            |proof| {
                let input = ProofInput {
                    proof: &proof,
                    method: "GET",
                    url: &normalised,
                    access_token: &token,
                    expected_jkt: &jkt,
                    now: portcullis::jwt::unix_now(),
                };
                portcullis::dpop::proof::verify(&input, &cfg, &replay).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// [`request`]'s DPoP twin: `Authorization: DPoP` and the `DPoP` header.
fn dpop_request(token: &str, proof: &str) -> Req {
    Req::get("/api/v1/uploads/42?x=1")
        .host("api.example.org")
        .dpop(token, proof)
        .header("user-agent", "bench")
        .header("x-request-id", "abc")
}

criterion_group! {
    name = check;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches, dpop_benches, pat_benches
}
criterion_main!(check);
