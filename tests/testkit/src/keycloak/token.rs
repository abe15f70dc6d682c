//! `POST {issuer}/protocol/openid-connect/token`: client authentication and
//! the `client_credentials`, `password` and standard token-exchange grants,
//! with Keycloak 26's error codes, statuses and messages.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::keys::{self, b64url, family};
use super::server::json_response;
use super::{Client, Inner, Shared, SignOpts, new_uuid, now, scope_union};

pub(super) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(super) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

type Form = Vec<(String, String)>;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn bad_request(error: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` body → pairs (decoded, in order).
fn parse_form(body: &[u8]) -> Form {
    let body = String::from_utf8_lossy(body);
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn param<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn params<'a>(form: &'a Form, name: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

pub(super) fn handle(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let form = if is_form {
        parse_form(body)
    } else {
        Vec::new()
    };

    let Some(grant_type) = param(&form, "grant_type") else {
        return bad_request("invalid_request", "Missing form parameter: grant_type");
    };
    let grant_type = grant_type.to_owned();
    if !matches!(
        grant_type.as_str(),
        "client_credentials" | "password" | TOKEN_EXCHANGE
    ) {
        return bad_request("unsupported_grant_type", "Unsupported grant_type");
    }
    let multi_ok: &[&str] = if grant_type == TOKEN_EXCHANGE {
        &["audience", "resource"]
    } else {
        &[]
    };
    for (i, (k, _)) in form.iter().enumerate() {
        if !multi_ok.contains(&k.as_str()) && form[..i].iter().any(|(k2, _)| k2 == k) {
            return bad_request("invalid_request", "duplicated parameter");
        }
    }

    let inner = shared.lock();
    let (client_id, client) = match authenticate(&inner, headers, &form) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let issuer = shared.issuer();
    match grant_type.as_str() {
        "client_credentials" => client_credentials(&inner, &issuer, &client_id, &client, &form),
        "password" => password(&inner, shared, &client_id, &form),
        _ => token_exchange(&inner, &issuer, &client_id, &client, &form),
    }
}

fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(String, Client), Box<Response>> {
    let mut client_id = None;
    let mut secret = None;
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b64) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
        && let Ok(raw) = STANDARD.decode(b64.trim())
        && let Ok(raw) = String::from_utf8(raw)
        && let Some((id, s)) = raw.split_once(':')
    {
        // RFC 6749 §2.3.1: both parts are form-urlencoded.
        client_id = Some(percent_decode(id));
        secret = Some(percent_decode(s));
    }
    if let Some(id) = param(form, "client_id") {
        client_id = Some(id.to_owned());
    }
    if let Some(s) = param(form, "client_secret") {
        secret = Some(s.to_owned());
    }
    let Some(client_id) = client_id else {
        return Err(Box::new(bad_request(
            "invalid_client",
            "Missing client_id parameter",
        )));
    };
    let Some(client) = inner.clients.get(&client_id) else {
        return Err(Box::new(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        )));
    };
    if let Some(expected) = &client.secret
        && secret.as_deref() != Some(expected.as_str())
    {
        return Err(Box::new(oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        )));
    }
    Ok((client_id, client.clone()))
}

/// Signs a token-endpoint token with the active key of the configured alg.
fn sign_issued(inner: &Inner, claims: &Value) -> String {
    let alg = inner.token_alg;
    let key = inner.active(family(alg));
    super::sign_with(&key.encoding, alg, &key.kid, &SignOpts::default(), claims)
}

fn client_credentials(
    inner: &Inner,
    issuer: &str,
    client_id: &str,
    client: &Client,
    form: &Form,
) -> Response {
    if client.secret.is_none() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Public client not allowed to retrieve service account",
        );
    }
    let t = now();
    let lifetime = inner.access_token_lifetime.as_secs();
    let scope = scope_union("profile email", param(form, "scope").unwrap_or(""));
    let realm = issuer.rsplit('/').next().unwrap_or("test");
    let claims = json!({
        "exp": t + lifetime,
        "iat": t,
        "jti": new_uuid(),
        "iss": issuer,
        "aud": inner.default_audience,
        "sub": client.service_account_sub,
        "typ": "Bearer",
        "azp": client_id,
        "acr": "1",
        "allowed-origins": ["/*"],
        "realm_access": { "roles": super::default_realm_roles(realm) },
        "resource_access": {
            "account": { "roles": ["manage-account", "manage-account-links", "view-profile"] }
        },
        "scope": scope,
        "clientHost": "127.0.0.1",
        "email_verified": false,
        "preferred_username": format!("service-account-{client_id}"),
        "clientAddress": "127.0.0.1",
        "client_id": client_id,
    });
    let access_token = sign_issued(inner, &claims);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": lifetime,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope,
        }),
    )
}

fn password(inner: &Inner, shared: &Shared, client_id: &str, form: &Form) -> Response {
    let Some(username) = param(form, "username") else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "Missing parameter: username",
        );
    };
    let user = inner
        .users
        .get(username)
        .filter(|u| Some(u.password.as_str()) == param(form, "password"))
        .cloned();
    let Some(user) = user else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        );
    };
    let requested = param(form, "scope").unwrap_or("");
    let scope = scope_union(&user.scope, requested);
    let issuer = shared.issuer();
    let claims = inner.user_claims(
        &issuer,
        &shared.realm,
        &user.sub,
        &user.username,
        client_id,
        &scope,
        &user.realm_roles,
        inner.access_token_lifetime,
    );
    let access_token = sign_issued(inner, &claims);
    let t = now();
    let sid = claims["sid"].clone();

    let refresh_claims = json!({
        "exp": t + 1800,
        "iat": t,
        "jti": new_uuid(),
        "iss": issuer,
        "aud": issuer,
        "sub": user.sub,
        "typ": "Refresh",
        "azp": client_id,
        "sid": sid,
        "scope": scope,
    });
    let mut rheader = Map::new();
    rheader.insert("alg".into(), json!("HS512"));
    rheader.insert("typ".into(), json!("JWT"));
    rheader.insert("kid".into(), json!(inner.refresh_kid));
    let refresh_token = keys::sign_compact(
        &rheader,
        &refresh_claims,
        &jsonwebtoken::EncodingKey::from_secret(&inner.refresh_secret),
        Algorithm::HS512,
    );

    let mut resp = json!({
        "access_token": access_token,
        "expires_in": inner.access_token_lifetime.as_secs(),
        "refresh_expires_in": 1800,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": sid,
        "scope": scope,
    });
    if requested.split_whitespace().any(|s| s == "openid") {
        let digest = Sha256::digest(access_token.as_bytes());
        let mut id_claims = claims.clone();
        let obj = id_claims.as_object_mut().expect("claims object");
        for k in [
            "scope",
            "realm_access",
            "resource_access",
            "allowed-origins",
        ] {
            obj.remove(k);
        }
        obj.insert("jti".into(), json!(new_uuid()));
        obj.insert("aud".into(), json!(client_id));
        obj.insert("typ".into(), json!("ID"));
        obj.insert("at_hash".into(), json!(b64url(&digest[..16])));
        resp["id_token"] = json!(sign_issued(inner, &id_claims));
    }
    json_response(StatusCode::OK, &resp)
}

/// Verifies a token issued by this stand-in (signature by a published signing
/// key with exactly its algorithm, issuer, expiry, `typ: Bearer`).
fn verify_own(inner: &Inner, issuer: &str, token: &str) -> Option<Map<String, Value>> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let kid = header.kid?;
    let key = inner.sig_keys.iter().find(|k| k.kid == kid)?;
    if header.alg != key.alg {
        return None;
    }
    let mut v = Validation::new(key.alg);
    v.set_issuer(&[issuer]);
    v.validate_aud = false;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &v).ok()?;
    (data.claims.get("typ").and_then(Value::as_str) == Some("Bearer")).then_some(data.claims)
}

fn aud_contains(aud: Option<&Value>, client_id: &str) -> bool {
    match aud {
        Some(Value::String(s)) => s == client_id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    }
}

fn token_exchange(
    inner: &Inner,
    issuer: &str,
    client_id: &str,
    client: &Client,
    form: &Form,
) -> Response {
    // StandardTokenExchangeProvider.supports(): each reason → 400 invalid_request.
    for p in ["requested_subject", "requested_issuer", "subject_issuer"] {
        if param(form, p).is_some() {
            return bad_request(
                "invalid_request",
                &format!("Parameter '{p}' is not supported for standard token exchange"),
            );
        }
    }
    if !client.can_exchange {
        return bad_request(
            "invalid_request",
            "Standard token exchange is not enabled for the requested client",
        );
    }
    let Some(subject_token) = param(form, "subject_token") else {
        return bad_request(
            "invalid_request",
            "Parameter 'subject_token' required for standard token exchange",
        );
    };
    let Some(subject_token_type) = param(form, "subject_token_type") else {
        return bad_request(
            "invalid_request",
            "Parameter 'subject_token_type' required for standard token exchange",
        );
    };
    if subject_token_type != ACCESS_TOKEN_TYPE {
        return bad_request(
            "invalid_request",
            "Parameter 'subject_token' supports access tokens only",
        );
    }
    let Some(subject) = verify_own(inner, issuer, subject_token) else {
        return bad_request("invalid_request", "Invalid token");
    };
    let audiences = params(form, "audience");
    if audiences.iter().any(|a| !inner.clients.contains_key(*a)) {
        return bad_request("invalid_client", "Audience not found");
    }
    if client.secret.is_none() {
        return bad_request(
            "invalid_client",
            "Public client is not allowed to exchange token",
        );
    }
    let holder = subject.get("azp").and_then(Value::as_str);
    if holder != Some(client_id) && !aud_contains(subject.get("aud"), client_id) {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "Client is not within the token audience",
        );
    }
    if let Some(rt) = param(form, "requested_token_type")
        && rt != ACCESS_TOKEN_TYPE
    {
        return bad_request("invalid_request", "requested_token_type unsupported");
    }

    let t = now();
    let lifetime = inner.exchange_lifetime.as_secs();
    let mut claims = subject;
    claims.insert("iat".into(), json!(t));
    claims.insert("exp".into(), json!(t + lifetime));
    claims.insert("jti".into(), json!(new_uuid()));
    claims.insert("azp".into(), json!(client_id));
    match audiences.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), json!(one));
        }
        many => {
            claims.insert("aud".into(), json!(many));
        }
    }
    if let Some(scope) = param(form, "scope") {
        claims.insert("scope".into(), json!(scope));
    }
    for (k, v) in &inner.exchange_extra_claims {
        claims.insert(k.clone(), v.clone());
    }
    let scope = claims.get("scope").cloned().unwrap_or(json!(""));
    let sid = claims.get("sid").cloned().unwrap_or(Value::Null);
    let access_token = sign_issued(inner, &Value::Object(claims));
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": lifetime,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": sid,
            "scope": scope,
            "issued_token_type": ACCESS_TOKEN_TYPE,
        }),
    )
}
