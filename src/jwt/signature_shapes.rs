//! The token shapes of [`super::parsed_keys_answer_as_jsonwebtoken_does`]
//! aimed at the one-pass reading (`jwt::payload`): kept apart so the
//! differential test itself stays readable.

use super::*;

/// Claims and headers in every shape the one-pass reading
/// (`super::payload`) might read differently from `peek` and
/// jsonwebtoken: each member of the claims it interprets set to each JSON
/// type and number spelling, repeated names, escaped names, and headers it
/// must leave to jsonwebtoken. Signed properly, so each reaches the claims.
pub(super) fn shape_variants(s: &Signer, alg: Algorithm, n: usize) -> Vec<(String, String)> {
    let now = unix_now();
    let h = header(alg, s.kid);
    let c = claims(n);
    let mut out = Vec::new();
    let values = [
        json!(null),
        json!(true),
        json!(""),
        json!("api"),
        json!("Bearer"),
        json!(0),
        json!(-1),
        json!(now),
        json!(now + 600),
        json!(now - 3600),
        json!(now + 3600),
        json!((now + 600) as f64 + 0.4),
        json!((now - 30) as f64),
        json!(u64::MAX),
        json!(i64::MAX),
        json!(i64::MIN),
        json!([]),
        json!(["api"]),
        json!(["other", "api"]),
        json!(["other"]),
        json!(["api", 1]),
        json!([null]),
        json!({}),
        json!({"roles": ["a:b"]}),
        json!({"jkt": "abc"}),
        json!({"jkt": 1}),
        json!({"api": {"roles": ["r"]}}),
        json!({"api": {"roles": "r"}}),
    ];
    let names = [
        "iss",
        "sub",
        "exp",
        "nbf",
        "iat",
        "typ",
        "azp",
        "preferred_username",
        "email",
        "scope",
        "sid",
        "jti",
        "aud",
        "client_id",
        "clientId",
        "realm_access",
        "resource_access",
        "cnf",
        "token_use",
        "other",
    ];
    for name in names {
        for v in &values {
            let mut c = c.clone();
            c[name] = v.clone();
            out.push((format!("{name} = {v}"), sign_raw(&h, &c, &s.key, alg)));
        }
        let mut c = c.clone();
        if c.as_object_mut().unwrap().remove(name).is_some() {
            out.push((format!("{name} absent"), sign_raw(&h, &c, &s.key, alg)));
        }
    }
    // JSON text a `Value` cannot carry: number spellings, repeated and
    // escaped names.
    let body = c.to_string();
    let inner = &body[1..body.len() - 1];
    // The claims with `name` spelled as `text`.
    let raw = |name: &str, text: &str| {
        let mut c = c.clone();
        c.as_object_mut().unwrap().remove(name);
        let b = c.to_string();
        format!(r#"{{{},"{name}":{text}}}"#, &b[1..b.len() - 1])
    };
    let texts = [
        ("exp 1e10", raw("exp", "1e10")),
        (
            "exp spelled with exponent",
            raw("exp", &format!("{}e0", now + 600)),
        ),
        ("exp with .0", raw("exp", &format!("{}.0", now + 600))),
        ("exp huge", raw("exp", "99999999999999999999999")),
        ("exp -0", raw("exp", "-0")),
        ("exp as string", raw("exp", &format!("\"{}\"", now + 600))),
        ("nbf 1e3", raw("nbf", "1e3")),
        ("nbf 1e300", raw("nbf", "1e300")),
        ("nbf with .0", raw("nbf", &format!("{now}.0"))),
        ("nbf -0", raw("nbf", "-0")),
        ("nbf -0.0", raw("nbf", "-0.0")),
        ("nbf huge", raw("nbf", "99999999999999999999999")),
        ("iat 1e3", raw("iat", "1e3")),
        ("iat -0", raw("iat", "-0")),
        ("duplicate exp", format!(r#"{{{inner},"exp":1}}"#)),
        ("duplicate sub", format!(r#"{{{inner},"sub":"admin"}}"#)),
        ("duplicate iss", format!(r#"{{{inner},"iss":"{ISS}"}}"#)),
        ("duplicate aud", format!(r#"{{{inner},"aud":"api"}}"#)),
        ("duplicate other", format!(r#"{{{inner},"x":1,"x":2}}"#)),
        (
            "duplicate by escape",
            format!(r#"{{{inner},"\u0073ub":"admin"}}"#),
        ),
        ("escaped name", {
            let mut c = c.clone();
            let sub = c.as_object_mut().unwrap().remove("sub").unwrap();
            let b = c.to_string();
            format!(r#"{{{},"\u0073ub":{sub}}}"#, &b[1..b.len() - 1])
        }),
        (
            "escaped value",
            format!(r#"{{{inner},"email":"a\u0040b.c"}}"#),
        ),
        ("escaped aud", {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove("aud");
            let b = c.to_string();
            format!(r#"{{{},"aud":["\u0061pi"]}}"#, &b[1..b.len() - 1])
        }),
        ("trailing text", format!("{body} x")),
        ("trailing comma", format!("{{{inner},}}")),
        ("array", format!("[{body}]")),
        (
            "deep",
            format!(r#"{{{inner},"x":{}{}}}"#, "[".repeat(200), "]".repeat(200)),
        ),
        (
            "duplicate role",
            format!(r#"{{{inner},"realm_access":{{"roles":["a"],"roles":["b"]}}}}"#),
        ),
    ];
    let ht = h.to_string();
    for (what, text) in texts {
        out.push((what.to_owned(), sign_text(&ht, &text, &s.key, alg)));
    }
    // Headers: the plain ones read once, the others left to jsonwebtoken.
    let kid = s.kid;
    let a = format!("{alg:?}");
    let headers = [
        ("plain, no typ", format!(r#"{{"alg":"{a}","kid":"{kid}"}}"#)),
        (
            "plain, extra strings",
            format!(
                r#"{{"alg":"{a}","kid":"{kid}","cty":"x","zip":"DEF","x5t":"t","nonce":"n","url":"u","x5t#S256":"s","jku":"j","x5u":"u","other":"o"}}"#
            ),
        ),
        (
            "typ at+jwt",
            format!(r#"{{"alg":"{a}","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "typ null",
            format!(r#"{{"alg":"{a}","kid":"{kid}","typ":null}}"#),
        ),
        ("kid null", format!(r#"{{"alg":"{a}","kid":null}}"#)),
        ("kid number", format!(r#"{{"alg":"{a}","kid":1}}"#)),
        ("kid empty", format!(r#"{{"alg":"{a}","kid":""}}"#)),
        ("alg null", format!(r#"{{"alg":null,"kid":"{kid}"}}"#)),
        (
            "escaped kid name",
            format!(r#"{{"alg":"{a}","\u006bid":"{kid}"}}"#),
        ),
        (
            "escaped alg",
            format!(r#"{{"alg":"{}","kid":"{kid}"}}"#, a.replace('S', "\\u0053")),
        ),
        (
            "duplicate kid",
            format!(r#"{{"alg":"{a}","kid":"{kid}","kid":"{kid}"}}"#),
        ),
        (
            "duplicate other",
            format!(r#"{{"alg":"{a}","kid":"{kid}","x":"1","x":"2"}}"#),
        ),
        (
            "duplicate cty",
            format!(r#"{{"alg":"{a}","kid":"{kid}","cty":"1","cty":"2"}}"#),
        ),
        (
            "crit empty",
            format!(r#"{{"alg":"{a}","kid":"{kid}","crit":[]}}"#),
        ),
        (
            "crit null",
            format!(r#"{{"alg":"{a}","kid":"{kid}","crit":null}}"#),
        ),
        (
            "enc",
            format!(r#"{{"alg":"{a}","kid":"{kid}","enc":"A256GCM"}}"#),
        ),
        (
            "jwk",
            format!(r#"{{"alg":"{a}","kid":"{kid}","jwk":{{"kty":"oct","k":"AA"}}}}"#),
        ),
        (
            "jwk string",
            format!(r#"{{"alg":"{a}","kid":"{kid}","jwk":"x"}}"#),
        ),
        (
            "x5c",
            format!(r#"{{"alg":"{a}","kid":"{kid}","x5c":["AA"]}}"#),
        ),
        (
            "x5c string",
            format!(r#"{{"alg":"{a}","kid":"{kid}","x5c":"AA"}}"#),
        ),
        (
            "member null",
            format!(r#"{{"alg":"{a}","kid":"{kid}","x":null}}"#),
        ),
        (
            "member object",
            format!(r#"{{"alg":"{a}","kid":"{kid}","x":{{}}}}"#),
        ),
        (
            "header trailing text",
            format!(r#"{{"alg":"{a}","kid":"{kid}"}} x"#),
        ),
        (
            "header array",
            format!(r#"[{{"alg":"{a}","kid":"{kid}"}}]"#),
        ),
    ];
    for (what, text) in headers {
        out.push((
            format!("header {what}"),
            sign_text(&text, &body, &s.key, alg),
        ));
    }
    out
}
