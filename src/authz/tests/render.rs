//! The identity part written by [`Template`] against the reference: the
//! rendering portcullis used before stop 26 (messages built with
//! `response::overwrite` and a metadata `Struct`, encoded by prost), for a
//! range of identities and every `identity_headers` option.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::OkHttpResponse;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;

use crate::authz::headers::{IdentityField, IdentityHeaders, IdentityHeadersConfig, string};
use crate::authz::response::overwrite;
use crate::identity::{CredentialKind, Identity};

/// The pre-stop-26 `IdentityHeaders::render`, kept verbatim in substance:
/// built-in headers in `IdentityField::ALL` order, then mapped claims in
/// config order; metadata `subject`, `issuer`, `username`, `client`,
/// `method`, `token_id`, `scopes` and `claims`.
pub(in crate::authz) fn reference(
    cfg: &IdentityHeadersConfig,
    id: &Identity,
) -> (OkHttpResponse, Struct) {
    let prefix = cfg.prefix.to_ascii_lowercase();
    let scopes = id.scopes.join(" ");
    let field_value = |f: IdentityField| -> Option<&str> {
        match f {
            IdentityField::Subject => Some(id.subject.as_str()),
            IdentityField::Issuer => id.issuer.as_deref(),
            IdentityField::Username => id.username.as_deref(),
            IdentityField::Email => id.email.as_deref(),
            IdentityField::Client => id.client.as_deref(),
            IdentityField::Scopes => Some(scopes.as_str()),
            IdentityField::Method => Some(id.kind.as_str()),
            IdentityField::TokenId => id.token_id.as_deref(),
        }
    };
    let mut headers = Vec::new();
    for f in IdentityField::ALL {
        if cfg.set.contains(&f)
            && let Some(v) = field_value(f)
        {
            headers.push(overwrite(&format!("{prefix}{}", f.suffix()), v));
        }
    }
    let mut claims = HashMap::new();
    for (claim, header) in &cfg.claims {
        let v = id
            .claims
            .iter()
            .find(|(c, _)| **c == **claim)
            .map(|(_, v)| v.as_str());
        if let Some(v) = v {
            headers.push(overwrite(&header.to_ascii_lowercase(), v));
            claims.insert(claim.to_string(), string(v));
        }
    }
    let mut metadata = HashMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            metadata.insert(k.to_owned(), string(v));
        }
    };
    put("subject", Some(&id.subject));
    put("issuer", id.issuer.as_deref());
    put("username", id.username.as_deref());
    put("client", id.client.as_deref());
    put("method", Some(id.kind.as_str()));
    put("token_id", id.token_id.as_deref());
    put("scopes", Some(&scopes));
    if !claims.is_empty() {
        metadata.insert(
            "claims".to_owned(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: claims })),
            },
        );
    }
    (
        OkHttpResponse {
            headers,
            ..Default::default()
        },
        Struct { fields: metadata },
    )
}

pub(in crate::authz) fn configs() -> Vec<IdentityHeadersConfig> {
    let long_header = format!("x-{}", "h".repeat(200));
    let claims = |m: &[(&str, &str)]| -> BTreeMap<String, String> {
        m.iter()
            .map(|(c, h)| (c.to_string(), h.to_string()))
            .collect()
    };
    let with = |prefix: &str, set: Vec<IdentityField>, c: BTreeMap<String, String>| {
        IdentityHeadersConfig {
            prefix: prefix.into(),
            set,
            claims: c,
        }
    };
    vec![
        IdentityHeadersConfig::default(),
        with("x-user-", IdentityField::ALL.to_vec(), claims(&[])),
        with("X-Auth-", IdentityField::ALL.to_vec(), claims(&[])),
        with("x-auth-", Vec::new(), claims(&[])),
        with("x-auth-", vec![IdentityField::Subject], claims(&[])),
        with(
            "x-auth-",
            // Order in the config does not matter: output follows ALL.
            vec![
                IdentityField::TokenId,
                IdentityField::Scopes,
                IdentityField::Email,
            ],
            claims(&[]),
        ),
        with(
            "x-auth-",
            IdentityField::ALL.to_vec(),
            claims(&[
                ("tenant", "X-Tenant"),
                ("groups", "x-auth-groups"),
                ("org.unit", "x-org-unit"),
                ("missing", "x-missing"),
            ]),
        ),
        with(
            "x-a-",
            vec![IdentityField::Method],
            claims(&[("tenant", long_header.as_str())]),
        ),
    ]
}

fn id(kind: CredentialKind, subject: &str) -> Identity {
    Identity {
        kind,
        subject: subject.into(),
        username: None,
        email: None,
        client: None,
        scopes: Vec::<String>::new().into(),
        token_id: None,
        issuer: None,
        expires_at: 0,
        claims: Vec::new(),
        rendered: Default::default(),
    }
}

pub(in crate::authz) fn identities() -> Vec<Identity> {
    let long = "v".repeat(300);
    let huge = "w".repeat(20_000);
    let full = |kind, sub: &str, v: &str| Identity {
        kind,
        subject: sub.into(),
        username: Some(v.into()),
        email: Some(format!("{v}@example.org")),
        client: Some(v.into()),
        scopes: vec![format!("{v}:read"), "b:write".to_owned()].into(),
        token_id: Some(v.into()),
        issuer: Some(Arc::from(format!("https://kc/{v}").as_str())),
        expires_at: 1,
        claims: vec![
            (Arc::from("tenant"), v.to_owned()),
            (Arc::from("groups"), "/a,/b".to_owned()),
            (Arc::from("org.unit"), String::new()),
        ],
        rendered: Default::default(),
    };
    let mut out = vec![
        // Nothing optional.
        id(CredentialKind::Jwt, "alice"),
        id(CredentialKind::Pat, "u-1"),
        id(CredentialKind::ServiceAccount, "svc"),
        // Every field, plain.
        full(CredentialKind::Jwt, "alice", "alice"),
        full(CredentialKind::Pat, "bob", "bob"),
        full(CredentialKind::ServiceAccount, "svc", "robot"),
        // Empty strings (a header without a value field, metadata "").
        full(CredentialKind::Jwt, "s", ""),
        // Unicode, including U+00A9 whose lead byte is a C1 control's.
        full(CredentialKind::Jwt, "jörg", "Jörg Łukasz 山田 © 🦀"),
        // Control characters: ASCII, DEL, C1 (NEL, U+009F), CR/LF.
        full(
            CredentialKind::Jwt,
            "evil\r\nx-injected: 1",
            "a\tb\u{7f}c\u{85}d\u{9f}e\0",
        ),
        full(CredentialKind::Pat, "ok", "only\u{80}c1"),
        // Lengths past one- and two-byte varints.
        full(CredentialKind::Jwt, &long, &long),
        full(CredentialKind::Jwt, &huge, &huge),
    ];
    let mut one_scope = id(CredentialKind::Jwt, "one");
    one_scope.scopes = vec!["orders:read".to_owned()].into();
    out.push(one_scope);
    let mut odd_scopes = id(CredentialKind::Jwt, "odd");
    odd_scopes.scopes = vec![
        String::new(),
        "a\nb".to_owned(),
        "c".to_owned(),
        String::new(),
    ]
    .into();
    out.push(odd_scopes);
    let mut claims_only = id(CredentialKind::Jwt, "c");
    claims_only.claims = vec![(Arc::from("org.unit"), "\u{1}unit".to_owned())];
    out.push(claims_only);
    out
}

/// Header entries byte for byte; the metadata as Envoy decodes it (a map:
/// the old encoding's entry order was a `HashMap`'s, so only its decoded
/// form and its length are fixed); the measured sizes exact.
#[test]
fn writes_what_the_reference_rendering_encodes() {
    let mut cases = 0;
    for cfg in configs() {
        let compiled = IdentityHeaders::compile(&cfg);
        let template = compiled.template();
        for id in identities() {
            let (ok, metadata) = reference(&cfg, &id);
            let m = template.measure(&id);
            let mut out = Vec::new();
            assert_eq!(template.write(&id, &mut out), m.ok);
            let sub: String = id.subject.chars().take(20).collect();
            let what = format!("{cfg:?} / {sub:?}");
            assert_eq!(out.len(), m.ok + m.metadata, "{what}");
            assert_eq!(out[..m.ok], ok.encode_to_vec()[..], "headers of {what}");
            let got = Struct::decode(&out[m.ok..]).expect("metadata decodes");
            assert_eq!(got, metadata, "metadata of {what}");
            assert_eq!(m.metadata, metadata.encoded_len(), "{what}");
            // The scratch path writes the same bytes, twice in a row.
            for _ in 0..2 {
                template.with_written(&id, |a, b| {
                    assert_eq!((a, b), (&out[..m.ok], &out[m.ok..]), "{what}");
                });
            }
            cases += 1;
        }
    }
    assert_eq!(cases, configs().len() * identities().len());
}

/// Header values are made safe exactly as before: each control character
/// (C0, DEL, C1) becomes one space, nothing else changes.
#[test]
fn control_characters_become_spaces_in_headers_only() {
    let compiled = IdentityHeaders::compile(&IdentityHeadersConfig::default());
    let mut id = id(CredentialKind::Jwt, "a\r\nb\u{85}c©");
    id.scopes = vec!["x\ty".to_owned(), "z".to_owned()].into();
    assert_eq!(id.rendered.clean(), None);
    let m = compiled.template().measure(&id);
    // Learned once and kept; a clone (usually changed next) learns anew.
    assert_eq!(id.rendered.clean(), Some(false));
    assert_eq!(id.clone().rendered.clean(), None);
    let mut out = Vec::new();
    compiled.template().write(&id, &mut out);
    let ok = OkHttpResponse::decode(&out[..m.ok]).expect("decodes");
    let value = |name: &str| {
        ok.headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
    };
    assert_eq!(value("x-auth-subject").as_deref(), Some("a  b c©"));
    assert_eq!(value("x-auth-scopes").as_deref(), Some("x y z"));
    let md = Struct::decode(&out[m.ok..]).expect("decodes");
    assert_eq!(md.fields["subject"], string("a\r\nb\u{85}c©"));
    assert_eq!(md.fields["scopes"], string("x\ty z"));
}

/// Nothing rendered is kept per identity: the struct holds its values and
/// one byte of hints (in padding). A cached JWT's identity was 216 bytes
/// with its render slot, and its answer ~540 more.
#[test]
fn an_identity_keeps_no_render() {
    assert!(
        std::mem::size_of::<Identity>() <= 192,
        "{}",
        std::mem::size_of::<Identity>()
    );
}
