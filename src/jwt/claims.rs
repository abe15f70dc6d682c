//! Claims copied out of a verified JWT for `identity_headers.claims`.

use std::sync::Arc;

/// Reads the configured claims out of a JWT payload (already verified).
/// Strings as they are, numbers and booleans as text, arrays of those
/// joined with `,`; objects, nulls and values over 4 KiB are skipped.
pub fn extract_claims(
    payload: &serde_json::Map<String, serde_json::Value>,
    names: &[Arc<str>],
) -> Vec<(Arc<str>, String)> {
    use serde_json::Value as J;
    fn scalar(v: &J) -> Option<String> {
        match v {
            J::String(s) => Some(s.clone()),
            J::Number(n) => Some(n.to_string()),
            J::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let mut out = Vec::new();
    for name in names {
        let found = payload.get(&**name).or_else(|| {
            let mut parts = name.split('.');
            let first = payload.get(parts.next()?)?;
            parts.try_fold(first, |v, p| v.as_object()?.get(p))
        });
        let text = match found {
            Some(J::Array(items)) => {
                let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
                parts.map(|p| p.join(","))
            }
            Some(v) => scalar(v),
            None => None,
        };
        if let Some(t) = text.filter(|t| t.len() <= 4096) {
            out.push((name.clone(), t));
        }
    }
    out
}
