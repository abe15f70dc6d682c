//! Unit tests of `authz::input`: the light decode reads exactly what the
//! generated `CheckRequest` would, and refuses what it would refuse.

use super::*;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, Pipe, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use prost::encoding::{WireType, encode_key, encode_varint};

fn full_request() -> CheckRequest {
    let mut http = HttpRequest {
        id: "17".into(),
        method: "POST".into(),
        path: "/a/b?x=1".into(),
        host: "api.example".into(),
        scheme: "https".into(),
        query: "x=1".into(),
        protocol: "HTTP/2".into(),
        body: "not read".into(),
        header_map: Some(HeaderMap {
            headers: vec![HeaderValue {
                key: "x-raw".into(),
                value: String::new(),
                raw_value: b"\xffbin".to_vec(),
            }],
        }),
        ..Default::default()
    };
    http.headers
        .insert("authorization".into(), "Bearer t".into());
    http.headers.insert("user-agent".into(), "curl/8".into());
    let mut attrs = AttributeContext {
        source: Some(Peer {
            address: Some(Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address: "10.1.2.3".into(),
                    ..Default::default()
                })),
            }),
            certificate: "-----BEGIN%20CERTIFICATE".into(),
            principal: "spiffe://x".into(),
            ..Default::default()
        }),
        request: Some(Request {
            time: None,
            http: Some(http),
        }),
        ..Default::default()
    };
    attrs
        .context_extensions
        .insert("portcullis_route".into(), "orders".into());
    CheckRequest {
        attributes: Some(attrs),
    }
}

#[test]
fn keeps_every_field_portcullis_reads() {
    let got = CheckInput::from_request(&full_request());
    let http = got.http.as_ref().expect("http");
    assert_eq!(&*http.method, "POST");
    assert_eq!(&*http.path, "/a/b?x=1");
    assert_eq!(&*http.host, "api.example");
    assert_eq!(&*http.scheme, "https");
    let mut headers: Vec<(&str, &str)> = http.headers.iter().map(|(k, v)| (&**k, &**v)).collect();
    headers.sort();
    assert_eq!(
        headers,
        [("authorization", "Bearer t"), ("user-agent", "curl/8")]
    );
    assert_eq!(http.raw_headers.len(), 1);
    assert_eq!(&*http.raw_headers[0].key, "x-raw");
    assert_eq!(&http.raw_headers[0].raw_value[..], b"\xffbin");
    assert_eq!(
        got.context,
        [(
            ByteString::from_static("portcullis_route"),
            ByteString::from_static("orders")
        )]
    );
    assert_eq!(got.source_address.as_deref(), Some("10.1.2.3"));
    assert_eq!(&*got.certificate, "-----BEGIN%20CERTIFICATE");
}

#[test]
fn strings_share_the_received_buffer() {
    let bytes = Bytes::from(full_request().encode_to_vec());
    let range = bytes.as_ptr_range();
    let got = CheckInput::decode(bytes.clone()).expect("decodes");
    let path = got.http.expect("http").path;
    assert!(range.contains(&path.as_ptr()), "the path was copied");
}

#[test]
fn an_empty_request_has_no_http() {
    let got = CheckInput::decode(&b""[..]).expect("decodes");
    assert_eq!(got, CheckInput::default());
    assert!(got.http.is_none());
}

/// `attributes { request { http { <field> } } }` around raw field bytes.
fn nest_in_http(field: &[u8]) -> Vec<u8> {
    let wrap = |tag: u32, inner: &[u8]| {
        let mut out = Vec::new();
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    };
    wrap(1, &wrap(4, &wrap(2, field)))
}

fn string_field(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

#[test]
fn a_kept_string_that_is_not_utf8_fails_like_the_generated_type() {
    // path (4), a header entry (3: key 1, value 2), a raw header key.
    let header_entry = [string_field(1, b"x-a"), string_field(2, b"\xff")].concat();
    for field in [
        string_field(4, b"/\xff"),
        string_field(3, &header_entry),
        string_field(13, &string_field(1, &string_field(1, b"\xc3"))),
    ] {
        let bytes = nest_in_http(&field);
        assert!(CheckRequest::decode(&bytes[..]).is_err(), "generated type");
        assert!(CheckInput::decode(&bytes[..]).is_err(), "light type");
    }
}

#[test]
fn fields_not_read_are_skipped_even_when_not_utf8() {
    // `body` (11) is a string portcullis never reads: the generated type
    // refuses a binary body, the light one skips it.
    let bytes = nest_in_http(&[string_field(4, b"/ok"), string_field(11, b"\xff")].concat());
    let got = CheckInput::decode(&bytes[..]).expect("decodes");
    assert_eq!(&*got.http.expect("http").path, "/ok");
}

#[test]
fn truncated_or_mistyped_input_is_an_error() {
    let bytes = full_request().encode_to_vec();
    assert!(CheckInput::decode(&bytes[..bytes.len() - 3]).is_err());
    // Field 1 (attributes) as a varint instead of a message.
    assert!(CheckInput::decode(&[0x08, 0x01][..]).is_err());
}

#[test]
fn repeated_messages_merge_and_the_last_scalar_wins() {
    let first = nest_in_http(&[string_field(2, b"GET"), string_field(4, b"/a")].concat());
    let second = nest_in_http(&string_field(4, b"/b"));
    let bytes = [first, second].concat();
    let generated = CheckRequest::decode(&bytes[..]).expect("generated");
    let got = CheckInput::decode(&bytes[..]).expect("light");
    let http = got.http.expect("http");
    let want = generated.attributes.unwrap().request.unwrap().http.unwrap();
    assert_eq!((&*http.method, &*http.path), ("GET", "/b"));
    assert_eq!((want.method.as_str(), want.path.as_str()), ("GET", "/b"));
}

#[test]
fn a_later_pipe_address_replaces_the_socket_address() {
    let mut req = full_request();
    let peer = req.attributes.as_mut().unwrap().source.as_mut().unwrap();
    let socket = peer.encode_to_vec();
    peer.address = Some(Address {
        address: Some(AddressKind::Pipe(Pipe {
            path: "/run/x".into(),
            mode: 0,
        })),
    });
    // The socket address first, then the pipe: a oneof keeps the last.
    let mut bytes = req.encode_to_vec();
    let mut peer_twice = socket;
    peer_twice.extend(
        req.attributes
            .as_ref()
            .unwrap()
            .source
            .as_ref()
            .unwrap()
            .encode_to_vec(),
    );
    bytes.extend(string_field(1, &string_field(1, &peer_twice)));
    let got = CheckInput::decode(&bytes[..]).expect("decodes");
    assert_eq!(got.source_address, None);
}

/// What the generated type holds of the fields portcullis reads, in the
/// light type's shape (headers sorted; a map keeps the last of a key).
fn kept_by_generated(req: &CheckRequest) -> CheckInput {
    let attrs = req.attributes.clone().unwrap_or_default();
    let peer = attrs.source.unwrap_or_default();
    let s = |v: &str| ByteString::from(v.to_owned());
    let sorted = |m: &std::collections::HashMap<String, String>| {
        let mut v: Vec<_> = m.iter().map(|(k, v)| (s(k), s(v))).collect();
        v.sort();
        v
    };
    CheckInput {
        http: attrs.request.and_then(|r| r.http).map(|h| HttpInput {
            method: s(&h.method),
            path: s(&h.path),
            host: s(&h.host),
            scheme: s(&h.scheme),
            headers: sorted(&h.headers),
            raw_headers: h
                .header_map
                .map(|m| m.headers)
                .unwrap_or_default()
                .into_iter()
                .map(|hv| RawHeader {
                    key: s(&hv.key),
                    value: s(&hv.value),
                    raw_value: Bytes::from(hv.raw_value),
                })
                .collect(),
        }),
        context: sorted(&attrs.context_extensions),
        source_address: match peer.address.and_then(|a| a.address) {
            Some(AddressKind::SocketAddress(sa)) => Some(s(&sa.address)),
            _ => None,
        },
        certificate: s(&peer.certificate),
    }
}

/// The light type with a map's view of its lists: the last value of each
/// key, sorted.
fn as_maps(mut got: CheckInput) -> CheckInput {
    let last_wins = |v: Vec<(ByteString, ByteString)>| {
        let m: std::collections::BTreeMap<_, _> = v.into_iter().collect();
        m.into_iter().collect::<Vec<_>>()
    };
    got.context = last_wins(std::mem::take(&mut got.context));
    if let Some(h) = got.http.as_mut() {
        h.headers = last_wins(std::mem::take(&mut h.headers));
    }
    got
}

/// Differential check over many mutated encodings (bit flips, truncations,
/// spliced bytes): whenever the generated `CheckRequest` decodes, the light
/// decode succeeds too and holds the same values for every field read.
#[test]
fn agrees_with_the_generated_decoder_on_mutated_input() {
    let mut seed = full_request();
    seed.attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .insert("portcullis_required_scopes".into(), "a:b c:d".into());
    let base = seed.encode_to_vec();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut both = 0;
    for round in 0..60_000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            match next() % 4 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes[at] = next() as u8,
                2 => bytes.truncate(at.max(1)),
                _ => {
                    let from = (next() as usize) % base.len();
                    let len = (next() as usize % 16).min(base.len() - from);
                    bytes.splice(at..at, base[from..from + len].iter().copied());
                }
            }
        }
        let Ok(generated) = CheckRequest::decode(&bytes[..]) else {
            continue;
        };
        let got = CheckInput::decode(Bytes::from(bytes.clone()));
        let Ok(got) = got else {
            panic!("round {round}: the generated type decodes, the light one does not: {bytes:?}");
        };
        both += 1;
        assert_eq!(
            as_maps(got),
            kept_by_generated(&generated),
            "round {round}: {bytes:?}"
        );
    }
    eprintln!("{both} decodable mutations");
    assert!(
        both > 3_000,
        "too few decodable mutations ({both}) to mean anything"
    );
}
