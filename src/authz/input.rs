//! [`CheckInput`]: the `CheckRequest` as the Check server decodes it.
//!
//! Only the fields portcullis reads are kept; every other field is skipped.
//! Nothing is copied and nothing is reference-counted per field: the
//! received frame is kept as one `Bytes`, and each kept string is a
//! [`Span`] of it, checked to be UTF-8 once, at decode time. Headers stay a
//! list in wire order: the `headers` map is a repeated entry message on the
//! wire, and nothing reads it by hash (names are compared
//! case-insensitively anyway).
//!
//! Why not `envoy-types`' generated `CheckRequest`: decoding it built a
//! `HashMap` with a `String` per header name and value, and a `String` for
//! every other field, read or not, which was about a fifth of a warm
//! Check's instructions (benches/BENCHMARKS.md, "Where the time goes").
//! Why not prost-derive types with `Bytes` fields (stop 24): each kept
//! string was then a reference count taken and dropped on the frame, two
//! atomic operations each, about twenty of them a request.
//!
//! The wire format itself is prost's: keys, varints and skipping unknown
//! fields (groups included) are `prost::encoding`'s functions; this module
//! only says which field numbers are kept. The decode is as strict as the
//! generated one for what is kept: a kept string that is not UTF-8 fails
//! the whole request (the server answers an error, which Envoy treats as a
//! denial with `failure_mode_allow: false`), a kept field with the wrong
//! wire type fails it, and repeated singular fields merge as protobuf says
//! (last scalar wins, messages merge, a oneof keeps its last member).
//! `src/authz/tests/input.rs` holds it to the generated decoder over 60,000
//! mutated encodings. Field numbers are those of
//! `envoy/service/auth/v3/attribute_context.proto` and
//! `envoy/config/core/v3/address.proto` (proto/vendor).

use std::ops::Range;

use bytes::{Buf, Bytes};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
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
    #[error("invalid wire type {got:?} for field {tag} (expected length-delimited)")]
    WireType { tag: u32, got: WireType },
    #[error("a length-delimited field runs past the end of its message")]
    Underflow,
}

/// Where one kept string (or bytes field) sits in the frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start..self.end
    }
}

/// What portcullis reads of a `CheckRequest`: spans of `frame`. Read the
/// strings with [`CheckInput::text`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckInput {
    /// The serialised request, shared with tonic's receive buffer.
    frame: Bytes,
    /// `attributes.request.http`, absent when Envoy sent no HTTP request.
    pub http: Option<HttpInput>,
    /// `attributes.context_extensions`, in wire order.
    pub context: Vec<(Span, Span)>,
    /// `attributes.source.address.socket_address.address`.
    pub source_address: Option<Span>,
    /// `attributes.source.certificate` (URL-encoded PEM), or "".
    pub certificate: Span,
}

/// `attributes.request.http`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpInput {
    pub method: Span,
    pub path: Span,
    pub host: Span,
    pub scheme: Span,
    /// The `headers` map, in wire order.
    pub headers: Vec<(Span, Span)>,
    /// `header_map` (Envoy's `encode_raw_headers`).
    pub raw_headers: Vec<RawHeader>,
}

/// One `header_map` entry: `value` is empty when the value went into
/// `raw_value` (bytes, not checked as UTF-8) instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawHeader {
    pub key: Span,
    pub value: Span,
    pub raw_value: Span,
}

// === impl CheckInput ===

impl CheckInput {
    /// Decodes a serialised `CheckRequest`, keeping `buf`'s memory (with a
    /// `Bytes` buffer, or tonic's `DecodeBuf`, nothing is copied).
    pub fn decode(mut buf: impl Buf) -> Result<CheckInput, InputError> {
        let frame = buf.copy_to_bytes(buf.remaining());
        let mut input = CheckInput::default();
        let mut walk = Walk::new(&frame, 0..frame.len());
        while let Some((tag, wt)) = walk.key()? {
            match tag {
                1 => input.attributes(walk.message(tag, wt)?)?,
                _ => walk.skip(tag, wt)?,
            }
        }
        input.frame = frame;
        Ok(input)
    }

    /// A request built as `envoy-types`' message (tests, the CLI's `check`,
    /// benches): encoded and decoded as the server would receive it.
    pub fn from_request(req: &CheckRequest) -> CheckInput {
        // prost encodes `String`s, which are UTF-8, so decoding cannot fail;
        // were it to, the empty input has no HTTP request and is denied.
        CheckInput::decode(Bytes::from(req.encode_to_vec())).unwrap_or_default()
    }

    /// A kept string. Checked as UTF-8 at decode, so the stand-in (a NUL,
    /// which no parser accepts) is never returned for a decoded request.
    pub fn text(&self, s: Span) -> &str {
        std::str::from_utf8(self.bytes(s)).unwrap_or("\u{0}")
    }

    /// A kept field's bytes (`raw_value`, or a string compared as bytes).
    pub fn bytes(&self, s: Span) -> &[u8] {
        self.frame.get(s.range()).unwrap_or_default()
    }

    fn attributes(&mut self, mut walk: Walk<'_>) -> Result<(), InputError> {
        while let Some((tag, wt)) = walk.key()? {
            match tag {
                1 => self.peer(walk.message(tag, wt)?)?,
                4 => self.request(walk.message(tag, wt)?)?,
                10 => {
                    let entry = walk.message(tag, wt)?.entry()?;
                    self.context.push(entry);
                }
                _ => walk.skip(tag, wt)?,
            }
        }
        Ok(())
    }

    /// `Peer`: the address, a oneof, keeps its last member (a later `pipe`
    /// replaces a socket address, as in the generated type).
    fn peer(&mut self, mut walk: Walk<'_>) -> Result<(), InputError> {
        while let Some((tag, wt)) = walk.key()? {
            match tag {
                1 => {
                    let mut address = walk.message(tag, wt)?;
                    while let Some((tag, wt)) = address.key()? {
                        match tag {
                            1 => {
                                let mut socket = walk_socket(address.message(tag, wt)?)?;
                                // Merging into a socket address already set
                                // keeps its `address` unless this one sets it.
                                if let (Some(old), None) = (self.source_address, socket) {
                                    socket = Some(old);
                                }
                                self.source_address = Some(socket.unwrap_or_default());
                            }
                            // `pipe`, `envoy_internal_address`: not read, but
                            // still messages that must parse.
                            2 | 3 => {
                                address.message(tag, wt)?.skip_all()?;
                                self.source_address = None;
                            }
                            _ => address.skip(tag, wt)?,
                        }
                    }
                }
                5 => self.certificate = walk.text(tag, wt)?,
                _ => walk.skip(tag, wt)?,
            }
        }
        Ok(())
    }

    fn request(&mut self, mut walk: Walk<'_>) -> Result<(), InputError> {
        while let Some((tag, wt)) = walk.key()? {
            match tag {
                2 => {
                    let http = self.http.get_or_insert_with(HttpInput::default);
                    http.merge(walk.message(tag, wt)?)?;
                }
                _ => walk.skip(tag, wt)?,
            }
        }
        Ok(())
    }
}

/// `SocketAddress`: `address` (2), if present.
fn walk_socket(mut walk: Walk<'_>) -> Result<Option<Span>, InputError> {
    let mut address = None;
    while let Some((tag, wt)) = walk.key()? {
        match tag {
            2 => address = Some(walk.text(tag, wt)?),
            _ => walk.skip(tag, wt)?,
        }
    }
    Ok(address)
}

impl From<&CheckRequest> for CheckInput {
    fn from(req: &CheckRequest) -> Self {
        CheckInput::from_request(req)
    }
}

// === impl HttpInput ===

impl HttpInput {
    fn merge(&mut self, mut walk: Walk<'_>) -> Result<(), InputError> {
        while let Some((tag, wt)) = walk.key()? {
            match tag {
                2 => self.method = walk.text(tag, wt)?,
                3 => {
                    let entry = walk.message(tag, wt)?.entry()?;
                    self.headers.push(entry);
                }
                4 => self.path = walk.text(tag, wt)?,
                5 => self.host = walk.text(tag, wt)?,
                6 => self.scheme = walk.text(tag, wt)?,
                13 => {
                    let mut map = walk.message(tag, wt)?;
                    while let Some((tag, wt)) = map.key()? {
                        match tag {
                            1 => {
                                let raw = map.message(tag, wt)?.raw_header()?;
                                self.raw_headers.push(raw);
                            }
                            _ => map.skip(tag, wt)?,
                        }
                    }
                }
                _ => walk.skip(tag, wt)?,
            }
        }
        Ok(())
    }
}

// === impl Walk ===

/// One message of the frame being read: `at..end`, where `end` is where
/// the enclosing length-delimited field stops.
struct Walk<'a> {
    frame: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Walk<'a> {
    fn new(frame: &'a [u8], within: Range<usize>) -> Walk<'a> {
        Walk {
            frame,
            at: within.start,
            end: within.end,
        }
    }

    /// Runs one of prost's readers over the rest of this message.
    fn read<T>(
        &mut self,
        f: impl FnOnce(&mut &'a [u8]) -> Result<T, prost::DecodeError>,
    ) -> Result<T, InputError> {
        let mut rest = self.frame.get(self.at..self.end).unwrap_or_default();
        let out = f(&mut rest)?;
        self.at = self.end - rest.len();
        Ok(out)
    }

    /// The next field's key, or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u32, WireType)>, InputError> {
        if self.at >= self.end {
            return Ok(None);
        }
        self.read(decode_key).map(Some)
    }

    /// A length-delimited field's body, which a kept field must be.
    fn delimited(&mut self, tag: u32, wt: WireType) -> Result<Span, InputError> {
        if wt != WireType::LengthDelimited {
            return Err(InputError::WireType { tag, got: wt });
        }
        let len = self.read(decode_varint)?;
        let start = self.at;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= self.end)
            .ok_or(InputError::Underflow)?;
        self.at = end;
        Ok(Span { start, end })
    }

    /// A kept `string` field, checked as prost's generated code would.
    fn text(&mut self, tag: u32, wt: WireType) -> Result<Span, InputError> {
        let span = self.delimited(tag, wt)?;
        match std::str::from_utf8(&self.frame[span.range()]) {
            Ok(_) => Ok(span),
            Err(_) => Err(InputError::NotUtf8),
        }
    }

    /// A kept `bytes` field.
    fn raw(&mut self, tag: u32, wt: WireType) -> Result<Span, InputError> {
        self.delimited(tag, wt)
    }

    /// A kept message field, to be walked in turn.
    fn message(&mut self, tag: u32, wt: WireType) -> Result<Walk<'a>, InputError> {
        let span = self.delimited(tag, wt)?;
        Ok(Walk::new(self.frame, span.range()))
    }

    /// A field not read: skipped by prost, which checks its shape.
    fn skip(&mut self, tag: u32, wt: WireType) -> Result<(), InputError> {
        self.read(|b| skip_field(wt, tag, b, DecodeContext::default()))
    }

    /// A message not read at all, checked to parse.
    fn skip_all(mut self) -> Result<(), InputError> {
        while let Some((tag, wt)) = self.key()? {
            self.skip(tag, wt)?;
        }
        Ok(())
    }

    /// A `map<string, string>` entry: key (1), value (2).
    fn entry(mut self) -> Result<(Span, Span), InputError> {
        let (mut key, mut value) = (Span::default(), Span::default());
        while let Some((tag, wt)) = self.key()? {
            match tag {
                1 => key = self.text(tag, wt)?,
                2 => value = self.text(tag, wt)?,
                _ => self.skip(tag, wt)?,
            }
        }
        Ok((key, value))
    }

    /// A `HeaderValue`: key (1), value (2), raw_value (3, bytes).
    fn raw_header(mut self) -> Result<RawHeader, InputError> {
        let mut h = RawHeader::default();
        while let Some((tag, wt)) = self.key()? {
            match tag {
                1 => h.key = self.text(tag, wt)?,
                2 => h.value = self.text(tag, wt)?,
                3 => h.raw_value = self.raw(tag, wt)?,
                _ => self.skip(tag, wt)?,
            }
        }
        Ok(h)
    }
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
        // INTERNAL, as tonic's prost codec answers a message it cannot parse.
        CheckInput::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
#[path = "tests/input.rs"]
mod tests;
