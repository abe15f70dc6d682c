//! [`CheckReply`]: the Check answer as the gRPC server sends it.
//!
//! A warm identity's allow is the same for every request it makes, apart
//! from the route's name and the odd header to remove. So its identity
//! headers and metadata are not built as messages: `authz::render` writes
//! their protobuf bytes straight from the identity and the configuration's
//! template, and an allow splices those bytes before the few fields built
//! per request. Protobuf concatenates: two encodings of one message type,
//! one after the other, decode as their merge (repeated fields and map
//! entries add up), so the spliced bytes decode as exactly the
//! `CheckResponse` [`response::build_for`] returns. The per-request fields
//! and the outer keys and lengths are written by prost's own encoders.
//!
//! [`response::build_for`]: super::response::build_for

use std::sync::Arc;

use bytes::{Buf, BufMut};
use envoy_types::ext_authz::v3::pb::{CheckResponse, OkHttpResponse};
use envoy_types::pb::google::protobuf::Struct;
use envoy_types::pb::google::rpc::Status;
use prost::encoding::{DecodeContext, WireType, encoded_len_varint, key_len, message};
use prost::{DecodeError, Message};

use super::render::Template;
use crate::identity::Identity;

/// A Check answer: a whole `CheckResponse`, or an allow spliced from an
/// identity's pre-encoded headers and metadata and the per-request rest.
/// Implements [`prost::Message`] so tonic's prost codec sends it as is.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReply(Inner);

#[derive(Debug, Clone, PartialEq)]
enum Inner {
    Message(CheckResponse),
    Allow {
        /// The caller, whose headers and metadata are written at encode.
        id: Arc<Identity>,
        /// The configuration's names for them.
        template: Arc<Template>,
        /// This request's own `OkHttpResponse` fields: the assertion
        /// header, headers and query parameters to remove.
        ok: OkHttpResponse,
        /// This request's own metadata fields (`route`).
        metadata: Struct,
    },
}

impl CheckReply {
    /// An allow for `id`, its part written by `template`, plus this
    /// request's fields.
    pub(super) fn allow(
        id: Arc<Identity>,
        template: Arc<Template>,
        ok: OkHttpResponse,
        metadata: Struct,
    ) -> Self {
        CheckReply(Inner::Allow {
            id,
            template,
            ok,
            metadata,
        })
    }

    /// The `CheckResponse` these bytes decode to.
    pub fn into_response(self) -> CheckResponse {
        match self.0 {
            Inner::Message(m) => m,
            spliced => {
                let bytes = CheckReply(spliced).encode_to_vec();
                // Our own encoding of a valid message: decoding cannot fail,
                // and if it ever did the caller gets no status, which every
                // consumer of a Check treats as a failure, never as OK.
                CheckResponse::decode(bytes.as_slice()).unwrap_or_default()
            }
        }
    }

    /// The status code (0 = allow) without decoding anything.
    pub fn code(&self) -> i32 {
        match &self.0 {
            Inner::Message(m) => m.status.as_ref().map_or(-1, |s| s.code),
            Inner::Allow { .. } => 0,
        }
    }
}

impl From<CheckResponse> for CheckReply {
    fn from(m: CheckResponse) -> Self {
        CheckReply(Inner::Message(m))
    }
}

impl Default for CheckReply {
    fn default() -> Self {
        CheckReply(Inner::Message(CheckResponse::default()))
    }
}

/// `CheckResponse` field numbers (envoy/service/auth/v3/external_auth.proto).
const STATUS: u32 = 1;
const OK_RESPONSE: u32 = 3;
const DYNAMIC_METADATA: u32 = 4;

/// Writes an allow from its identity part already written (`ok_wire`,
/// `metadata_wire`) and the per-request fields.
fn put_allow(
    buf: &mut impl BufMut,
    ok_wire: &[u8],
    ok: &OkHttpResponse,
    metadata_wire: &[u8],
    metadata: &Struct,
) {
    // The field order prost uses for a `CheckResponse`.
    message::encode(STATUS, &Status::default(), buf);
    message::encode(OK_RESPONSE, &Spliced(ok_wire, ok), buf);
    message::encode(DYNAMIC_METADATA, &Spliced(metadata_wire, metadata), buf);
}

impl Message for CheckReply {
    /// prost's `encode`, except that an allow's identity part is written
    /// once and its length read from it: the server never measures it
    /// separately (`encoded_len` does, for other callers).
    fn encode(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        let Inner::Allow {
            id,
            template,
            ok,
            metadata,
        } = &self.0
        else {
            let required = self.encoded_len();
            if required > buf.remaining_mut() {
                return Needs(required).encode(buf);
            }
            self.encode_raw(buf);
            return Ok(());
        };
        template.with_written(id, |ok_wire, metadata_wire| {
            let required = allow_len(ok_wire.len(), ok, metadata_wire.len(), metadata);
            if required > buf.remaining_mut() {
                return Needs(required).encode(buf);
            }
            put_allow(buf, ok_wire, ok, metadata_wire, metadata);
            Ok(())
        })
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.0 {
            Inner::Message(m) => m.encode_raw(buf),
            Inner::Allow {
                id,
                template,
                ok,
                metadata,
            } => template.with_written(id, |ok_wire, metadata_wire| {
                put_allow(buf, ok_wire, ok, metadata_wire, metadata)
            }),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Decoding (a client using this type) merges into a plain message.
        if !matches!(self.0, Inner::Message(_)) {
            let m = std::mem::take(self).into_response();
            *self = CheckReply(Inner::Message(m));
        }
        match &mut self.0 {
            Inner::Message(m) => m.merge_field(tag, wire_type, buf, ctx),
            Inner::Allow { .. } => Ok(()),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.0 {
            Inner::Message(m) => m.encoded_len(),
            Inner::Allow {
                id,
                template,
                ok,
                metadata,
            } => {
                // Measured, not written (see `encode`).
                let m = template.measure(id);
                allow_len(m.ok, ok, m.metadata, metadata)
            }
        }
    }

    fn clear(&mut self) {
        *self = CheckReply::default();
    }
}

/// A message of `.0` bytes that writes nothing: its (default) `encode`
/// into a buffer with less room is how prost's `EncodeError` is made
/// (its constructor is private). Used only when that is the answer.
struct Needs(usize);

impl Message for Needs {
    fn encode_raw(&self, _: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0
    }

    fn clear(&mut self) {}
}

/// Length of an allow whose identity part takes `ok_part` bytes in the
/// `OkHttpResponse` and `metadata_part` in the metadata: what
/// [`put_allow`] writes.
fn allow_len(
    ok_part: usize,
    ok: &OkHttpResponse,
    metadata_part: usize,
    metadata: &Struct,
) -> usize {
    let part = |tag: u32, inner: usize| key_len(tag) + encoded_len_varint(inner as u64) + inner;
    message::encoded_len(STATUS, &Status::default())
        + part(OK_RESPONSE, ok_part + ok.encoded_len())
        + part(DYNAMIC_METADATA, metadata_part + metadata.encoded_len())
}

/// One embedded message written as pre-encoded bytes of its type followed
/// by `extra` (the same type): on the wire, their merge. Encode-only.
struct Spliced<'a, M>(&'a [u8], &'a M);

impl<M: Message> Message for Spliced<'_, M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(self.0);
        self.1.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Never decoded (nothing holds one past an encode); skip politely.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len() + self.1.encoded_len()
    }

    fn clear(&mut self) {}
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::google::protobuf::{Value, value::Kind};

    use super::*;
    use crate::authz::decision::Decision;
    use crate::authz::headers::{IdentityHeaders, IdentityHeadersConfig};
    use crate::authz::request::RequestView;
    use crate::authz::response::{Landed, ResponseOptions, overwrite, reply_for};
    use crate::authz::surface::Surface;
    use crate::identity::{CredentialKind, Identity};

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    fn request(headers: &[(&str, &str)]) -> CheckRequest {
        let mut http = HttpRequest {
            method: "GET".into(),
            path: "/orders/1".into(),
            ..Default::default()
        };
        for (k, v) in headers {
            http.headers.insert(k.to_string(), v.to_string());
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                ..Default::default()
            }),
        }
    }

    /// The bytes sent for an allow (twice: the scratch buffer is reused)
    /// decode to exactly the message the pre-encoding stands for: every
    /// identity header, the claim header, the assertion, the removal of a
    /// spoofed header we do not set (and not of those we set), and all the
    /// metadata with `route`.
    #[test]
    fn a_spliced_allow_decodes_as_the_message_it_stands_for() {
        let cfg = IdentityHeadersConfig {
            claims: [("tenant".to_owned(), "x-tenant".to_owned())].into(),
            ..Default::default()
        };
        let surface = Surface {
            headers: IdentityHeaders::compile(&cfg),
            ..Surface::default()
        };
        let id = Arc::new(Identity {
            kind: CredentialKind::Jwt,
            subject: "alice".into(),
            username: Some("alice".into()),
            email: None,
            client: Some("web".into()),
            scopes: vec!["a:read".to_owned(), "b:write".to_owned()].into(),
            token_id: None,
            issuer: Some(Arc::from("https://kc.example/realms/r")),
            expires_at: 0,
            claims: vec![(Arc::from("tenant"), "acme".into())],
            rendered: Default::default(),
        });
        let req = request(&[
            ("authorization", "Bearer x"),
            ("x-auth-subject", "mallory"),
            ("X-Auth-Email", "mallory@example.org"),
            ("x-tenant", "evil"),
        ]);
        let landed = Landed {
            route: None,
            label: "orders",
            assertion: Some("eyJ.a.b"),
        };
        let header = |k: &str, v: &str| overwrite(k, v);
        let metadata: HashMap<String, Value> = [
            ("subject", s("alice")),
            ("issuer", s("https://kc.example/realms/r")),
            ("username", s("alice")),
            ("client", s("web")),
            ("method", s("jwt")),
            ("scopes", s("a:read b:write")),
            (
                "claims",
                Value {
                    kind: Some(Kind::StructValue(Struct {
                        fields: [("tenant".to_owned(), s("acme"))].into(),
                    })),
                },
            ),
            ("route", s("orders")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let expected = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    header("x-auth-subject", "alice"),
                    header("x-auth-issuer", "https://kc.example/realms/r"),
                    header("x-auth-username", "alice"),
                    header("x-auth-client", "web"),
                    header("x-auth-scopes", "a:read b:write"),
                    header("x-auth-method", "jwt"),
                    header("x-tenant", "acme"),
                    header("x-auth-assertion", "eyJ.a.b"),
                ],
                headers_to_remove: vec!["x-auth-email".into()],
                ..Default::default()
            })),
            dynamic_metadata: Some(Struct { fields: metadata }),
        };
        let decision = Decision::Allow(id.clone());
        for pass in ["first answer", "second answer"] {
            let reply = reply_for(
                &decision,
                &RequestView::new(&crate::authz::CheckInput::from_request(&req)),
                &landed,
                &surface,
                &ResponseOptions::default(),
            );
            assert!(matches!(reply.0, Inner::Allow { .. }), "{pass}");
            assert_eq!(reply.code(), 0);
            let bytes = reply.encode_to_vec();
            assert_eq!(bytes.len(), reply.encoded_len(), "{pass}");
            let got = CheckResponse::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(got, expected, "{pass}");
            assert_eq!(reply.into_response(), expected, "{pass}");
        }
    }

    /// What Envoy receives for an allow, for every identity and
    /// `identity_headers` configuration of the render tests, equals the
    /// answer built from the pre-stop-26 rendering: the headers in order,
    /// the metadata with `route`, and `encoded_len` exact.
    #[test]
    fn every_identity_gets_the_reference_answer() {
        use crate::authz::render::tests::{configs, identities, reference};
        let req = request(&[("authorization", "Bearer x")]);
        let landed = Landed {
            route: None,
            label: "r",
            assertion: None,
        };
        for cfg in configs() {
            let surface = Surface {
                headers: IdentityHeaders::compile(&cfg),
                ..Surface::default()
            };
            for id in identities() {
                let (ok, mut metadata) = reference(&cfg, &id);
                metadata.fields.insert("route".into(), s("r"));
                let expected = CheckResponse {
                    status: Some(Status::default()),
                    http_response: Some(HttpResponse::OkResponse(ok)),
                    dynamic_metadata: Some(metadata),
                };
                let reply = reply_for(
                    &Decision::Allow(Arc::new(id)),
                    &RequestView::new(&crate::authz::CheckInput::from_request(&req)),
                    &landed,
                    &surface,
                    &ResponseOptions::default(),
                );
                let bytes = reply.encode_to_vec();
                assert_eq!(bytes.len(), reply.encoded_len());
                let got = CheckResponse::decode(bytes.as_slice()).expect("decodes");
                assert_eq!(got, expected, "{cfg:?}");
                // The server's path (`encode`, which measures by writing)
                // writes the same bytes, and refuses a buffer one byte short.
                let mut exact = bytes::BytesMut::new();
                reply.encode(&mut exact).expect("encodes");
                assert_eq!(exact[..], bytes[..]);
                let mut short = vec![0u8; bytes.len() - 1];
                assert!(reply.encode(&mut short.as_mut_slice()).is_err());
            }
        }
    }

    /// A client decoding into a `CheckReply` gets the plain message.
    #[test]
    fn decoding_into_a_reply_yields_the_message() {
        let m = CheckResponse {
            status: Some(Status {
                code: 16,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = CheckReply::decode(m.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(r.code(), 16);
        assert_eq!(r.into_response(), m);
    }
}
