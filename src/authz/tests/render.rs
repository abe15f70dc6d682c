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

/// Every length around the one/two/three-byte varint boundaries of each
/// nested length (value, `HeaderValue`, `HeaderValueOption`, map entry,
/// `Value`, the `claims` struct), for clean values and for values whose
/// header form is shorter than their raw form (C1 controls: two bytes
/// become one space), matches the reference byte for byte (headers) and
/// as decoded (metadata), with `measure` exact.
#[test]
fn every_length_around_varint_boundaries_matches_the_reference() {
    let cfg = IdentityHeadersConfig {
        claims: [("tenant".to_owned(), "x-tenant".to_owned())].into(),
        ..Default::default()
    };
    let compiled = IdentityHeaders::compile(&cfg);
    let template = compiled.template();
    // Raw lengths; a C1 value's header form is half as long, so its
    // boundaries come at twice the raw length.
    let mut lens: Vec<usize> = (0..300).collect();
    lens.extend(16_300..16_400);
    lens.extend(32_700..32_790);
    lens.extend(2_097_115..2_097_155);
    for n in lens {
        let fillers: &[&str] = if n > 100_000 {
            &["a"]
        } else {
            &["a", "\u{85}", "a\u{85}"]
        };
        for filler in fillers {
            let v: String = filler
                .repeat(n.div_ceil(filler.len()))
                .chars()
                .take(n)
                .collect();
            let mut x = id(CredentialKind::Jwt, &v);
            x.username = Some(v.clone());
            x.email = Some(String::new());
            x.scopes = vec![v.clone(), String::new()].into();
            x.claims = vec![(Arc::from("tenant"), v.clone())];
            let (ok, metadata) = reference(&cfg, &x);
            let m = template.measure(&x);
            let mut out = Vec::new();
            assert_eq!(template.write(&x, &mut out), m.ok, "{n} {filler:?}");
            assert_eq!(out.len(), m.ok + m.metadata, "{n} {filler:?}");
            assert!(
                out[..m.ok] == ok.encode_to_vec()[..],
                "headers {n} {filler:?}"
            );
            assert_eq!(m.metadata, metadata.encoded_len(), "{n} {filler:?}");
            let got = Struct::decode(&out[m.ok..]).expect("metadata decodes");
            assert!(got == metadata, "metadata {n} {filler:?}");
        }
    }
}

/// Randomised (fixed seed): identities of mixed characters (C0, DEL, C1,
/// U+00A0.., multi-byte, astral) and lengths on either side of the varint
/// boundaries, under every configuration, write what the reference
/// encodes; the hint learned on the first write gives the same bytes on
/// the next.
#[test]
fn random_identities_match_the_reference() {
    const CHARS: &[char] = &[
        'a', ' ', '\0', '\r', '\n', '\t', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{a0}', '©',
        'é', '山', '🦀', ':', '"',
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let lens = [
        0, 1, 2, 60, 100, 115, 120, 126, 127, 128, 129, 200, 16_370, 16_384,
    ];
    let configs = configs();
    for i in 0..600 {
        // A third of the identities have no C0 or DEL anywhere (so only a
        // C1 character can make them need replacing), a third nothing to
        // replace at all.
        let alphabet: Vec<char> = CHARS
            .iter()
            .copied()
            .filter(|c| match i % 3 {
                0 => true,
                1 => !(c.is_ascii_control()),
                _ => !c.is_control(),
            })
            .collect();
        let text = |next: &mut dyn FnMut(usize) -> usize| -> String {
            let target = lens[next(lens.len())];
            let mut s = String::new();
            while s.len() < target {
                s.push(alphabet[next(alphabet.len())]);
            }
            s
        };
        let mut x = id(CredentialKind::Jwt, &text(&mut next));
        let opt = |s: String, n: &mut dyn FnMut(usize) -> usize| (n(4) > 0).then_some(s);
        x.username = opt(text(&mut next), &mut next);
        x.email = opt(text(&mut next), &mut next);
        x.client = opt(text(&mut next), &mut next);
        x.token_id = opt(text(&mut next), &mut next);
        x.issuer = opt(text(&mut next), &mut next).map(|s| Arc::from(s.as_str()));
        x.scopes = (0..next(4))
            .map(|_| text(&mut next))
            .collect::<Vec<_>>()
            .into();
        x.claims = Vec::new();
        for c in ["tenant", "groups", "org.unit"] {
            if next(3) > 0 {
                x.claims.push((Arc::from(c), text(&mut next)));
            }
        }
        for cfg in &configs {
            let compiled = IdentityHeaders::compile(cfg);
            let template = compiled.template();
            let (ok, metadata) = reference(cfg, &x);
            for pass in 0..2 {
                let m = template.measure(&x);
                let mut out = Vec::new();
                assert_eq!(template.write(&x, &mut out), m.ok, "{pass} {x:?}");
                assert_eq!(out.len(), m.ok + m.metadata, "{pass} {x:?}");
                assert!(out[..m.ok] == ok.encode_to_vec()[..], "{pass} {x:?}");
                assert_eq!(m.metadata, metadata.encoded_len(), "{pass} {x:?}");
                let got = Struct::decode(&out[m.ok..]).expect("metadata decodes");
                assert!(got == metadata, "{pass} {x:?}");
            }
        }
    }
}
