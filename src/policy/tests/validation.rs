use super::yaml;
use crate::policy::*;

/// Compile one `routes:` list and return the first error's message.
fn err(routes_yaml: &str) -> String {
    let cfg = yaml(&format!("policy:\n  routes:\n{routes_yaml}")).expect("yaml");
    Policy::compile(&cfg).expect_err("should fail").to_string()
}

const OK: &str = "    - name: ok\n      match: { path: { prefix: /ok } }\n";

#[test]
fn every_validation_error_names_its_key() {
    let cases: &[(&str, &str)] = &[
        (
            "    - name: ' '\n",
            "policy.routes[0].name: route name must not be empty",
        ),
        (
            "    - name: a\n    - name: b\n    - name: a\n",
            "policy.routes[2].name: duplicate route name \"a\" (already used by policy.routes[0])",
        ),
        (
            "    - name: a\n      require: { all_of: [uploads] }\n",
            "policy.routes[0].require.all_of[0]: scope \"uploads\" is not of the form resource:action",
        ),
        (
            "    - name: a\n    - name: b\n    - name: c\n      require: { all_of: [\"uploads:*\"] }\n",
            "policy.routes[2].require.all_of[0]: scope \"uploads:*\" uses a wildcard, which is only allowed in granted scopes",
        ),
        (
            "    - name: a\n      require: { any_of: [\"a:b\", \"a b:c\"] }\n",
            "policy.routes[0].require.any_of[1]: scope \"a b:c\" contains characters outside",
        ),
        (
            "    - name: a\n      require: { any_of: [\"*:read\"] }\n",
            "policy.routes[0].require.any_of[0]: scope \"*:read\" uses a wildcard",
        ),
        (
            "    - name: a\n      credentials: []\n",
            "policy.routes[0].credentials: must list at least one of jwt, service_account, pat",
        ),
        (
            "    - name: a\n      auth: none\n      require: { all_of: [\"a:b\"] }\n",
            "policy.routes[0].require: a route with `auth: none` cannot require scopes",
        ),
        (
            "    - name: a\n      match: { hosts: [] }\n",
            "policy.routes[0].match.hosts: must not be empty (omit the key to match any host)",
        ),
        (
            "    - name: a\n      match: { methods: [] }\n",
            "policy.routes[0].match.methods: must not be empty (omit the key to match any method)",
        ),
        (
            "    - name: a\n      match: { methods: [GET, \"GET POST\"] }\n",
            "policy.routes[0].match.methods[1]: invalid HTTP method \"GET POST\"; accepted:",
        ),
        (
            "    - name: a\n      match: { hosts: [\"*\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"*\": a bare '*'",
        ),
        (
            "    - name: a\n      match: { hosts: [\"a.*.org\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"a.*.org\": '*' is only allowed",
        ),
        (
            "    - name: a\n      match: { hosts: [\"**.org\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"**.org\": '*' is only allowed",
        ),
        (
            "    - name: a\n      match: { hosts: [\"*.*.org\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"*.*.org\": '*' is only allowed",
        ),
        (
            "    - name: a\n      match: { hosts: [ok.org, \"api.example.org:443\"] }\n",
            "policy.routes[0].match.hosts[1]: invalid host pattern \"api.example.org:443\": must not include a port",
        ),
        (
            "    - name: a\n      match: { hosts: [\"a..b\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"a..b\": empty label",
        ),
        (
            "    - name: a\n      match: { hosts: [\"exa mple\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"exa mple\": contains characters",
        ),
        (
            "    - name: a\n      match: { hosts: [\"*.\"] }\n",
            "policy.routes[0].match.hosts[0]: invalid host pattern \"*.\": a bare '*'",
        ),
        (
            "    - name: a\n      match: { path: { exact: admin } }\n",
            "policy.routes[0].match.path.exact: invalid path \"admin\": must start with /",
        ),
        (
            "    - name: a\n      match: { path: { exact: /a//b } }\n",
            "policy.routes[0].match.path.exact: invalid path \"/a//b\": must not contain empty",
        ),
        (
            "    - name: a\n      match: { path: { exact: /a/../b } }\n",
            "policy.routes[0].match.path.exact: invalid path \"/a/../b\": must not contain empty",
        ),
        (
            "    - name: a\n      match: { path: { exact: /a%2fb } }\n",
            "policy.routes[0].match.path.exact: invalid path \"/a%2fb\": must not contain '?', '#', '%'",
        ),
        (
            "    - name: a\n      match: { path: { prefix: \"/a?x\" } }\n",
            "policy.routes[0].match.path.prefix: invalid path \"/a?x\": must not contain '?'",
        ),
        (
            "    - name: a\n      match: { path: { prefix: api/ } }\n",
            "policy.routes[0].match.path.prefix: invalid path \"api/\": must start with /",
        ),
        (
            "    - name: a\n      match: { path: { prefix: /a/./b } }\n",
            "policy.routes[0].match.path.prefix: invalid path \"/a/./b\": must not contain empty",
        ),
        (
            "    - name: a\n      match: { path: { template: \"a/{id}\" } }\n",
            "policy.routes[0].match.path.template: invalid template \"a/{id}\": must start with /",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{id}.json\" } }\n",
            "policy.routes[0].match.path.template: invalid template \"/a/{id}.json\": segment \"{id}.json\": a parameter must be a whole segment",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{*rest}/b\" } }\n",
            "policy.routes[0].match.path.template: invalid template \"/a/{*rest}/b\": catch-all \"{*rest}\" must be the last segment",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{id}/{id}\" } }\n",
            "policy.routes[0].match.path.template: invalid template \"/a/{id}/{id}\": duplicate parameter name \"id\"",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{id}/{*id}\" } }\n",
            "duplicate parameter name \"id\"",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{}\" } }\n",
            "policy.routes[0].match.path.template: invalid template \"/a/{}\": segment \"{}\": parameter names must match",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{1x}\" } }\n",
            "segment \"{1x}\": parameter names must match",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{*}\" } }\n",
            "segment \"{*}\": parameter names must match",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/{id\" } }\n",
            "segment \"{id\": a parameter must be a whole segment",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/}\" } }\n",
            "segment \"}\": a parameter must be a whole segment",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a//{id}\" } }\n",
            "invalid template \"/a//{id}\": empty ('//'), '.' or '..' segment",
        ),
        (
            "    - name: a\n      match: { path: { template: \"/a/%7Bid%7D\" } }\n",
            "invalid template \"/a/%7Bid%7D\": must not contain",
        ),
    ];
    for (routes, want) in cases {
        let got = err(&format!("{OK}{routes}"));
        // OK occupies routes[0]; shift the expected index by one.
        let want = shift_index(want);
        assert!(got.contains(&want), "\n got: {got}\nwant: {want}");
        assert!(got.contains("policy.routes["), "{got}");
    }
}

/// `policy.routes[N]` → `policy.routes[N+1]` in an expected message.
fn shift_index(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(p) = rest.find("policy.routes[") {
        let start = p + "policy.routes[".len();
        let end = start + rest[start..].find(']').unwrap();
        let n: usize = rest[start..end].parse().unwrap();
        out.push_str(&rest[..start]);
        out.push_str(&(n + 1).to_string());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn check_lists_all_errors_and_error_keys() {
    let cfg = yaml(
        r#"
policy:
  routes:
    - name: a
      require: { all_of: ["x:*"], any_of: ["bad"] }
      credentials: []
    - name: a
      match: { hosts: ["*"], path: { template: "/{a}/{a}" } }
"#,
    )
    .unwrap();
    let errs = cfg.problems();
    let keys: Vec<&str> = errs.iter().map(PolicyError::key).collect();
    assert_eq!(
        keys,
        [
            "policy.routes[0].require.all_of[0]",
            "policy.routes[0].require.any_of[0]",
            "policy.routes[0].credentials",
            "policy.routes[1].name",
            "policy.routes[1].match.hosts[0]",
            "policy.routes[1].match.path.template",
        ]
    );
    assert_eq!(
        Policy::compile(&cfg).unwrap_err().key(),
        "policy.routes[0].require.all_of[0]"
    );
    assert!(PolicyConfig::default().validate().is_empty());
}

#[test]
fn serde_errors_list_accepted_values() {
    let cases = [
        (
            "policy:\n  routes:\n    - name: a\n      credentials: [jwt, token]\n",
            &[
                "unknown variant: found `token`, expected `one of `jwt`, `service_account`, `pat``",
                "routes.0.credentials.1",
            ][..],
        ),
        (
            "policy:\n  default: allow\n",
            &[
                "unknown variant: found `allow`, expected ``deny` or `authenticated``",
                "default",
            ],
        ),
        (
            "policy:\n  routes:\n    - name: a\n      auth: optional\n",
            &["`required` or `none`"],
        ),
        (
            "policy:\n  routes:\n    - name: a\n      match: { path: { regex: '.*' } }\n",
            &["unknown field: found `regex`, expected `one of `exact`, `prefix`, `template``"],
        ),
        (
            "policy:\n  routes:\n    - name: a\n      match: { host: [x] }\n",
            &["unknown field: found `host`, expected `one of `hosts`, `methods`, `path``"],
        ),
        (
            "policy:\n  routes:\n    - name: a\n      require: { one_of: [] }\n",
            &["`all_of` or `any_of`", "routes.0.require.one_of"],
        ),
        (
            "policy:\n  routes:\n    - match: {}\n",
            &["missing field `name`"],
        ),
        (
            "policy:\n  routes:\n    - name: a\n      match: { path: { exact: /a, prefix: /b } }\n",
            &[
                "path must set exactly one of `exact`, `prefix`, `template`",
                "routes.0.match.path",
            ],
        ),
        (
            "policy:\n  routes:\n    - name: a\n      match: { path: {} }\n",
            &["path must set exactly one of `exact`, `prefix`, `template`"],
        ),
        (
            "policy:\n  defaults: deny\n",
            &["unknown field: found `defaults`"],
        ),
    ];
    for (src, wants) in cases {
        let e = yaml(src).expect_err(src).to_string();
        for want in wants {
            assert!(e.contains(want), "{src}\n got: {e}\nwant: {want}");
        }
    }
}
