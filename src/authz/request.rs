//! Reading what Envoy sent: method, host, path, context extensions and the
//! bearer credential, from either `headers` or raw `header_map`.

use std::borrow::Cow;
use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use super::decision::Denial;

/// Borrowed view of the parts of a CheckRequest we use.
pub struct RequestView<'a> {
    http: Option<&'a HttpRequest>,
    context: Option<&'a HashMap<String, String>>,
}

/// A credential as found in the request.
#[derive(PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    Bearer(&'a str),
}

/// Never prints the token (it would end up in a log line).
impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Bearer(t) => write!(f, "Bearer(<{} bytes redacted>)", t.len()),
        }
    }
}

/// Method and path (without the query) only: headers (`authorization`,
/// `cookie`, …), the `Host` and the query string are client-chosen text that
/// may carry a credential, so they are never printed.
impl std::fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method())
            .field("path", &self.log_path())
            .finish_non_exhaustive()
    }
}

// === impl RequestView ===

impl<'a> RequestView<'a> {
    pub fn new(req: &'a CheckRequest) -> Self {
        let attrs = req.attributes.as_ref();
        RequestView {
            http: attrs
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref()),
            context: attrs.map(|a| &a.context_extensions),
        }
    }

    pub fn has_http(&self) -> bool {
        self.http.is_some()
    }

    pub fn method(&self) -> &'a str {
        self.http.map_or("", |h| h.method.as_str())
    }

    pub fn host(&self) -> &'a str {
        self.http.map_or("", |h| h.host.as_str())
    }

    /// Raw request target, including the query string.
    pub fn path(&self) -> &'a str {
        self.http.map_or("", |h| h.path.as_str())
    }

    /// The path for logs: without the query string or fragment, which may
    /// carry `?access_token=…` and the like, and with the values of `;`
    /// path parameters (also `%3B`) redacted: `;jsessionid=…` is a session
    /// cookie in the URL. Borrowed (no allocation) unless there are any.
    pub fn log_path(&self) -> Cow<'a, str> {
        let p = self.path();
        let p = p.find(['?', '#']).map_or(p, |i| &p[..i]);
        if !p.contains(';') && !p.contains("%3B") && !p.contains("%3b") {
            return Cow::Borrowed(p);
        }
        let mut out = String::with_capacity(p.len());
        for (i, seg) in p.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let cut = [seg.find(';'), seg.find("%3B"), seg.find("%3b")]
                .into_iter()
                .flatten()
                .min();
            match cut {
                Some(c) => {
                    out.push_str(&seg[..c]);
                    out.push_str(";(redacted)");
                }
                None => out.push_str(seg),
            }
        }
        Cow::Owned(out)
    }

    /// A per-route `context_extensions` value.
    pub fn context(&self, key: &str) -> Option<&'a str> {
        self.context.and_then(|c| c.get(key)).map(String::as_str)
    }

    /// Every header name the client sent (either representation).
    pub fn header_names(&self) -> impl Iterator<Item = &'a str> + '_ {
        let http = self.http;
        let map = http
            .into_iter()
            .flat_map(|h| h.headers.keys().map(String::as_str));
        let raw = http
            .and_then(|h| h.header_map.as_ref())
            .into_iter()
            .flat_map(|m| m.headers.iter().map(|hv| hv.key.as_str()));
        map.chain(raw)
    }

    /// All values of one header (case-insensitive name), from both forms.
    /// Lazily, so the Check path allocates nothing to look a header up.
    fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        let http = self.http;
        let map = http
            .into_iter()
            .flat_map(|h| h.headers.iter())
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let raw = http
            .and_then(|h| h.header_map.as_ref())
            .into_iter()
            .flat_map(|m| m.headers.iter())
            .filter(move |hv| hv.key.eq_ignore_ascii_case(name))
            .map(|hv| {
                if hv.value.is_empty() {
                    // Not UTF-8: the NUL stand-in fails parsing, so the
                    // request is denied, never read as "no credential".
                    std::str::from_utf8(&hv.raw_value).unwrap_or("\u{0}")
                } else {
                    hv.value.as_str()
                }
            });
        map.chain(raw)
    }

    /// `x-request-id`, as sent.
    pub fn request_id(&self) -> Option<&'a str> {
        self.header_values("x-request-id").next()
    }

    /// `x-request-id` for logs. The client may set it (Envoy keeps an
    /// incoming one unless told otherwise), so only an ID-shaped value is
    /// logged: up to 64 hex digits and dashes (UUIDs, trace IDs). A PAT or a
    /// JWT never has that shape; anything else is logged as `(redacted)`.
    pub fn log_request_id(&self) -> &'a str {
        match self.request_id() {
            None => "",
            Some(id)
                if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') =>
            {
                id
            }
            Some(_) => "(redacted)",
        }
    }

    /// The bearer token, or why the `Authorization` header is unusable.
    pub fn credential(&self, max_len: usize) -> Result<Credential<'a>, Denial> {
        let mut values = self.header_values("authorization");
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(Credential::None),
            (Some(one), None) => one,
            (Some(_), Some(_)) => return Err(multiple()),
        };
        parse_authorization(value, max_len)
    }
}

fn multiple() -> Denial {
    Denial::unauthenticated("invalid_request", "more than one credential in the request")
}

/// Parses `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
pub fn parse_authorization(value: &str, max_len: usize) -> Result<Credential<'_>, Denial> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_start_matches([' ', '\t'])),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::unauthenticated(
            "invalid_request",
            "unsupported authorization scheme; use Bearer",
        ));
    }
    if rest.is_empty() {
        return Err(Denial::unauthenticated(
            "invalid_request",
            "empty bearer token",
        ));
    }
    // Checked before looking at the token's content: no parsing of giants.
    if rest.len() > max_len {
        return Err(Denial::unauthenticated("invalid_token", "token too large"));
    }
    if rest.contains(',') {
        return Err(multiple());
    }
    // RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = rest.trim_end_matches('=');
    let ok = !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if !ok {
        return Err(Denial::unauthenticated(
            "invalid_token",
            "malformed token: characters outside the bearer token alphabet",
        ));
    }
    Ok(Credential::Bearer(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_request(headers: &[(&str, &[u8])]) -> CheckRequest {
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
        CheckRequest {
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
        }
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
            CheckRequest {
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
            }
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
}
