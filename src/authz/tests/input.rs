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
