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

/// A decoded input's values, owned (what the tests compare).
#[derive(Debug, Default, PartialEq, Eq)]
struct Kept {
    http: Option<KeptHttp>,
    context: Vec<(String, String)>,
    source_address: Option<String>,
    certificate: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct KeptHttp {
    method: String,
    path: String,
    host: String,
    scheme: String,
    headers: Vec<(String, String)>,
    /// key, value, raw_value.
    raw_headers: Vec<(String, String, Vec<u8>)>,
}

fn kept(i: &CheckInput) -> Kept {
    let t = |s: Span| i.text(s).to_owned();
    Kept {
        http: i.http.as_ref().map(|h| KeptHttp {
            method: t(h.method),
            path: t(h.path),
            host: t(h.host),
            scheme: t(h.scheme),
            headers: h.headers.iter().map(|(k, v)| (t(*k), t(*v))).collect(),
            raw_headers: h
                .raw_headers
                .iter()
                .map(|r| (t(r.key), t(r.value), i.bytes(r.raw_value).to_vec()))
                .collect(),
        }),
        context: i.context.iter().map(|(k, v)| (t(*k), t(*v))).collect(),
        source_address: i.source_address.map(t),
        certificate: t(i.certificate),
    }
}

#[test]
fn keeps_every_field_portcullis_reads() {
    let got = kept(&CheckInput::from_request(&full_request()));
    let http = got.http.as_ref().expect("http");
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/a/b?x=1");
    assert_eq!(http.host, "api.example");
    assert_eq!(http.scheme, "https");
    let mut headers = http.headers.clone();
    headers.sort();
    assert_eq!(
        headers,
        [
            ("authorization".into(), "Bearer t".into()),
            ("user-agent".into(), "curl/8".into())
        ]
    );
    assert_eq!(
        http.raw_headers,
        [("x-raw".into(), String::new(), b"\xffbin".to_vec())]
    );
    assert_eq!(got.context, [("portcullis_route".into(), "orders".into())]);
    assert_eq!(got.source_address.as_deref(), Some("10.1.2.3"));
    assert_eq!(got.certificate, "-----BEGIN%20CERTIFICATE");
}

#[test]
fn strings_share_the_received_buffer() {
    let bytes = Bytes::from(full_request().encode_to_vec());
    let range = bytes.as_ptr_range();
    let got = CheckInput::decode(bytes.clone()).expect("decodes");
    let path = got.text(got.http.as_ref().expect("http").path);
    assert_eq!(path, "/a/b?x=1");
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
    let got = kept(&CheckInput::decode(&bytes[..]).expect("decodes"));
    assert_eq!(got.http.expect("http").path, "/ok");
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
    let got = kept(&CheckInput::decode(&bytes[..]).expect("light"));
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
fn kept_by_generated(req: &CheckRequest) -> Kept {
    let attrs = req.attributes.clone().unwrap_or_default();
    let peer = attrs.source.unwrap_or_default();
    let sorted = |m: &std::collections::HashMap<String, String>| {
        let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort();
        v
    };
    Kept {
        http: attrs.request.and_then(|r| r.http).map(|h| KeptHttp {
            method: h.method.clone(),
            path: h.path.clone(),
            host: h.host.clone(),
            scheme: h.scheme.clone(),
            headers: sorted(&h.headers),
            raw_headers: h
                .header_map
                .map(|m| m.headers)
                .unwrap_or_default()
                .into_iter()
                .map(|hv| (hv.key, hv.value, hv.raw_value))
                .collect(),
        }),
        context: sorted(&attrs.context_extensions),
        source_address: match peer.address.and_then(|a| a.address) {
            Some(AddressKind::SocketAddress(sa)) => Some(sa.address),
            _ => None,
        },
        certificate: peer.certificate,
    }
}

/// The light type with a map's view of its lists: the last value of each
/// key, sorted.
fn as_maps(mut got: Kept) -> Kept {
    let last_wins = |v: Vec<(String, String)>| {
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
    differential(&seed.encode_to_vec(), 60_000);
}

/// The same over encodings a plain request never has: the peer sent twice
/// (the second a `pipe`, then a socket address again), repeated
/// attributes, raw headers and a group among the unknown fields.
#[test]
fn agrees_with_the_generated_decoder_on_merged_and_unusual_input() {
    let req = full_request();
    let mut bytes = req.encode_to_vec();
    let pipe = Peer {
        address: Some(Address {
            address: Some(AddressKind::Pipe(Pipe {
                path: "/run/envoy.sock".into(),
                mode: 0o600,
            })),
        }),
        ..Default::default()
    };
    let socket = Peer {
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: "10.9.9.9".into(),
                port_specifier: None,
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    bytes.extend(string_field(1, &string_field(1, &pipe.encode_to_vec())));
    bytes.extend(string_field(1, &string_field(1, &socket.encode_to_vec())));
    // An unknown group (field 99) inside `http`, around a varint.
    let mut group = Vec::new();
    encode_key(99, WireType::StartGroup, &mut group);
    encode_key(1, WireType::Varint, &mut group);
    encode_varint(7, &mut group);
    encode_key(99, WireType::EndGroup, &mut group);
    bytes.extend(nest_in_http(&[group, string_field(4, b"/second")].concat()));
    let generated = CheckRequest::decode(&bytes[..]).expect("the seed decodes");
    let got = CheckInput::decode(Bytes::from(bytes.clone())).expect("the seed decodes");
    assert_eq!(as_maps(kept(&got)), kept_by_generated(&generated));
    assert_eq!(kept(&got).source_address.as_deref(), Some("10.9.9.9"));
    differential(&bytes, 60_000);
}

/// Mutates `base` `rounds` times (bit flips, bytes, truncations, spliced
/// pieces of itself): whenever the generated `CheckRequest` decodes, the
/// light decode succeeds too and holds the same values for every field
/// read.
fn differential(base: &[u8], rounds: u32) {
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut both = 0;
    for round in 0..rounds {
        let mut bytes = base.to_vec();
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
            as_maps(kept(&got)),
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

/// Random sequences of `Peer` address members (socket address with or
/// without `address`, pipe, internal address), each in its own `source`,
/// `attributes` or `address` occurrence: the oneof's merge must keep what
/// the generated type keeps, whatever the order.
#[test]
fn peer_addresses_merge_like_the_generated_type_in_any_order() {
    use envoy_types::pb::envoy::config::core::v3::EnvoyInternalAddress;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..5_000 {
        let mut bytes = Vec::new();
        for i in 0..1 + next() % 5 {
            let kind = match next() % 4 {
                0 => AddressKind::SocketAddress(SocketAddress {
                    address: format!("10.0.{round}.{i}"),
                    ..Default::default()
                }),
                1 => AddressKind::SocketAddress(SocketAddress {
                    port_specifier: Some(
                        envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                            443,
                        ),
                    ),
                    ..Default::default()
                }),
                2 => AddressKind::Pipe(Pipe {
                    path: "/p".into(),
                    mode: 0,
                }),
                _ => AddressKind::EnvoyInternalAddress(EnvoyInternalAddress::default()),
            };
            let address = Address {
                address: Some(kind),
            }
            .encode_to_vec();
            // Sometimes two members in one `Address`, sometimes an empty one.
            let address = match next() % 3 {
                0 => [address.clone(), address].concat(),
                1 => [address, Vec::new()].concat(),
                _ => address,
            };
            let peer = string_field(1, &address);
            bytes.extend(string_field(1, &string_field(1, &peer)));
        }
        let generated = CheckRequest::decode(&bytes[..]).expect("generated");
        let got = CheckInput::decode(Bytes::from(bytes.clone())).expect("light");
        assert_eq!(
            as_maps(kept(&got)),
            kept_by_generated(&generated),
            "round {round}: {bytes:?}"
        );
    }
}
