//! Unit tests of `authz::request`.

use super::*;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

fn raw_request(headers: &[(&str, &[u8])]) -> CheckInput {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let http = HttpRequest {
        header_map: Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    value: String::new(),
                    raw_value: v.to_vec(),
                })
                .collect(),
        }),
        ..Default::default()
    };
    CheckInput::from(&CheckRequest {
        attributes: Some(
            envoy_types::pb::envoy::service::auth::v3::AttributeContext {
                request: Some(
                    envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                        time: None,
                        http: Some(http),
                    },
                ),
                ..Default::default()
            },
        ),
    })
}

#[test]
fn raw_header_map_duplicates_and_bad_utf8_are_denied() {
    let req = raw_request(&[
        ("authorization", b"Bearer a"),
        ("Authorization", b"Bearer b"),
    ]);
    let err = RequestView::new(&req).credential(100).unwrap_err();
    assert!(err.description.contains("more than one"), "{err:?}");
    // A value that is not UTF-8 is refused (401), never read as absent.
    let req = raw_request(&[("authorization", b"Bearer \xff\xfe")]);
    let err = RequestView::new(&req).credential(100).unwrap_err();
    assert_eq!(
        err.kind,
        super::super::decision::DenyKind::Unauthenticated,
        "{err:?}"
    );
    let req = raw_request(&[("x-request-id", b"r1"), ("authorization", b"Bearer ok")]);
    let view = RequestView::new(&req);
    assert_eq!(view.request_id(), Some("r1"));
    assert_eq!(view.credential(100), Ok(Credential::Bearer("ok")));
}

#[test]
fn debug_never_prints_credentials() {
    let mut http = HttpRequest::default();
    http.headers
        .insert("authorization".into(), "Bearer sekrit-token".into());
    http.headers
        .insert("cookie".into(), "sid=sekrit-cookie".into());
    let req = CheckRequest {
        attributes: Some(
            envoy_types::pb::envoy::service::auth::v3::AttributeContext {
                request: Some(
                    envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                        time: None,
                        http: Some(http),
                    },
                ),
                ..Default::default()
            },
        ),
    };
    let req = CheckInput::from(&req);
    let view = RequestView::new(&req);
    let text = format!("{view:?} {:?}", view.credential(100));
    assert!(!text.contains("sekrit"), "{text}");
}

#[test]
fn item3_debug_and_log_fields_never_show_query_host_or_odd_request_id() {
    let mut http = HttpRequest {
        path: "/a/b?access_token=sekrit-query&x=1#frag-sekrit".into(),
        host: "sekrit-host.example".into(),
        ..Default::default()
    };
    http.headers
        .insert("x-request-id".into(), "pat_sekrit-request-id".into());
    let req = CheckRequest {
        attributes: Some(
            envoy_types::pb::envoy::service::auth::v3::AttributeContext {
                request: Some(
                    envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                        time: None,
                        http: Some(http),
                    },
                ),
                ..Default::default()
            },
        ),
    };
    let req = CheckInput::from(&req);
    let view = RequestView::new(&req);
    assert_eq!(view.log_path(), "/a/b");
    assert_eq!(view.log_request_id(), "(redacted)");
    let text = format!("{view:?} {}", view.log_request_id());
    assert!(!text.contains("sekrit"), "{text}");
    // An ID-shaped request ID is kept, so logs still correlate.
    let req = raw_request(&[("x-request-id", b"0f8fad5b-d9cb-469f-a165-70867728950e")]);
    let view = RequestView::new(&req);
    assert_eq!(
        view.log_request_id(),
        "0f8fad5b-d9cb-469f-a165-70867728950e"
    );
}

#[test]
fn log_path_redacts_path_parameters() {
    let view_of = |path: &str| {
        let http = HttpRequest {
            path: path.into(),
            ..Default::default()
        };
        CheckInput::from(&CheckRequest {
            attributes: Some(
                envoy_types::pb::envoy::service::auth::v3::AttributeContext {
                    request: Some(
                        envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                            time: None,
                            http: Some(http),
                        },
                    ),
                    ..Default::default()
                },
            ),
        })
    };
    for (raw, logged) in [
        ("/a/b?x=1", "/a/b"),
        ("/a;jsessionid=sekrit/b?x", "/a;(redacted)/b"),
        ("/a/b;x=1;y=sekrit", "/a/b;(redacted)"),
        ("/a%3bsid=sekrit/b", "/a;(redacted)/b"),
        ("/;sekrit", "/;(redacted)"),
    ] {
        let req = view_of(raw);
        let view = RequestView::new(&req);
        assert_eq!(view.log_path(), logged, "{raw}");
        assert!(!format!("{view:?}").contains("sekrit"), "{raw}");
    }
    assert!(matches!(
        RequestView::new(&view_of("/a/b?q")).log_path(),
        Cow::Borrowed(_)
    ));
}

#[test]
fn bearer_parsing() {
    assert_eq!(
        parse_authorization("Bearer abc", 100),
        Ok(Credential::Bearer("abc"))
    );
    assert_eq!(
        parse_authorization("bEaReR   abc", 100),
        Ok(Credential::Bearer("abc"))
    );
    assert_eq!(
        parse_authorization("Bearer a.b-c_d~e+f/g==", 100),
        Ok(Credential::Bearer("a.b-c_d~e+f/g=="))
    );
    let err = |v: &str| {
        parse_authorization(v, 10)
            .unwrap_err()
            .description
            .into_owned()
    };
    assert!(err("Basic dXNlcjpwYXNz").contains("scheme"));
    assert!(err("Bearer").contains("empty"));
    assert!(err("Bearer ").contains("empty"));
    assert!(err("Bearer 01234567890").contains("too large"));
    assert!(err("Bearer a,b").contains("more than one"));
    assert!(err("Bearer a\"b").contains("alphabet"));
    assert!(err("Bearer ====").contains("alphabet"));
}

fn view_req(path: &str, headers: &[(&str, &str)]) -> CheckInput {
    let mut http = HttpRequest {
        path: path.into(),
        ..Default::default()
    };
    for (k, v) in headers {
        http.headers.insert(k.to_string(), v.to_string());
    }
    CheckInput::from(&CheckRequest {
        attributes: Some(
            envoy_types::pb::envoy::service::auth::v3::AttributeContext {
                request: Some(
                    envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
                        time: None,
                        http: Some(http),
                    },
                ),
                ..Default::default()
            },
        ),
    })
}

fn sources(basic: bool, headers: &[&str]) -> CredentialSources {
    CredentialSources::compile(&crate::authz::sources::CredentialsConfig {
        basic: crate::authz::sources::BasicConfig {
            enabled: basic,
            check_username: false,
        },
        headers: headers.iter().map(|h| h.to_string()).collect(),
        ..Default::default()
    })
}

fn basic(user_pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

#[test]
fn basic_reads_the_password_only_when_enabled() {
    let on = sources(true, &[]);
    let off = sources(false, &[]);
    let req = view_req("/", &[("authorization", &basic("git:pat_abc"))]);
    let view = RequestView::new(&req);
    assert_eq!(
        view.credential_from(&on, false, 100),
        Ok(Credential::Basic {
            username: "git".into(),
            token: "pat_abc".into()
        })
    );
    let err = view.credential_from(&off, false, 100).unwrap_err();
    assert!(err.description.contains("scheme"), "{err:?}");
    // Lower-case scheme, empty user name.
    let req = view_req(
        "/",
        &[("authorization", &basic(":pat_x").replace("Basic", "basic"))],
    );
    let got = RequestView::new(&req).credential_from(&on, false, 100);
    assert_eq!(got.unwrap().token(), Some("pat_x"));
}

#[test]
fn malformed_basic_is_refused() {
    let on = sources(true, &[]);
    for (value, needle) in [
        ("Basic !!!".to_owned(), "malformed Basic"),
        (basic("no-colon"), "malformed Basic"),
        (basic("user:"), "empty token"),
        (basic("user:a b"), "alphabet"),
        (format!("Basic {}", "QUFB".repeat(100)), "too large"),
    ] {
        let req = view_req("/", &[("authorization", &value)]);
        let err = RequestView::new(&req)
            .credential_from(&on, false, 100)
            .unwrap_err();
        assert_eq!(err.kind, super::super::decision::DenyKind::Unauthenticated);
        assert!(err.description.contains(needle), "{value}: {err:?}");
    }
}

#[test]
fn configured_header_carries_a_token() {
    let s = sources(false, &["X-Api-Key"]);
    let req = view_req("/", &[("x-api-key", " pat_abc ")]);
    assert_eq!(
        RequestView::new(&req).credential_from(&s, false, 100),
        Ok(Credential::Header {
            name: "x-api-key",
            token: "pat_abc"
        })
    );
    // Without the header configured it is not a credential.
    let none = sources(false, &[]);
    assert_eq!(
        RequestView::new(&req).credential_from(&none, false, 100),
        Ok(Credential::None)
    );
    for (v, needle) in [("", "empty"), ("a\"b", "alphabet"), ("a,b", "alphabet")] {
        let req = view_req("/", &[("x-api-key", v)]);
        let err = RequestView::new(&req)
            .credential_from(&s, false, 100)
            .unwrap_err();
        assert!(err.description.contains(needle), "{v:?}: {err:?}");
    }
}

#[test]
fn query_parameter_only_where_the_route_opts_in() {
    let s = sources(false, &[]);
    let req = view_req("/dl/file?x=1&access_token=pat_a%2Bb&y=2", &[]);
    let view = RequestView::new(&req);
    assert_eq!(view.credential_from(&s, false, 100), Ok(Credential::None));
    let got = view.credential_from(&s, true, 100).unwrap();
    assert_eq!(got.token(), Some("pat_a+b"));
    assert!(!format!("{got:?} {view:?}").contains("pat_a"));
    assert!(view.has_query_param("access_token"));
    assert!(!view.has_query_param("access"));
    for (path, needle) in [
        ("/d?access_token=a&access_token=b", "more than one"),
        ("/d?access_token=", "empty"),
        ("/d?access_token=%ff", "UTF-8"),
        ("/d?access_token=a%20b", "alphabet"),
    ] {
        let req = view_req(path, &[]);
        let err = RequestView::new(&req)
            .credential_from(&s, true, 100)
            .unwrap_err();
        assert!(err.description.contains(needle), "{path}: {err:?}");
    }
}

#[test]
fn two_credentials_are_refused_never_chosen_between() {
    let s = sources(true, &["x-api-key"]);
    let cases: [(&str, Vec<(&str, String)>); 3] = [
        (
            "/?access_token=pat_q",
            vec![("authorization", "Bearer pat_b".to_owned())],
        ),
        (
            "/",
            vec![
                ("authorization", basic("u:pat_a")),
                ("x-api-key", "pat_k".to_owned()),
            ],
        ),
        (
            "/?access_token=pat_q",
            vec![("x-api-key", "pat_k".to_owned())],
        ),
    ];
    for (path, headers) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let req = view_req(path, &hs);
        let err = RequestView::new(&req)
            .credential_from(&s, true, 100)
            .unwrap_err();
        assert_eq!(err.kind, super::super::decision::DenyKind::Unauthenticated);
        assert!(
            err.description.contains("more than one credential"),
            "{err:?}"
        );
        assert!(!err.description.contains("pat_"), "{err:?}");
    }
    // Basic and Bearer in one Authorization header (joined by Envoy).
    let req = view_req(
        "/",
        &[(
            "authorization",
            &format!("{},Bearer pat_b", basic("u:pat_a")),
        )],
    );
    assert!(
        RequestView::new(&req)
            .credential_from(&s, false, 100)
            .is_err()
    );
}

/// The classifier accepts exactly RFC 6750's b64token alphabet, byte by
/// byte (all 256, not only those that can sit in a `str`), with `=` only as
/// trailing padding.
#[test]
fn b64token_alphabet_matches_the_grammar() {
    for b in 0..=255u8 {
        let expected =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        assert_eq!(is_b64token_byte(b), expected, "byte {b:#04x}");
    }
    for b in 0..=255u8 {
        let expected =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        let mut v = vec![b'a', b, b'z'];
        if let Ok(s) = std::str::from_utf8(&v) {
            assert_eq!(is_b64token(s), expected, "byte {b:#04x}");
        } else {
            assert!(!expected, "byte {b:#04x}");
        }
        v.truncate(1);
        assert!(is_b64token(std::str::from_utf8(&v).unwrap()));
    }
    assert!(is_b64token("abc=="));
    assert!(!is_b64token("a=b"));
    assert!(!is_b64token("=="));
    assert!(!is_b64token("é"));
}

/// The check is vectorised: one bad byte anywhere in a long token (in any
/// lane of any block, or in the tail) still refuses it.
#[test]
fn b64token_refuses_one_bad_byte_at_any_position() {
    let good: Vec<u8> = (0..131).map(|i| b"aZ09-._~+/"[i % 10]).collect();
    assert!(is_b64token(std::str::from_utf8(&good).unwrap()));
    for bad in [b'!', b' ', b',', b'=', b'\0', b'@', b'[', b'`', b'{', 0x7f] {
        // A trailing '=' is padding, so '=' is tried everywhere but last.
        let end = good.len() - usize::from(bad == b'=');
        for i in 0..end {
            let mut v = good.clone();
            v[i] = bad;
            let s = std::str::from_utf8(&v).unwrap();
            assert!(!is_b64token(s), "{bad:#04x} at {i}");
        }
    }
}
