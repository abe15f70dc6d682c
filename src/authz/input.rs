//! [`CheckInput`]: the `CheckRequest` as the Check server decodes it.
//!
//! Only the fields portcullis reads are kept; every other field is skipped
//! by prost as an unknown field. Strings are not copied: each one is a
//! slice of the received gRPC frame (`Bytes`), checked to be UTF-8 once,
//! at decode time. Headers stay a list in wire order: the `headers` map
//! is a repeated entry message on the wire, and nothing reads it by hash
//! (names are compared case-insensitively anyway).
//!
//! Why not `envoy-types`' generated `CheckRequest`: decoding it built a
//! `HashMap` with a `String` per header name and value, and a `String` for
//! every other field, read or not, which was about a fifth of a warm
//! Check's instructions (benches/BENCHMARKS.md, "Where the time goes").
//!
//! The decode is as strict as the generated one for what is kept: a kept
//! string that is not UTF-8 fails the whole request (the server answers an
//! error, which Envoy treats as a denial with `failure_mode_allow: false`),
//! and repeated singular fields merge as protobuf says (last scalar wins).
//! Field numbers are those of `envoy/service/auth/v3/attribute_context.proto`
//! and `envoy/config/core/v3/address.proto` (proto/vendor).

use bytes::{Buf, Bytes};
use bytestring::ByteString;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};

use super::reply::CheckReply;

/// Why a Check request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    /// The check prost's generated code makes on every `string` field.
    #[error("invalid string value: data is not UTF-8 encoded")]
    NotUtf8,
}

/// What portcullis reads of a `CheckRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckInput {
    /// `attributes.request.http`, absent when Envoy sent no HTTP request.
    pub http: Option<HttpInput>,
    /// `attributes.context_extensions`, in wire order.
    pub context: Vec<(ByteString, ByteString)>,
    /// `attributes.source.address.socket_address.address`.
    pub source_address: Option<ByteString>,
    /// `attributes.source.certificate` (URL-encoded PEM), or "".
    pub certificate: ByteString,
}

/// `attributes.request.http`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpInput {
    pub method: ByteString,
    pub path: ByteString,
    pub host: ByteString,
    pub scheme: ByteString,
    /// The `headers` map, in wire order.
    pub headers: Vec<(ByteString, ByteString)>,
    /// `header_map` (Envoy's `encode_raw_headers`).
    pub raw_headers: Vec<RawHeader>,
}

/// One `header_map` entry: `value` is empty when the value went into
/// `raw_value` instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHeader {
    pub key: ByteString,
    pub value: ByteString,
    pub raw_value: Bytes,
}

// === impl CheckInput ===

impl CheckInput {
    /// Decodes a serialised `CheckRequest`. With a `Bytes` buffer (or
    /// tonic's `DecodeBuf`) the strings share its memory.
    pub fn decode(buf: impl Buf) -> Result<CheckInput, InputError> {
        wire::CheckRequest::decode(buf)?.try_into()
    }

    /// A request built as `envoy-types`' message (tests, the CLI's `check`,
    /// benches): encoded and decoded as the server would receive it.
    pub fn from_request(req: &CheckRequest) -> CheckInput {
        // prost encodes `String`s, which are UTF-8, so decoding cannot fail;
        // were it to, the empty input has no HTTP request and is denied.
        CheckInput::decode(Bytes::from(req.encode_to_vec())).unwrap_or_default()
    }
}

impl From<&CheckRequest> for CheckInput {
    fn from(req: &CheckRequest) -> Self {
        CheckInput::from_request(req)
    }
}

impl TryFrom<wire::CheckRequest> for CheckInput {
    type Error = InputError;

    fn try_from(w: wire::CheckRequest) -> Result<Self, InputError> {
        let Some(attrs) = w.attributes else {
            return Ok(CheckInput::default());
        };
        let source = attrs.source.unwrap_or_default();
        let source_address = match source.address.and_then(|a| a.address) {
            Some(wire::address::Address::Socket(sa)) => Some(text(sa.address)?),
            _ => None,
        };
        Ok(CheckInput {
            http: attrs
                .request
                .and_then(|r| r.http)
                .map(HttpInput::try_from)
                .transpose()?,
            context: pairs(attrs.context_extensions)?,
            source_address,
            certificate: text(source.certificate)?,
        })
    }
}

impl TryFrom<wire::HttpRequest> for HttpInput {
    type Error = InputError;

    fn try_from(h: wire::HttpRequest) -> Result<Self, InputError> {
        let raw_headers = h
            .header_map
            .map(|m| m.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|hv| {
                Ok(RawHeader {
                    key: text(hv.key)?,
                    value: text(hv.value)?,
                    raw_value: hv.raw_value,
                })
            })
            .collect::<Result<_, InputError>>()?;
        Ok(HttpInput {
            method: text(h.method)?,
            path: text(h.path)?,
            host: text(h.host)?,
            scheme: text(h.scheme)?,
            headers: pairs(h.headers)?,
            raw_headers,
        })
    }
}

/// A kept `string` field, checked as prost's generated code would.
fn text(b: Bytes) -> Result<ByteString, InputError> {
    ByteString::try_from(b).map_err(|_| InputError::NotUtf8)
}

fn pairs(entries: Vec<wire::Entry>) -> Result<Vec<(ByteString, ByteString)>, InputError> {
    entries
        .into_iter()
        .map(|e| Ok((text(e.key)?, text(e.value)?)))
        .collect()
}

// === impl CheckCodec ===

/// tonic codec of the Check method: [`CheckInput`] in, [`CheckReply`] out
/// (prost's own encoder).
#[derive(Debug, Clone, Default)]
pub struct CheckCodec;

/// Decodes a [`CheckInput`] out of tonic's receive buffer.
#[derive(Debug, Clone, Default)]
pub struct CheckDecoder;

impl Codec for CheckCodec {
    type Encode = CheckReply;
    type Decode = CheckInput;
    type Encoder = tonic_prost::ProstEncoder<CheckReply>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder
    }
}

impl Decoder for CheckDecoder {
    type Item = CheckInput;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<CheckInput>, Status> {
        // The frame as one `Bytes` first: each kept string is then a slice
        // of it (a reference count), where slicing tonic's `BytesMut`
        // directly costs a `split_to` a field.
        let frame = buf.copy_to_bytes(buf.remaining());
        // INTERNAL, as tonic's prost codec answers a message it cannot parse.
        CheckInput::decode(frame)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// The wire shapes, declared with prost's derive: only the kept fields,
/// strings as `Bytes` (checked into [`ByteString`] afterwards).
mod wire {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckRequest {
        #[prost(message, optional, tag = "1")]
        pub attributes: Option<AttributeContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeContext {
        #[prost(message, optional, tag = "1")]
        pub source: Option<Peer>,
        #[prost(message, optional, tag = "4")]
        pub request: Option<Request>,
        /// `map<string, string>`: a map is a repeated entry message.
        #[prost(message, repeated, tag = "10")]
        pub context_extensions: Vec<Entry>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        #[prost(message, optional, tag = "1")]
        pub address: Option<Address>,
        #[prost(bytes = "bytes", tag = "5")]
        pub certificate: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Address {
        #[prost(oneof = "address::Address", tags = "1, 2, 3")]
        pub address: Option<address::Address>,
    }

    pub mod address {
        /// A oneof, so a later `pipe` replaces an earlier socket address,
        /// as in the generated type.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Address {
            #[prost(message, tag = "1")]
            Socket(super::SocketAddress),
            #[prost(message, tag = "2")]
            Pipe(super::Skipped),
            /// `envoy_internal_address`.
            #[prost(message, tag = "3")]
            Internal(super::Skipped),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SocketAddress {
        #[prost(bytes = "bytes", tag = "2")]
        pub address: Bytes,
    }

    /// A message whose content is not read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Skipped {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, optional, tag = "2")]
        pub http: Option<HttpRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpRequest {
        #[prost(bytes = "bytes", tag = "2")]
        pub method: Bytes,
        #[prost(message, repeated, tag = "3")]
        pub headers: Vec<Entry>,
        #[prost(bytes = "bytes", tag = "4")]
        pub path: Bytes,
        #[prost(bytes = "bytes", tag = "5")]
        pub host: Bytes,
        #[prost(bytes = "bytes", tag = "6")]
        pub scheme: Bytes,
        #[prost(message, optional, tag = "13")]
        pub header_map: Option<HeaderMap>,
    }

    /// A `map<string, string>` entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(bytes = "bytes", tag = "1")]
        pub key: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        pub value: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderMap {
        #[prost(message, repeated, tag = "1")]
        pub headers: Vec<HeaderValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderValue {
        #[prost(bytes = "bytes", tag = "1")]
        pub key: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        pub value: Bytes,
        #[prost(bytes = "bytes", tag = "3")]
        pub raw_value: Bytes,
    }
}

#[cfg(test)]
#[path = "tests/input.rs"]
mod tests;
