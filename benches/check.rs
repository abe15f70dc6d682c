//! Criterion benches of the Check path, in-process (no gRPC hop):
//! - `jwt/warm`: a cached JWT through the full decide + CheckResponse build;
//! - `jwt/cold/{RS256,ES256,EdDSA}`: a unique token each iteration (full
//!   signature verification and claim checks);
//! - `response/allow`, `response/deny`: decision → CheckResponse alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::authz::request::RequestView;
use portcullis::authz::{CheckService, Decision, Denial, Engine, response};
use portcullis::config::{Config, IssuerConfig};
use portcullis::jwt::keys::parse_jwks;
use portcullis::jwt::{IssuerKeys, Verifier};

const ISS: &str = "https://kc.example.org/realms/bench";

struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
}

fn signer(alg: Algorithm) -> Signer {
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
            let pair = Ed25519KeyPair::generate().unwrap();
            EncodingKey::from_ed_der(pair.to_pkcs8().unwrap().as_ref())
        }
        _ => unreachable!(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(format!("{alg:?}"));
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Signer { alg, key, jwk }
}

fn mint(s: &Signer, n: u64) -> String {
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
    let mut h = Header::new(s.alg);
    h.kid = s.jwk.common.key_id.clone();
    jsonwebtoken::encode(&h, &claims, &s.key).unwrap()
}

fn service(signers: &[&Signer]) -> CheckService {
    let jwks = JwkSet {
        keys: signers.iter().map(|s| s.jwk.clone()).collect(),
    };
    let keys = parse_jwks(&serde_json::to_vec(&jwks).unwrap())
        .unwrap()
        .keys;
    let mut ic = IssuerConfig::new(ISS, "api");
    ic.algorithms = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    let cfg = Config::default();
    let mut keys = Some(keys);
    let verifier = Verifier::new(&[ic], &cfg.jwt, |ic| {
        IssuerKeys::fixed(ic, keys.take().unwrap())
    });
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(portcullis::store::Store::connect(&cfg.store, &dir))
        .unwrap();
    rt.block_on(store.migrate()).unwrap();
    let mut policy = portcullis::policy::PolicyConfig::default();
    policy.default = portcullis::policy::DefaultAction::Authenticated;
    let engine = Engine {
        verifier: Arc::new(verifier),
        max_token_bytes: 8192,
        pats: Arc::new(portcullis::pat::PatValidator::new(store, &cfg.pat)),
        pat_prefix: cfg.pat.prefix.clone(),
        denylist: {
            // Loaded and empty: JWTs are checked in memory, as in the server.
            let d = portcullis::revocation::JwtDenyList::new(1000);
            d.load_all(&[], 0);
            Arc::new(d)
        },
        pat_marker_value: cfg.pat.jwt_marker.value.clone(),
        pat_exchange_audience: None,
        policy: Arc::new(portcullis::policy::Policy::compile(&policy).unwrap()),
    };
    CheckService::new(Arc::new(ArcSwap::from_pointee(engine)))
}

fn request(token: &str) -> CheckRequest {
    let mut http = HttpRequest {
        method: "GET".into(),
        host: "api.example.org".into(),
        path: "/api/v1/uploads/42?x=1".into(),
        ..Default::default()
    };
    http.headers
        .insert("authorization".into(), format!("Bearer {token}"));
    http.headers.insert("user-agent".into(), "bench".into());
    http.headers.insert("x-request-id".into(), "abc".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
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
    rt.block_on(svc.decide(&warm));
    c.bench_function("jwt/warm", |b| {
        b.iter(|| rt.block_on(svc.decide(&warm)));
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
                    let (d, _) = rt.block_on(svc.decide(&req));
                    assert!(matches!(d, Decision::Allow(_)));
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let (allow, _) = rt.block_on(svc.decide(&warm));
    let view_req = request("x");
    let view = RequestView::new(&view_req);
    let deny = Decision::Deny(Denial::unauthenticated("invalid_token", "token expired"));
    c.bench_function("response/allow", |b| {
        b.iter(|| response::build(&allow, &view))
    });
    c.bench_function("response/deny", |b| {
        b.iter(|| response::build(&deny, &view))
    });
}

criterion_group! {
    name = check;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(check);
