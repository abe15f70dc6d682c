//! Comparing a proof's `htu` with the request URL (RFC 9449 §4.3): both
//! without query and fragment, after syntax-based normalisation (RFC 3986
//! §6.2.2: case of scheme and host, percent-encoding case, unreserved
//! characters decoded, dot segments) and scheme-based normalisation
//! (§6.2.3: default port dropped, empty path is `/`).

use url::Url;

/// `htu` or a request URL in the normal form both sides are compared in;
/// `None` when it is not an absolute http(s) URL.
pub fn normalize(raw: &str) -> Option<String> {
    let mut url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = normalize_percent(url.path());
    url.set_path(&path);
    Some(url.into())
}

/// The URL of the request Envoy describes: `scheme://host/path`, the query
/// dropped. `None` when the parts do not make an http(s) URL.
pub fn request_url(scheme: &str, host: &str, raw_path: &str) -> Option<String> {
    let path = raw_path.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') || host.is_empty() {
        return None;
    }
    let scheme = if scheme.is_empty() { "http" } else { scheme };
    normalize(&format!("{scheme}://{host}{path}"))
}

/// Upper-case hex in percent escapes; unreserved characters (ALPHA, DIGIT,
/// `-`, `.`, `_`, `~`) decoded.
fn normalize_percent(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let c = h * 16 + l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        // `Url` has already percent-encoded everything outside ASCII.
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_spellings_normalise_alike() {
        let same = [
            "https://API.Example.org/a/b",
            "https://api.example.org:443/a/b",
            "HTTPS://api.example.org/a/./b",
            "https://api.example.org/a/c/../b",
            "https://api.example.org/%61/b",
            "https://api.example.org/a/b?x=1",
            "https://api.example.org/a/b#frag",
        ];
        for u in same {
            assert_eq!(
                normalize(u).as_deref(),
                Some("https://api.example.org/a/b"),
                "{u}"
            );
        }
        assert_eq!(
            normalize("https://api.example.org/a%2fb").as_deref(),
            Some("https://api.example.org/a%2Fb")
        );
        assert_eq!(normalize("http://h:80").as_deref(), Some("http://h/"));
    }

    #[test]
    fn different_urls_stay_different() {
        let base = normalize("https://api.example.org/a/b");
        for u in [
            "http://api.example.org/a/b",
            "https://api.example.org:8443/a/b",
            "https://api.example.org/a/B",
            "https://api.example.org/a/b/",
            "https://other.example.org/a/b",
        ] {
            assert_ne!(normalize(u), base, "{u}");
        }
    }

    #[test]
    fn only_absolute_http_urls() {
        for u in ["/a/b", "ftp://h/a", "https://", "not a url", "mailto:x@y"] {
            assert_eq!(normalize(u), None, "{u}");
        }
    }

    #[test]
    fn request_url_from_envoy_parts() {
        assert_eq!(
            request_url("https", "api.example.org", "/a/b?token=x").as_deref(),
            Some("https://api.example.org/a/b")
        );
        assert_eq!(
            request_url("", "api.example.org:8080", "/a").as_deref(),
            Some("http://api.example.org:8080/a")
        );
        assert_eq!(request_url("https", "", "/a"), None);
        assert_eq!(request_url("https", "h", "*"), None);
    }
}
