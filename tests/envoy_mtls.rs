//! Certificate-bound tokens (RFC 8705) through a real Envoy terminating
//! mutual TLS: the shipped deploy/envoy.yaml with its commented mTLS
//! listener example switched on (and `include_peer_certificate: true`),
//! certificates made by the test with rcgen. Envoy forwards the client
//! certificate in the CheckRequest's `source.certificate`; portcullis
//! allows a token whose `cnf["x5t#S256"]` is that certificate's thumbprint.
//!
//! The Keycloak stand-in only signs the token (with `cnf`); Envoy is real.
//! Needs `$PORTCULLIS_ENVOY` (or `scripts/install-envoy`).

use std::path::Path;
use std::time::Duration;

use portcullis_testkit::check::{serve_yaml, wait_ready};
use portcullis_testkit::dpop::b64_sha256;
use portcullis_testkit::echo::Echo;
use portcullis_testkit::envoy::{Envoy, shipped};
use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// A certificate and its key, PEM, and the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

/// A test CA, a server certificate for 127.0.0.1 / localhost, and two
/// client certificates (A and B) it signed.
struct Pki {
    ca_pem: String,
    server: Leaf,
    a: Leaf,
    b: Leaf,
}

fn leaf(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Leaf {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &**issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "portcullis test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    Pki {
        ca_pem: ca.pem(),
        server: leaf(
            &ca,
            "envoy",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        a: leaf(&ca, "client a", &["client-a.test"], client.clone()),
        b: leaf(&ca, "client b", &["client-b.test"], client),
    }
}

/// The shipped config with its commented mTLS example made live: the
/// commented `transport_socket` lines become part of the listener's filter
/// chain (certificate paths pointing into `dir`), and ext_authz gets
/// `include_peer_certificate: true`. Panics if the example is not there.
fn with_mtls(config: String, dir: &Path) -> String {
    const PREFIX: &str = "        #   ";
    let shipped = shipped();
    let shipped_lines: Vec<&str> = shipped.lines().collect();
    let start = shipped_lines
        .iter()
        .position(|l| l.starts_with(PREFIX) && l.trim_end().ends_with("transport_socket:"))
        .expect("deploy/envoy.yaml shows a commented transport_socket");
    let example: Vec<&str> = shipped_lines[start..]
        .iter()
        .take_while(|l| l.starts_with(PREFIX))
        .copied()
        .collect();
    let mut socket = String::new();
    for (i, l) in example.iter().enumerate() {
        let body = l[PREFIX.len()..].replace("/etc/envoy/tls/", &format!("{}/", dir.display()));
        let indent = if i == 0 { "        - " } else { "          " };
        socket.push_str(indent);
        socket.push_str(&body);
        socket.push('\n');
    }
    let chain = "        - filters:\n";
    assert_eq!(config.matches(chain).count(), 1, "one filter chain");
    let config = config.replace(chain, &format!("{socket}          filters:\n"));
    let off = "include_peer_certificate: false";
    assert_eq!(config.matches(off).count(), 1, "include_peer_certificate");
    config.replace(off, "include_peer_certificate: true")
}

fn https_client(pki: &Pki, me: &Leaf) -> reqwest::Client {
    let identity = reqwest::Identity::from_pem(format!("{}{}", me.cert_pem, me.key_pem).as_bytes())
        .expect("client identity");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .identity(identity)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client")
}

#[tokio::test]
async fn a_certificate_bound_token_passes_envoy_only_with_its_certificate() {
    let pki = pki();
    let tls = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("server.crt", &pki.server.cert_pem),
        ("server.key", &pki.server.key_pem),
        ("client-ca.crt", &pki.ca_pem),
    ] {
        std::fs::write(tls.path().join(name), text).unwrap();
    }

    let kc = FakeKeycloak::start().await;
    let yaml = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\npolicy:\n  default: authenticated\n",
        kc.issuer()
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, Duration::from_secs(30)).await;
    let echo = Echo::start().await;
    let tls_dir = tls.path().to_path_buf();
    let envoy = Envoy::start_edited(
        srv.grpc_addr,
        echo.addr,
        &[("EXT_AUTHZ_TIMEOUT", "5s")],
        &move |c| with_mtls(c, &tls_dir),
    )
    .await;

    // Bound to client certificate A.
    let mut claims = kc.claims("alice");
    claims["aud"] = json!("portcullis");
    claims["cnf"] = json!({"x5t#S256": b64_sha256(&pki.a.der)});
    let token = kc.sign(&claims, &SignOpts::default());
    let url = format!("https://127.0.0.1:{}/things/1", envoy.addr.port());
    let call = async |me: &Leaf, token: &str| {
        let resp = https_client(&pki, me)
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}\n{}", envoy.log()));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    };

    let (status, body) = call(&pki.a, &token).await;
    assert_eq!(status, 200, "{body}\n{}", envoy.log());
    let seen = echo.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-auth-subject"), Some("alice"));
    echo.clear();

    // Client certificate B is just as valid for Envoy, but not the one the
    // token is bound to. The reason shows Envoy's certificate was read.
    let (status, body) = call(&pki.b, &token).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("does not match"), "{body}");
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());

    // An unbound token works with either certificate.
    let mut plain = kc.claims("bob");
    plain["aud"] = json!("portcullis");
    let plain = kc.sign(&plain, &SignOpts::default());
    let (status, body) = call(&pki.b, &plain).await;
    assert_eq!(status, 200, "{body}");
}
