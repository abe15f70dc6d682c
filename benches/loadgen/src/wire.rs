//! The generator's own Check client: requests sent as bytes encoded once,
//! answers read no further than their status code.
//!
//! The generator shares the machine's cores with the server it measures.
//! With tonic's generated client, every request was a deep clone of a
//! `CheckRequest` (strings and a header map) encoded again, and every
//! answer was decoded whole: a server answering with seven identity
//! headers cost the generator ~4 µs more per request than a no-op
//! answering with one (stop 26, 49.5 vs 45.1 µs), CPU taken from the
//! server under test. Encoding once and reading only `status.code` makes
//! the generator's cost the same whatever the server answers, and smaller.

use bytes::{Buf, BufMut, Bytes};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// The Check method's path.
const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A `CheckRequest` encoded once, shared by every send of it.
#[derive(Debug, Clone)]
pub struct Wire(Bytes);

impl Wire {
    pub fn encode(req: &CheckRequest) -> Wire {
        Wire(Bytes::from(req.encode_to_vec()))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The request as the generated type (for the checks done once, not
    /// per request).
    pub fn request(&self) -> Result<CheckRequest, prost::DecodeError> {
        CheckRequest::decode(self.0.clone())
    }
}

/// `CheckResponse` read no further than `status.code`: prost skips every
/// other field (headers, metadata) without building them.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusOnly {
    #[prost(message, optional, tag = "1")]
    status: Option<CodeOnly>,
}

/// `google.rpc.Status`, its code alone.
#[derive(Clone, PartialEq, prost::Message)]
struct CodeOnly {
    #[prost(int32, tag = "1")]
    code: i32,
}

/// A Check client over one HTTP/2 connection.
#[derive(Clone)]
pub struct WireClient(tonic::client::Grpc<Channel>);

impl WireClient {
    pub fn new(ch: Channel) -> WireClient {
        WireClient(tonic::client::Grpc::new(ch))
    }

    /// Calls Check; the answer's `status.code` (-1 without a status, as
    /// the generated client's callers counted it).
    pub async fn check(&mut self, req: &Wire) -> Result<i32, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(CHECK);
        let resp = self
            .0
            .unary(tonic::Request::new(req.0.clone()), path, WireCodec)
            .await?;
        Ok(resp.into_inner())
    }
}

// === impl WireCodec ===

/// Bytes out as they are; `status.code` in.
#[derive(Debug, Clone, Copy, Default)]
struct WireCodec;

#[derive(Debug, Clone, Copy, Default)]
struct BytesEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct CodeDecoder;

impl Codec for WireCodec {
    type Encode = Bytes;
    type Decode = i32;
    type Encoder = BytesEncoder;
    type Decoder = CodeDecoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> CodeDecoder {
        CodeDecoder
    }
}

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for CodeDecoder {
    type Item = i32;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<i32>, Status> {
        let m = StatusOnly::decode(buf.copy_to_bytes(buf.remaining()))
            .map_err(|e| Status::internal(format!("decoding the CheckResponse: {e}")))?;
        Ok(Some(m.status.map_or(-1, |s| s.code)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::{CheckResponse, OkHttpResponse};
    use envoy_types::pb::google::rpc;

    /// The skipping decoder reads the same code as the generated type,
    /// whatever else the answer carries.
    #[test]
    fn reads_the_status_code_past_every_other_field() {
        use crate::noop::{NoopCheck, Shape};
        let full = NoopCheck::new(Shape::Identity).answer().clone();
        let one = NoopCheck::new(Shape::Single).answer().clone();
        let deny = CheckResponse {
            status: Some(rpc::Status {
                code: 16,
                message: "no".into(),
                details: vec![],
            }),
            ..Default::default()
        };
        let empty = CheckResponse {
            http_response: Some(
                envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(
                    OkHttpResponse::default(),
                ),
            ),
            ..Default::default()
        };
        for resp in [full, one, deny, empty] {
            let want = resp.status.as_ref().map_or(-1, |s| s.code);
            let got = StatusOnly::decode(Bytes::from(resp.encode_to_vec()))
                .map(|m| m.status.map_or(-1, |s| s.code));
            assert_eq!(got, Ok(want), "{resp:?}");
        }
    }

    #[test]
    fn a_request_survives_its_encoding() {
        let req = crate::workload::check_request(Some("tok"), 3);
        let w = Wire::encode(&req);
        assert_eq!(w.request().ok(), Some(req));
    }
}
