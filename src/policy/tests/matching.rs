use super::{matched, policy, yaml};
use crate::policy::*;

const HOSTS: &str = r#"
policy:
  routes:
    - name: any-admin
      match: { path: { prefix: /admin } }
    - name: wild-short
      match: { hosts: ["*.org"], path: { prefix: /admin } }
    - name: wild-long
      match: { hosts: ["*.example.org"], path: { prefix: /admin } }
    - name: exact-host
      match: { hosts: ["api.example.org", "API2.example.org"], path: { prefix: /admin } }
    - name: exact-host-get-only
      match: { hosts: ["get.example.org"], methods: [GET], path: { prefix: /admin } }
    - name: exact-host-other
      match: { hosts: ["api.example.org"], path: { exact: /only-here } }
"#;

#[test]
fn host_specificity() {
    let p = policy(HOSTS);
    let cases = [
        ("api.example.org", "GET", "/admin", "exact-host"),
        ("API.Example.ORG:8443", "GET", "/admin", "exact-host"),
        ("api.example.org.", "GET", "/admin/x", "exact-host"),
        ("api2.example.org", "GET", "/admin", "exact-host"),
        ("x.example.org", "GET", "/admin", "wild-long"),
        ("a.b.example.org", "GET", "/admin", "wild-long"),
        ("example.org", "GET", "/admin", "wild-short"),
        ("foo.org:80", "GET", "/admin", "wild-short"),
        (".org", "GET", "/admin", "any-admin"),
        ("other.net", "GET", "/admin", "any-admin"),
        ("", "GET", "/admin", "any-admin"),
        ("[::1]:8080", "GET", "/admin", "any-admin"),
        ("example.org.evil.net", "GET", "/admin", "any-admin"),
        // Exact tier has only a GET route: POST falls through to the wildcard tier.
        ("get.example.org", "POST", "/admin", "wild-long"),
        ("get.example.org", "GET", "/admin", "exact-host-get-only"),
        // Nothing in any tier.
        ("api.example.org", "GET", "/public", "<none>"),
        ("x.example.org", "GET", "/only-here", "<none>"),
        ("api.example.org", "GET", "/only-here", "exact-host-other"),
    ];
    for (host, method, path, want) in cases {
        assert_eq!(
            matched(&p, host, method, path),
            want,
            "{host} {method} {path}"
        );
    }
}

const PATHS: &str = r#"
policy:
  routes:
    - name: prefix-api
      match: { path: { prefix: /api } }
    - name: prefix-api-v1
      match: { path: { prefix: /api/v1/ } }
    - name: tmpl-upload
      match: { path: { template: "/api/v1/uploads/{id}" } }
    - name: exact-upload-new
      match: { path: { exact: /api/v1/uploads/new } }
    - name: tmpl-files
      match: { path: { template: "/api/v1/uploads/{id}/files/{*rest}" } }
    - name: tmpl-upload-dup
      match: { path: { template: "/api/v1/uploads/{upload}" } }
    - name: exact-first
      match: { path: { exact: /dup } }
    - name: exact-second
      match: { path: { exact: /dup } }
    - name: get-only
      match: { methods: [GET], path: { exact: /m } }
    - name: post-only
      match: { methods: [post], path: { template: /m } }
    - name: m-prefix
      match: { path: { prefix: /m } }
    - name: tmpl-lit
      match: { path: { template: "/t/special/{x}" } }
    - name: tmpl-param
      match: { path: { template: "/t/{a}/{b}" } }
    - name: back-literal
      match: { path: { template: "/b/x/{y}/z" } }
    - name: back-param
      match: { path: { template: "/b/{p}/c" } }
    - name: r-get
      match: { methods: [GET], path: { template: "/r/{id}" } }
    - name: r-any
      match: { path: { template: "/r/{other}" } }
    - name: r-put-special
      match: { methods: [PUT], path: { template: "/r/special" } }
    - name: r-catch
      match: { methods: [DELETE], path: { template: "/r/{*rest}" } }
    - name: p-get
      match: { methods: [GET], path: { prefix: /p/q } }
    - name: p-any
      match: { path: { prefix: /p } }
    - name: root-exact
      match: { path: { exact: / } }
"#;

#[test]
fn path_kinds_and_order() {
    let p = policy(PATHS);
    let cases = [
        // exact > template > prefix
        ("GET", "/api/v1/uploads/new", "exact-upload-new"),
        ("GET", "/api/v1/uploads/42", "tmpl-upload"),
        ("GET", "/api/v1/uploads/42/", "tmpl-upload"),
        ("GET", "/api/v1/uploads/42?x=1", "tmpl-upload"),
        // no catch-all on uploads/{id}: extra segments fall to the longest prefix
        ("GET", "/api/v1/uploads/42/extra", "prefix-api-v1"),
        ("GET", "/api/v1/uploads/42/x/y", "prefix-api-v1"),
        ("GET", "/api/v1/uploads/42/files/a/b/c", "tmpl-files"),
        ("GET", "/api/v1/uploads/42/files/a", "tmpl-files"),
        ("GET", "/api/v1/uploads/42/files", "tmpl-files"),
        ("GET", "/api/v1/uploads/42/files/", "tmpl-files"),
        ("GET", "/api/v1/uploads", "prefix-api-v1"),
        // longest prefix, segment-aligned
        ("GET", "/api/v1", "prefix-api-v1"),
        ("GET", "/api/v1x", "prefix-api"),
        ("GET", "/api/v2/x", "prefix-api"),
        ("GET", "/api", "prefix-api"),
        ("GET", "/apix", "<none>"),
        // first listed wins among equals
        ("GET", "/dup", "exact-first"),
        // method fallthrough: exact -> template -> prefix
        ("GET", "/m", "get-only"),
        ("get", "/m", "get-only"),
        ("POST", "/m", "post-only"),
        ("DELETE", "/m", "m-prefix"),
        ("GET", "/m/x", "m-prefix"),
        // template priority: literal > param, with backtracking
        ("GET", "/t/special/1", "tmpl-lit"),
        ("GET", "/t/other/1", "tmpl-param"),
        ("GET", "/t/special", "<none>"),
        ("GET", "/b/x/c", "back-param"),
        ("GET", "/b/x/1/z", "back-literal"),
        // template method fallthrough, incl. literal -> param -> catch-all
        ("GET", "/r/1", "r-get"),
        ("POST", "/r/1", "r-any"),
        ("PUT", "/r/special", "r-put-special"),
        ("GET", "/r/special", "r-get"),
        ("DELETE", "/r/special", "r-any"),
        ("DELETE", "/r/a/b", "r-catch"),
        ("GET", "/r/a/b", "<none>"),
        ("DELETE", "/r", "r-catch"),
        // prefix method fallthrough to a shorter prefix
        ("GET", "/p/q/r", "p-get"),
        ("POST", "/p/q/r", "p-any"),
        ("GET", "/", "root-exact"),
        ("GET", "/nothing", "<none>"),
    ];
    for (method, path, want) in cases {
        assert_eq!(matched(&p, "h", method, path), want, "{method} {path}");
    }
}

#[test]
fn root_prefix_and_no_path_match_everything() {
    let p = policy(
        r#"
policy:
  routes:
    - name: catch
      match: { path: { prefix: / } }
    - name: host-all
      match: { hosts: [a.example] }
    - name: root-tmpl
      match: { hosts: [t.example], path: { template: "/{*all}" } }
"#,
    );
    for (host, path, want) in [
        ("x", "/", "catch"),
        ("x", "/a/b", "catch"),
        ("a.example", "/", "host-all"),
        ("a.example", "/deep/path", "host-all"),
        ("t.example", "/", "root-tmpl"),
        ("t.example", "/a/b", "root-tmpl"),
    ] {
        assert_eq!(matched(&p, host, "GET", path), want, "{host} {path}");
    }
}

#[test]
fn route_properties_and_default() {
    let p = policy(
        r#"
policy:
  default: authenticated
  routes:
    - name: uploads-read
      match:
        hosts: ["api.example.org", "*.example.org"]
        methods: [get, HEAD, GET]
        path: { template: "/api/v1/uploads/{id}/files/{*rest}" }
      require: { all_of: ["uploads:read", "uploads:read"], any_of: [] }
      credentials: [jwt, pat]
    - name: health
      match: { path: { exact: /healthz } }
      auth: none
"#,
    );
    assert_eq!(p.default_action(), DefaultAction::Authenticated);
    let r = p.route_by_name("uploads-read").unwrap();
    assert_eq!(r.auth, AuthMode::Required);
    assert_eq!(r.all_of, vec!["uploads:read".to_owned()]);
    assert!(r.any_of.is_empty());
    assert_eq!(
        r.methods().unwrap(),
        &["GET".into(), "HEAD".into()] as &[Box<str>]
    );
    assert!(r.accepts(CredentialKind::Jwt) && r.accepts(CredentialKind::Pat));
    assert!(!r.accepts(CredentialKind::ServiceAccount));
    let kinds: Vec<_> = r.accepted_kinds().map(|k| k.as_str()).collect();
    assert_eq!(kinds, ["jwt", "pat"]);
    assert_eq!(r.index(), 0);
    let h = p.route_by_name("health").unwrap();
    assert_eq!(h.auth, AuthMode::None);
    assert_eq!(h.accepted_kinds().count(), 3);
    assert!(p.route_by_name("nope").is_none());
    assert_eq!(p.routes().len(), 2);
    assert_eq!(
        matched(&p, "x.example.org", "HEAD", "/api/v1/uploads/1/files/a"),
        "uploads-read"
    );
    assert_eq!(
        matched(&p, "x.example.org", "POST", "/api/v1/uploads/1/files/a"),
        "<none>"
    );

    let empty = Policy::compile(&PolicyConfig::default()).unwrap();
    assert_eq!(empty.default_action(), DefaultAction::Deny);
    assert!(matches!(
        empty.match_request("h", "GET", "/"),
        RouteMatch::NoRoute
    ));
    let from_yaml = yaml("policy: {}").unwrap();
    assert_eq!(from_yaml, PolicyConfig::default());
}

#[test]
fn full_example_config_deserialises() {
    let cfg = yaml(
        r#"
policy:
  default: deny
  routes:
    - name: uploads-read
      match:
        hosts: ["api.example.org", "*.example.org"]
        methods: [GET, HEAD]
        path: { template: "/api/v1/uploads/{id}/files/{*rest}" }
      auth: required
      require: { all_of: ["uploads:read"], any_of: [] }
      credentials: [jwt, service_account, pat]
"#,
    )
    .unwrap();
    let r = &cfg.routes[0];
    assert_eq!(r.credentials, CredentialKind::ALL.to_vec());
    assert_eq!(
        r.matcher.path,
        Some(PathConfig::Template(
            "/api/v1/uploads/{id}/files/{*rest}".into()
        ))
    );
    // Same via serde_json (both loaders must agree).
    let json: PolicyConfig = serde_json::from_str(
        r#"{"routes":[{"name":"a","match":{"path":{"prefix":"/"}},"credentials":["service_account"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        json.routes[0].credentials,
        vec![CredentialKind::ServiceAccount]
    );
    assert_eq!(json.default, DefaultAction::Deny);
}
