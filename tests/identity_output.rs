//! What an allow tells Envoy and the upstream, over real gRPC: dynamic
//! metadata, configurable identity headers (`identity_headers`), removal of
//! spoofed copies, `strip_credential`, and the refusals of `config check`.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use envoy_types::pb::google::protobuf::value::Kind;

use portcullis::server::Running;
use portcullis_testkit::check::{Req, allowed, check, serve_yaml, wait_ready};
use portcullis_testkit::in_process::create_pat;
use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
use serde_json::json;

struct Env {
    kc: FakeKeycloak,
    srv: Running,
    _dir: tempfile::TempDir,
}

async fn env(extra: &str) -> Env {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n{extra}",
        kc.issuer()
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, Duration::from_secs(20)).await;
    Env { kc, srv, _dir: dir }
}

impl Env {
    fn jwt(&self, extra: serde_json::Value) -> String {
        let mut c = self.kc.claims("user-1");
        c["aud"] = json!(["portcullis", "account"]);
        c["email"] = json!("user-1@example.org");
        c["scope"] = json!("a:read b:write");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        self.kc.sign(&c, &SignOpts::default())
    }

    async fn pat(&self, user: &str) -> (String, portcullis::store::TokenRecord) {
        let store = self.srv.engine.load().pats().store().clone();
        let name = format!("{user}-name");
        create_pat(&store, user, &name, &self.kc.issuer(), &["a:read"]).await
    }

    async fn check(&self, req: &Req) -> CheckResponse {
        check(self.srv.grpc_addr, req).await
    }
}

/// The dynamic metadata as string fields (nested `claims` flattened as `claims.x`).
fn metadata(resp: &CheckResponse) -> HashMap<String, String> {
    let md = resp
        .dynamic_metadata
        .as_ref()
        .expect("dynamic_metadata set");
    let mut out = HashMap::new();
    for (k, v) in &md.fields {
        match &v.kind {
            Some(Kind::StringValue(s)) => {
                out.insert(k.clone(), s.clone());
            }
            Some(Kind::StructValue(st)) => {
                for (k2, v2) in &st.fields {
                    if let Some(Kind::StringValue(s)) = &v2.kind {
                        out.insert(format!("{k}.{k2}"), s.clone());
                    }
                }
            }
            other => panic!("metadata {k} is {other:?}"),
        }
    }
    out
}

fn query_removed(resp: &CheckResponse) -> Vec<String> {
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok.query_parameters_to_remove.clone(),
        other => panic!("not an allow: {other:?}"),
    }
}

const ROUTES: &str = r#"
policy:
  default: authenticated
  routes:
    - name: files
      match: { path: { prefix: /files } }
      require: { all_of: ["a:read"] }
    - name: private
      match: { path: { prefix: /private } }
      strip_credential: true
    - name: open
      match: { path: { prefix: /open } }
      auth: none
"#;

#[tokio::test]
async fn jwt_allow_carries_dynamic_metadata_with_the_route() {
    let e = env(ROUTES).await;
    let t = e.jwt(json!({}));
    let resp = e.check(&Req::get("/files/1").bearer(&t)).await;
    allowed(&resp);
    let md = metadata(&resp);
    assert_eq!(md["subject"], "user-1");
    assert_eq!(md["username"], "user-1");
    assert_eq!(md["client"], "web");
    assert_eq!(md["method"], "jwt");
    assert_eq!(md["route"], "files");
    assert_eq!(md["scopes"], "a:read b:write");
    assert_eq!(md["issuer"], e.kc.issuer());
    assert!(!md.contains_key("token_id"), "{md:?}");
    assert!(!md.contains_key("email"), "no e-mail in metadata: {md:?}");
    // A second allow of the same (cached) token on another route: the
    // identity part is reused, the route is this request's.
    let resp = e.check(&Req::get("/elsewhere").bearer(&t)).await;
    assert_eq!(metadata(&resp)["route"], "(default)");
    assert_eq!(metadata(&resp)["subject"], "user-1");
    // A public route without a credential: only the route.
    let resp = e.check(&Req::get("/open")).await;
    allowed(&resp);
    let md = metadata(&resp);
    assert_eq!(md.len(), 1, "{md:?}");
    assert_eq!(md["route"], "open");
}

#[tokio::test]
async fn pat_allow_carries_token_id_and_method_pat() {
    let e = env(ROUTES).await;
    let (raw, rec) = e.pat("alice").await;
    let resp = e.check(&Req::get("/files/1").bearer(&raw)).await;
    allowed(&resp);
    let md = metadata(&resp);
    assert_eq!(md["method"], "pat");
    assert_eq!(md["token_id"], rec.id.to_string());
    assert_eq!(md["subject"], "alice");
    assert_eq!(md["username"], "alice-name");
    assert_eq!(md["route"], "files");
    let text = format!("{:?}", resp.dynamic_metadata);
    assert!(!text.contains(&raw), "the raw PAT is never in the metadata");
}

#[tokio::test]
async fn deny_carries_no_metadata() {
    let e = env(ROUTES).await;
    let resp = e.check(&Req::get("/files/1")).await;
    assert!(resp.dynamic_metadata.is_none());
}

#[tokio::test]
async fn default_identity_headers_are_unchanged() {
    let e = env(ROUTES).await;
    let (h, removed) = allowed(
        &e.check(&Req::get("/files/1").bearer(&e.jwt(json!({}))))
            .await,
    );
    let mut names: Vec<&str> = h.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "x-auth-client",
            "x-auth-email",
            "x-auth-issuer",
            "x-auth-method",
            "x-auth-scopes",
            "x-auth-subject",
            "x-auth-username"
        ]
    );
    assert_eq!(h["x-auth-email"], "user-1@example.org");
    assert!(removed.is_empty(), "{removed:?}");
}

const CUSTOM: &str = r#"
identity_headers:
  prefix: x-user-
  set: [subject, method, scopes]
  claims:
    groups: x-user-groups
    org.tenant: X-Tenant
policy:
  default: authenticated
"#;

#[tokio::test]
async fn chosen_headers_prefix_and_mapped_claims() {
    let e = env(CUSTOM).await;
    let t = e.jwt(json!({"groups": ["/admins", "/dev"], "org": {"tenant": "acme"}}));
    let resp = e.check(&Req::get("/x").bearer(&t)).await;
    let (h, _) = allowed(&resp);
    let mut names: Vec<&str> = h.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "x-tenant",
            "x-user-groups",
            "x-user-method",
            "x-user-scopes",
            "x-user-subject"
        ]
    );
    assert_eq!(h["x-user-groups"], "/admins,/dev");
    assert_eq!(h["x-tenant"], "acme");
    assert_eq!(h["x-user-subject"], "user-1");
    let md = metadata(&resp);
    assert_eq!(md["claims.groups"], "/admins,/dev");
    assert_eq!(md["claims.org.tenant"], "acme");
}

#[tokio::test]
async fn spoofed_copies_of_every_configured_header_are_removed() {
    let e = env(CUSTOM).await;
    // The token has no tenant claim: x-tenant is not set, so the client's
    // copy must be removed; so must every x-user-* it sent that we do not set.
    let t = e.jwt(json!({"groups": ["/dev"]}));
    let req = Req::get("/x")
        .bearer(&t)
        .header("x-tenant", "evil")
        .header("X-User-Email", "admin@example.org")
        .header("x-user-subject", "admin")
        .header("x-user-groups", "/admins")
        .header("x-auth-subject", "kept: not ours under this prefix");
    for raw in [false, true] {
        let req = if raw { req.clone().raw() } else { req.clone() };
        let (h, mut removed) = allowed(&e.check(&req).await);
        removed.sort();
        assert_eq!(removed, ["x-tenant", "x-user-email"], "raw={raw}");
        assert_eq!(h["x-user-subject"], "user-1");
        assert_eq!(h["x-user-groups"], "/dev");
    }
    // A PAT has no claims: the mapped headers are removed, never passed on.
    let (raw_pat, _) = e.pat("bob").await;
    let (h, removed) = allowed(
        &e.check(
            &Req::get("/x")
                .bearer(&raw_pat)
                .header("x-user-groups", "/admins"),
        )
        .await,
    );
    assert!(!h.contains_key("x-user-groups"));
    assert_eq!(removed, ["x-user-groups"]);
}

#[tokio::test]
async fn strip_credential_removes_authorization_and_credential_headers() {
    let e = env(&format!("{ROUTES}credentials:\n  headers: [x-api-key]\n")).await;
    let t = e.jwt(json!({}));
    let (_, removed) = allowed(&e.check(&Req::get("/private/a").bearer(&t)).await);
    assert_eq!(removed, ["authorization"]);
    let (raw, _) = e.pat("carol").await;
    let (_, mut removed) = allowed(
        &e.check(&Req::get("/private/a").header("x-api-key", &raw))
            .await,
    );
    removed.sort();
    assert_eq!(removed, ["authorization", "x-api-key"]);
    // Routes without it keep the credential.
    let (_, removed) = allowed(&e.check(&Req::get("/files/a").bearer(&t)).await);
    assert!(removed.is_empty(), "{removed:?}");
}

#[tokio::test]
async fn query_credential_is_removed_upstream() {
    let yaml = r#"
policy:
  default: authenticated
  routes:
    - name: downloads
      match: { path: { prefix: /dl } }
      query_credential: true
"#;
    let e = env(yaml).await;
    let (raw, _) = e.pat("dave").await;
    let resp = e
        .check(&Req::get(&format!("/dl/f.zip?x=1&access_token={raw}")))
        .await;
    allowed(&resp);
    assert_eq!(query_removed(&resp), ["access_token"]);
    assert_eq!(metadata(&resp)["route"], "downloads");
}

fn config_check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn config_check_refuses_hop_by_hop_pseudo_and_invalid_header_names() {
    let base = "issuers:\n  - issuer: https://kc.example.org/realms/a\n    audiences: [api]\n";
    for (header, needle) in [
        ("connection", "hop-by-hop"),
        ("transfer-encoding", "hop-by-hop"),
        ("\":authority\"", "pseudo-header"),
        ("\"x tenant\"", "not a valid header name"),
    ] {
        let (ok, text) = config_check(&format!(
            "{base}identity_headers:\n  claims:\n    tenant: {header}\n"
        ));
        assert!(!ok, "{header}: accepted\n{text}");
        assert!(
            text.contains("identity_headers.claims.tenant") && text.contains(needle),
            "{header}: {text}"
        );
    }
    let (ok, text) = config_check(&format!("{base}identity_headers:\n  prefix: \"x-\"\n"));
    assert!(!ok && text.contains("identity_headers.prefix"), "{text}");
    let (ok, text) = config_check(&format!(
        "{base}identity_headers:\n  set: [subject, groups]\n"
    ));
    assert!(!ok && text.contains("identity_headers"), "{text}");
    let (ok, text) = config_check(&format!("{base}credentials:\n  headers: [x-auth-key]\n"));
    assert!(!ok && text.contains("credentials.headers[0]"), "{text}");
    let (ok, text) = config_check(&format!(
        "{base}identity_headers:\n  claims:\n    groups: x-auth-groups\ncredentials:\n  headers: [x-api-key]\n  basic: {{ enabled: true }}\n"
    ));
    assert!(ok, "{text}");
}

/// Many callers at once on the multi-thread runtime, over real gRPC: each
/// answer carries exactly its own caller's identity (the identity part is
/// written per allow in a per-thread scratch buffer). Some callers need
/// control characters replaced, some are large enough that the scratch
/// buffer is dropped after use, and each sends forged copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allows_each_carry_only_their_own_identity() {
    let e = env(
        "jwt:\n  max_token_bytes: 65536\nidentity_headers:\n  claims:\n    tenant: x-tenant\npolicy:\n  default: authenticated\n",
    )
    .await;
    let users: Vec<(String, String, String, String)> = (0..12)
        .map(|i| {
            let sub = format!("user-{i}");
            let (tenant, username) = match i % 3 {
                0 => (format!("t{i}"), format!("u{i}")),
                1 => (format!("t{i}\r\nx-injected: {i}"), format!("u{i}\u{85}")),
                // Header and metadata copies together past the 64 KiB
                // the scratch buffer keeps.
                _ => (
                    format!("t{i}{}", "z".repeat(4000)),
                    format!("u{i}{}", "y".repeat(40_000)),
                ),
            };
            let mut c = e.kc.claims(&sub);
            c["aud"] = json!(["portcullis", "account"]);
            c["scope"] = json!(format!("s{i}:read"));
            c["tenant"] = json!(tenant);
            c["preferred_username"] = json!(username);
            (sub, tenant, username, e.kc.sign(&c, &SignOpts::default()))
        })
        .collect();
    let safe = |v: &str| -> String {
        v.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let mut tasks = Vec::new();
    for round in 0..6 {
        for (sub, tenant, username, token) in users.clone() {
            let addr = e.srv.grpc_addr;
            tasks.push(tokio::spawn(async move {
                let req = Req::get(&format!("/r{round}"))
                    .bearer(&token)
                    .header("x-auth-subject", "admin")
                    .header("x-tenant", "evil");
                let resp = check(addr, &req).await;
                let (h, removed) = allowed(&resp);
                assert_eq!(h["x-auth-subject"], sub);
                assert_eq!(h.get("x-tenant"), Some(&safe(&tenant)), "{sub}");
                assert_eq!(h.get("x-auth-username"), Some(&safe(&username)), "{sub}");
                assert_eq!(h["x-auth-scopes"], format!("s{}:read", &sub[5..]));
                assert!(removed.is_empty(), "{removed:?}");
                let md = metadata(&resp);
                assert_eq!(md["subject"], sub);
                assert_eq!(md["username"], username);
                assert_eq!(md["claims.tenant"], tenant);
                assert_eq!(md["route"], "(default)");
            }));
        }
    }
    for t in tasks {
        t.await.expect("check task");
    }
}
