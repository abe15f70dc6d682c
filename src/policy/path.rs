//! Request path / host normalisation and config path, template and host validation.
//!
//! Security critical: the normalised path is what routing decides on, so every
//! ambiguity an upstream might resolve differently is either canonicalised here
//! or rejected (see the module docs of `policy` for the full list).

use std::borrow::Cow;

use super::config::MatrixParams;

/// How [`normalize_path_with`] treats `;` parameters and letter case
/// (`policy.matrix_params`, `policy.case_insensitive_paths`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// `;` parameters in a segment: refused (default) or stripped.
    pub matrix_params: MatrixParams,
    /// Lower-case ASCII letters, for upstreams that fold case.
    pub case_insensitive: bool,
}

/// Normalise Envoy's raw request target (path + query, not decoded) for
/// matching, with the default [`PathOptions`] (`;` parameters refused,
/// case-sensitive).
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    normalize_path_with(raw, PathOptions::default())
}

/// Normalise Envoy's raw request target (path + query, not decoded) for matching.
///
/// Returns the canonical path (no query, decoded, no `//`, no dot segments, no
/// trailing slash except for `/` itself, no `;` parameters) or the reason it
/// was rejected. Borrows when the input is already canonical (the common
/// case), so it does not allocate.
/// Idempotent: `%25`, `%3F` and `%23` stay encoded (as `%25`, `%3F`, `%23`),
/// so normalising the result again gives the same string.
pub fn normalize_path_with(raw: &str, opts: PathOptions) -> Result<Cow<'_, str>, &'static str> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if !path.starts_with('/') {
        return Err("path does not start with /");
    }
    // `;` always takes the slow path: it is either refused or stripped there.
    let fast = is_canonical(path)
        && !path.contains(';')
        && !(opts.case_insensitive && path.bytes().any(|b| b.is_ascii_uppercase()));
    if fast {
        return Ok(Cow::Borrowed(path));
    }
    normalize_slow(path, opts).map(Cow::Owned)
}

/// A dot segment carrying `;` parameters (`..;x`), which some servers
/// (Tomcat, Jetty) treat as `..` after stripping the parameters.
fn dot_with_params(seg: &str) -> bool {
    seg.starts_with(".;") || seg.starts_with("..;")
}

/// True when `normalize_slow(path) == path` for a path without `;` (default
/// options), checked without allocating.
fn is_canonical(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path[1..].split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && !dot_with_params(seg)
            && !seg
                .bytes()
                .any(|b| b == b'%' || b == b'\\' || b < 0x20 || b == 0x7f)
    })
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn normalize_slow(path: &str, opts: PathOptions) -> Result<String, &'static str> {
    let bytes = path.as_bytes();
    let mut dec = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let c = if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err("invalid percent-encoding");
            };
            i += 3;
            match (hi << 4) | lo {
                0 => return Err("encoded NUL (%00)"),
                b'/' => return Err("encoded slash (%2F)"),
                b'\\' => return Err("encoded backslash (%5C)"),
                // Kept encoded (upper-case hex): decoded, they would change
                // meaning if the result were normalised again (`%` starts
                // an escape, `?`/`#` end the path). No config path can
                // contain them, so matching is unaffected.
                c @ (b'%' | b'?' | b'#') => {
                    dec.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[usize::from(c >> 4)],
                        HEX_UPPER[usize::from(c & 15)],
                    ]);
                    continue;
                }
                c => c,
            }
        } else {
            i += 1;
            match b {
                0 => return Err("NUL byte"),
                b'\\' => return Err("backslash"),
                c => c,
            }
        };
        if c < 0x20 || c == 0x7f {
            return Err("control character");
        }
        dec.push(c);
    }
    let dec = String::from_utf8(dec).map_err(|_| "invalid UTF-8 after percent-decoding")?;
    let mut out = String::with_capacity(dec.len());
    for seg in dec.split('/') {
        match seg {
            "" | "." => {}
            ".." => match out.rfind('/') {
                Some(p) => out.truncate(p),
                None => return Err("'..' above the root"),
            },
            s if dot_with_params(s) => return Err("dot segment with ';' parameters"),
            s => {
                // After decoding, so `%3B` is treated like `;`.
                let s = match (s.find(';'), opts.matrix_params) {
                    (None, _) => s,
                    (Some(_), MatrixParams::Reject) => {
                        return Err(
                            "path segment with ';' parameters (policy.matrix_params: reject)",
                        );
                    }
                    (Some(i), MatrixParams::Strip) => &s[..i],
                };
                // `/a/;x/b` is `/a//b` once stripped: merged like `//`.
                if s.is_empty() {
                    continue;
                }
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    if opts.case_insensitive {
        out.make_ascii_lowercase();
    }
    Ok(out)
}

/// Normalise the request host (`:authority`): drop a `:port` suffix and a
/// trailing dot, lower-case. Borrows unless lower-casing is needed.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let mut h = host;
    if h.starts_with('[') {
        if let Some(end) = h.find(']') {
            h = &h[..=end];
        }
    } else if let Some((name, port)) = h.rsplit_once(':')
        && !name.contains(':')
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        h = name;
    }
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// A validated `hosts:` entry (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.example.org`, stored as `example.org`; matches one or more labels before it.
    Wildcard(String),
}

fn valid_hostname(h: &str) -> Result<(), &'static str> {
    if h.is_empty() {
        return Err("empty host");
    }
    if h.contains(':') {
        return Err("must not include a port or be an IPv6 literal");
    }
    if h.contains('*') {
        return Err("'*' is only allowed as the whole first label");
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err("contains characters outside [A-Za-z0-9._-]");
    }
    if h.split('.').any(str::is_empty) {
        return Err("empty label");
    }
    Ok(())
}

pub(crate) fn parse_host(raw: &str) -> Result<HostPattern, &'static str> {
    let h = raw.trim().to_ascii_lowercase();
    let h = h.strip_suffix('.').unwrap_or(&h);
    if h == "*" {
        return Err("a bare '*' is not a pattern");
    }
    match h.strip_prefix("*.") {
        Some(suffix) => valid_hostname(suffix).map(|()| HostPattern::Wildcard(suffix.to_owned())),
        None => valid_hostname(h).map(|()| HostPattern::Exact(h.to_owned())),
    }
}

/// Validate an `exact` / `prefix` path from config; returns it without a trailing slash.
pub(crate) fn parse_config_path(p: &str) -> Result<String, &'static str> {
    if !p.starts_with('/') {
        return Err("must start with /");
    }
    if p.bytes()
        .any(|b| matches!(b, b'?' | b'#' | b'%' | b'\\') || b < 0x20 || b == 0x7f)
    {
        return Err(
            "must not contain '?', '#', '%', '\\' or control characters (write the decoded path)",
        );
    }
    let trimmed = if p.len() > 1 {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    };
    if !is_canonical(trimmed) {
        return Err("must not contain empty ('//'), '.' or '..' segments");
    }
    Ok(trimmed.to_owned())
}

/// One segment of a validated template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateSeg {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// Final `{*name}`: the rest of the path (zero or more segments).
    CatchAll,
}

fn valid_param_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Why a `match.path.template` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("must start with /")]
    NoLeadingSlash,
    #[error("must not contain '?', '#', '%', '\\' or control characters")]
    ForbiddenChar,
    #[error("empty ('//'), '.' or '..' segment")]
    DotOrEmptySegment,
    #[error("segment {0:?}: a parameter must be a whole segment like {{id}}")]
    PartialParam(String),
    #[error("segment {0:?}: parameter names must match [A-Za-z_][A-Za-z0-9_]*")]
    BadName(String),
    #[error("duplicate parameter name {0:?}")]
    Duplicate(String),
    #[error("catch-all {0:?} must be the last segment")]
    CatchAllNotLast(String),
}

pub(crate) fn parse_template(t: &str) -> Result<Vec<TemplateSeg>, TemplateError> {
    if !t.starts_with('/') {
        return Err(TemplateError::NoLeadingSlash);
    }
    if t.bytes()
        .any(|b| matches!(b, b'?' | b'#' | b'%' | b'\\') || b < 0x20 || b == 0x7f)
    {
        return Err(TemplateError::ForbiddenChar);
    }
    let body = t[1..].strip_suffix('/').unwrap_or(&t[1..]);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let n = body.split('/').count();
    for (i, seg) in body.split('/').enumerate() {
        if seg.is_empty() || seg == "." || seg == ".." || dot_with_params(seg) {
            return Err(TemplateError::DotOrEmptySegment);
        }
        if !seg.contains(['{', '}']) {
            out.push(TemplateSeg::Literal(seg.to_owned()));
            continue;
        }
        let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            return Err(TemplateError::PartialParam(seg.to_owned()));
        };
        let (catch_all, name) = match inner.strip_prefix('*') {
            Some(n) => (true, n),
            None => (false, inner),
        };
        if !valid_param_name(name) {
            return Err(TemplateError::BadName(seg.to_owned()));
        }
        if names.contains(&name) {
            return Err(TemplateError::Duplicate(name.to_owned()));
        }
        names.push(name);
        if catch_all && i + 1 != n {
            return Err(TemplateError::CatchAllNotLast(seg.to_owned()));
        }
        out.push(if catch_all {
            TemplateSeg::CatchAll
        } else {
            TemplateSeg::Param
        });
    }
    Ok(out)
}

/// An HTTP method token (RFC 9110 `tchar`s), upper-cased.
pub(crate) fn parse_method(m: &str) -> Option<String> {
    let ok = !m.is_empty()
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then(|| m.to_ascii_uppercase())
}

#[cfg(test)]
pub(crate) fn normalize_slow_for_test(path: &str) -> Result<String, &'static str> {
    normalize_slow(path, PathOptions::default())
}
