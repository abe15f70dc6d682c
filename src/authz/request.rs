//! Reading what Envoy sent: method, host, path, context extensions and the
//! credential, from either `headers` or raw `header_map`.
//!
//! A credential comes from `Authorization` (`Bearer`, or `Basic` with a PAT
//! as the password when `credentials.basic.enabled`), from a header listed
//! in `credentials.headers`, or from the `credentials.query_param` query
//! parameter on a route that opts in. Two of them in one request are
//! refused (401), never chosen between. `Authorization: DPoP <token>` comes
//! with exactly one `DPoP` proof header (RFC 9449).

use std::borrow::Cow;

use super::decision::Denial;
use super::input::{CheckInput, HttpInput};
use super::sources::CredentialSources;

/// Borrowed view of the parts of a Check request we use.
pub struct RequestView<'a> {
    http: Option<&'a HttpInput>,
    input: &'a CheckInput,
}

/// A credential as found in the request.
#[derive(PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// `Authorization: Basic base64(username:token)` (decoded).
    Basic {
        username: String,
        token: String,
    },
    /// A `credentials.headers` header (lower-cased name) carrying a token.
    Header {
        name: &'a str,
        token: &'a str,
    },
    /// The `credentials.query_param` parameter (percent-decoded).
    Query(Cow<'a, str>),
    /// `Authorization: DPoP <token>` and its `DPoP` proof header.
    Dpop {
        token: &'a str,
        proof: &'a str,
    },
}

impl Credential<'_> {
    /// The token, whatever carried it.
    pub fn token(&self) -> Option<&str> {
        match self {
            Credential::None => None,
            Credential::Bearer(t) | Credential::Header { token: t, .. } => Some(t),
            Credential::Basic { token, .. } => Some(token),
            Credential::Query(t) => Some(t),
            Credential::Dpop { token, .. } => Some(token),
        }
    }

    /// Where it came from, for messages and logs (never the value).
    pub fn source(&self) -> &str {
        match self {
            Credential::None => "none",
            Credential::Bearer(_) => "authorization: bearer",
            Credential::Basic { .. } => "authorization: basic",
            Credential::Header { name, .. } => name,
            Credential::Query(_) => "query parameter",
            Credential::Dpop { .. } => "authorization: dpop",
        }
    }
}

/// Never prints the token (it would end up in a log line).
impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Bearer(t) => write!(f, "Bearer(<{} bytes redacted>)", t.len()),
            Credential::Basic { token, .. } => {
                write!(f, "Basic(<{} bytes redacted>)", token.len())
            }
            Credential::Header { name, token } => {
                write!(f, "Header({name}, <{} bytes redacted>)", token.len())
            }
            Credential::Query(t) => write!(f, "Query(<{} bytes redacted>)", t.len()),
            Credential::Dpop { token, proof } => write!(
                f,
                "Dpop(<{} bytes redacted>, proof <{} bytes redacted>)",
                token.len(),
                proof.len()
            ),
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
    pub fn new(input: &'a CheckInput) -> Self {
        RequestView {
            http: input.http.as_ref(),
            input,
        }
    }

    /// `http` or `https`, as Envoy saw the request (empty when unknown).
    pub fn scheme(&self) -> &'a str {
        self.http.map_or("", |h| self.input.text(h.scheme))
    }

    /// The client address Envoy reports (`source.address`: the downstream
    /// peer, or the `X-Forwarded-For` entry Envoy trusts under
    /// `xff_num_trusted_hops`). Parsed, not copied.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.input.text(self.input.source_address?).parse().ok()
    }

    /// The `User-Agent` header, as sent.
    pub fn user_agent(&self) -> Option<&'a str> {
        self.header_values("user-agent").next()
    }

    /// The client certificate Envoy forwarded (URL-encoded PEM), or "".
    pub fn peer_certificate(&self) -> &'a str {
        self.input.text(self.input.certificate)
    }

    pub fn has_http(&self) -> bool {
        self.http.is_some()
    }

    pub fn method(&self) -> &'a str {
        self.http.map_or("", |h| self.input.text(h.method))
    }

    pub fn host(&self) -> &'a str {
        self.http.map_or("", |h| self.input.text(h.host))
    }

    /// Raw request target, including the query string.
    pub fn path(&self) -> &'a str {
        self.http.map_or("", |h| self.input.text(h.path))
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

    /// A per-route `context_extensions` value (the last of a repeated key,
    /// as a protobuf map keeps).
    pub fn context(&self, key: &str) -> Option<&'a str> {
        let input: &'a CheckInput = self.input;
        input
            .context
            .iter()
            .rev()
            .find(|(k, _)| input.bytes(*k) == key.as_bytes())
            .map(|(_, v)| input.text(*v))
    }

    /// Every header name the client sent (either representation), as
    /// bytes: names are compared case-insensitively, and each `&str` would
    /// be a UTF-8 check again (done once at decode).
    pub fn header_names(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let (http, input) = (self.http, self.input);
        let map = http
            .into_iter()
            .flat_map(move |h| h.headers.iter().map(move |(k, _)| input.bytes(*k)));
        let raw = http
            .into_iter()
            .flat_map(move |h| h.raw_headers.iter().map(move |hv| input.bytes(hv.key)));
        map.chain(raw)
    }

    /// All values of one header (case-insensitive name), from both forms.
    /// Lazily, so the Check path allocates nothing to look a header up.
    /// The `headers` map arrives as a list: a name repeated on the wire
    /// yields every value (a protobuf map would keep the last), so a
    /// repeated `authorization` is refused as two credentials.
    fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        let (http, input) = (self.http, self.input);
        let named = move |k| input.bytes(k).eq_ignore_ascii_case(name.as_bytes());
        let map = http
            .into_iter()
            .flat_map(|h| h.headers.iter())
            .filter(move |(k, _)| named(*k))
            .map(move |(_, v)| input.text(*v));
        let raw = http
            .into_iter()
            .flat_map(|h| h.raw_headers.iter())
            .filter(move |hv| named(hv.key))
            .map(move |hv| {
                let value = input.text(hv.value);
                if value.is_empty() {
                    // Not UTF-8: the NUL stand-in fails parsing, so the
                    // request is denied, never read as "no credential".
                    std::str::from_utf8(input.bytes(hv.raw_value)).unwrap_or("\u{0}")
                } else {
                    value
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

    /// The one credential from every configured source; `query` says
    /// whether this route reads `credentials.query_param`. More than one
    /// credential (say Basic and an `x-api-key`) is refused.
    pub fn credential_from(
        &self,
        sources: &'a CredentialSources,
        query: bool,
        max_len: usize,
    ) -> Result<Credential<'a>, Denial> {
        let mut found = {
            let mut values = self.header_values("authorization");
            match (values.next(), values.next()) {
                (None, _) => Credential::None,
                (Some(one), None) => parse_authorization_with(one, max_len, sources.basic)?,
                (Some(_), Some(_)) => return Err(multiple()),
            }
        };
        if let Credential::Dpop { proof, .. } = &mut found {
            *proof = self.dpop_proof()?;
        }
        for name in &sources.headers {
            let mut values = self.header_values(name);
            match (values.next(), values.next()) {
                (None, _) => {}
                (Some(v), None) => {
                    let token = token_value(v.trim_matches([' ', '\t']), max_len)?;
                    take(&mut found, Credential::Header { name, token })?;
                }
                (Some(_), Some(_)) => return Err(multiple()),
            }
        }
        if query && let Some(token) = self.query_credential(&sources.query_param, max_len)? {
            take(&mut found, Credential::Query(token))?;
        }
        Ok(found)
    }

    /// The one `DPoP` header of a DPoP-scheme request (RFC 9449 §4.1:
    /// exactly one; Envoy joins repeated headers with `,`, which a JWS never
    /// contains).
    fn dpop_proof(&self) -> Result<&'a str, Denial> {
        let mut values = self.header_values("dpop");
        match (values.next(), values.next()) {
            (Some(v), None) if !v.trim().is_empty() && !v.contains(',') => Ok(v.trim()),
            (None, _) => Err(Denial::dpop(
                "invalid_dpop_proof",
                "DPoP proof missing: send it in the DPoP header",
            )),
            _ => Err(Denial::dpop(
                "invalid_dpop_proof",
                "exactly one DPoP header is required",
            )),
        }
    }

    /// The `name` query parameter's value, percent-decoded; refused when
    /// repeated, empty or not a token.
    fn query_credential(&self, name: &str, max_len: usize) -> Result<Option<Cow<'a, str>>, Denial> {
        let path = self.path();
        let Some(q) = path.split_once('?').map(|(_, q)| q) else {
            return Ok(None);
        };
        let q = q.split_once('#').map_or(q, |(q, _)| q);
        let mut found = None;
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k != name {
                continue;
            }
            if found.is_some() {
                return Err(multiple());
            }
            found = Some(v);
        }
        let Some(raw) = found else { return Ok(None) };
        if raw.len() > 3 * max_len {
            return Err(Denial::unauthenticated("invalid_token", "token too large"));
        }
        let decoded: Cow<'a, str> = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                Denial::unauthenticated(
                    "invalid_token",
                    "malformed token: not UTF-8 after decoding",
                )
            })?;
        token_value(&decoded, max_len)?;
        Ok(Some(decoded))
    }

    /// Does the request carry the `name` query parameter at all?
    pub fn has_query_param(&self, name: &str) -> bool {
        self.path().split_once('?').is_some_and(|(_, q)| {
            q.split('#')
                .next()
                .unwrap_or("")
                .split('&')
                .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == name)
        })
    }
}

/// Keeps `c` unless a credential was already found: two are refused.
fn take<'a>(found: &mut Credential<'a>, c: Credential<'a>) -> Result<(), Denial> {
    if *found != Credential::None {
        return Err(Denial::unauthenticated(
            "invalid_request",
            format!(
                "more than one credential in the request ({} and {}); send exactly one",
                found.source(),
                c.source()
            ),
        ));
    }
    *found = c;
    Ok(())
}

fn multiple() -> Denial {
    Denial::unauthenticated("invalid_request", "more than one credential in the request")
}

/// A token sent as a whole header value or query parameter: non-empty,
/// bounded, and in the RFC 6750 b64token alphabet.
fn token_value(v: &str, max_len: usize) -> Result<&str, Denial> {
    if v.is_empty() {
        return Err(Denial::unauthenticated("invalid_request", "empty token"));
    }
    if v.len() > max_len {
        return Err(Denial::unauthenticated("invalid_token", "token too large"));
    }
    if !is_b64token(v) {
        return Err(Denial::unauthenticated(
            "invalid_token",
            "malformed token: characters outside the bearer token alphabet",
        ));
    }
    Ok(v)
}

/// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
///
/// Every warm Check runs this over the whole token (a Keycloak JWT is about
/// a kilobyte). Each byte is classified with comparisons only, folded with
/// `&` and no early exit: the loop has no branch and no table lookup, so
/// the compiler turns it into vector code, 16 or 32 bytes a step (a table
/// lookup per byte was 2.5× slower). A bad token is rare and costs the same.
fn is_b64token(v: &str) -> bool {
    let body = v.trim_end_matches('=');
    !body.is_empty() && body.bytes().fold(true, |ok, b| ok & is_b64token_byte(b))
}

/// One byte of the b64token alphabet, as `|` of comparisons (not `||`,
/// which would branch and keep the loop scalar).
#[inline(always)]
fn is_b64token_byte(b: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z; nothing else lands in a-z.
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    // '-', '.', '/' are consecutive.
    let punct = (b.wrapping_sub(b'-') < 3) | (b == b'+') | (b == b'_') | (b == b'~');
    letter | digit | punct
}

/// Like [`parse_authorization`], also reading `Basic` when `basic` is on:
/// base64 of `username:token` (RFC 7617); only the token is checked here.
pub fn parse_authorization_with(
    value: &str,
    max_len: usize,
    basic: bool,
) -> Result<Credential<'_>, Denial> {
    let trimmed = value.trim_matches(|c| c == ' ' || c == '\t');
    let is_basic = trimmed
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("basic ") || s.eq_ignore_ascii_case("basic\t"));
    if !basic || !is_basic {
        return parse_authorization(value, max_len);
    }
    use base64::Engine as _;
    let encoded = trimmed[6..].trim_start_matches([' ', '\t']);
    // Envoy joins repeated headers with ',', which base64 never contains.
    if encoded.contains(',') {
        return Err(multiple());
    }
    let malformed = || Denial::unauthenticated("invalid_request", "malformed Basic credentials");
    // base64 grows by 4/3; the user name gets some room too.
    if encoded.len() > max_len * 2 {
        return Err(Denial::unauthenticated("invalid_token", "token too large"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let (username, token) = text.split_once(':').ok_or_else(malformed)?;
    token_value(token, max_len)?;
    Ok(Credential::Basic {
        username: username.to_owned(),
        token: token.to_owned(),
    })
}

/// Parses `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
pub fn parse_authorization(value: &str, max_len: usize) -> Result<Credential<'_>, Denial> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_start_matches([' ', '\t'])),
        None => (value, ""),
    };
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    if !dpop && !scheme.eq_ignore_ascii_case("bearer") {
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
    // ',' is outside the alphabet, so one pass over a good token does; only
    // a refused one is looked at again, to say why.
    if !is_b64token(rest) {
        if rest.contains(',') {
            return Err(multiple());
        }
        return Err(Denial::unauthenticated(
            "invalid_token",
            "malformed token: characters outside the bearer token alphabet",
        ));
    }
    Ok(match dpop {
        true => Credential::Dpop {
            token: rest,
            proof: "",
        },
        false => Credential::Bearer(rest),
    })
}

#[cfg(test)]
#[path = "tests/request.rs"]
mod tests;
