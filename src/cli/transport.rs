//! Where the login commands may send credentials: https, or plain http
//! only to this machine (loopback), unless the user says `--insecure-http`.
//! The same rule `api.ui.oidc` applies to the page's URLs: a refresh
//! token, a client secret or a bearer token sent in clear over a network
//! is anyone's on the path.

use url::Url;

/// A URL the rule refuses, worded for the terminal.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} {url}: refusing to send credentials over plain http to a host other than this machine; accepted: https, or http to localhost, 127.0.0.1 or [::1] (--insecure-http allows plain http anywhere, for a test network only)"
)]
pub struct InsecureUrl {
    pub what: String,
    pub url: String,
}

/// Is the URL's host a loopback name or address?
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// Refuses plain http to a non-loopback host unless `insecure_http`.
/// Other schemes are left to the caller's own URL check.
pub fn require_secure(what: &str, url: &Url, insecure_http: bool) -> Result<(), InsecureUrl> {
    if url.scheme() == "http" && !insecure_http && !is_loopback(url) {
        return Err(InsecureUrl {
            what: what.to_owned(),
            url: url.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, insecure: bool) -> bool {
        require_secure("--api", &Url::parse(raw).unwrap(), insecure).is_ok()
    }

    #[test]
    fn https_anywhere_http_only_on_loopback_unless_insecure() {
        for raw in [
            "https://portcullis.example.org",
            "https://10.0.0.1:8443/x",
            "http://127.0.0.1:9192",
            "http://127.8.9.10",
            "http://localhost:9192/x",
            "http://LOCALHOST",
            "http://[::1]:9192",
        ] {
            assert!(ok(raw, false), "{raw}");
        }
        for raw in [
            "http://example.org",
            "http://portcullis.internal:9192",
            "http://10.0.0.1",
            "http://[2001:db8::1]",
            "http://localhost.example.org",
            "http://0.0.0.0:9192",
        ] {
            assert!(!ok(raw, false), "{raw}");
            assert!(ok(raw, true), "{raw} with --insecure-http");
        }
        let e = require_secure("--api", &Url::parse("http://example.org").unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--insecure-http") && e.contains("http://example.org/"),
            "{e}"
        );
    }
}
