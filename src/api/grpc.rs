//! gRPC `portcullis.v1.TokenService`, on the Check port. A thin mapping onto
//! [`TokenService`]: the same caller authentication and rules as REST.

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::store::{DeliveryRecord, EventRecord};
use crate::tokens::{
    AuditParams, CreateInput, CreatedView, DeliveryParams, InventoryParams, LeakAuth, RotateInput,
    TokenService, TokenView,
};

/// Generated protobuf types and service traits.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("portcullis.v1");
}

pub use pb::token_service_server::TokenServiceServer;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct GrpcTokens {
    svc: TokenService,
}

impl GrpcTokens {
    pub fn new(svc: TokenService) -> Self {
        GrpcTokens { svc }
    }

    pub fn into_server(self) -> TokenServiceServer<GrpcTokens> {
        TokenServiceServer::new(self)
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<crate::tokens::Caller, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let c = self.svc.caller(auth).await.map_err(|e| e.to_status())?;
        Ok(c.with_client_addr(self.client_addr(req)))
    }

    /// The client address (`audit.grpc_trusted_proxy_hops`,
    /// `audit.trusted_proxies`): `x-forwarded-for` metadata, believed only
    /// from a trusted peer, and the TCP peer.
    fn client_addr<T>(&self, req: &Request<T>) -> Option<String> {
        let xff: Vec<&str> = req
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        self.svc.grpc_client_addr(&xff, req.remote_addr())
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn audit_event(e: EventRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id.to_string(),
        event: e.event,
        at: Some(ts(e.at)),
        token_id: e.token_id.map(|u| u.to_string()).unwrap_or_default(),
        owner_issuer: e.owner_issuer,
        owner_id: e.owner_id,
        actor: Some(pb::Actor {
            kind: e.actor.kind.as_str().to_owned(),
            subject: e.actor.subject,
            issuer: e.actor.issuer,
            token_id: e.actor.token_id.map(|u| u.to_string()).unwrap_or_default(),
            client_addr: e.actor.client_addr.unwrap_or_default(),
        }),
        data_json: e.data.to_string(),
    }
}

fn delivery(d: DeliveryRecord) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: d.id.to_string(),
        webhook: d.webhook,
        event_id: d.event_id.to_string(),
        event: d.event,
        token_id: d.token_id.map(|u| u.to_string()).unwrap_or_default(),
        state: d.state.as_str().to_owned(),
        attempts: u32::try_from(d.attempts).unwrap_or(0),
        created_at: Some(ts(d.created_at)),
        next_attempt_at: Some(ts(d.next_attempt_at)),
        finished_at: d.finished_at.map(ts),
        last_status: d
            .last_status
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
        last_error: d.last_error.unwrap_or_default(),
    }
}

fn limit(l: u32) -> Option<u32> {
    (l != 0).then_some(l)
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_ts(t: Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    match t {
        None => Ok(None),
        Some(t) => DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("invalid_request: expires_at is out of range")),
    }
}

fn days(d: u32) -> Option<u32> {
    (d != 0).then_some(d)
}

/// proto3 has no absent string: empty means "not given".
fn issuer(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn info(v: TokenView) -> pb::TokenInfo {
    pb::TokenInfo {
        id: v.id.to_string(),
        user_id: v.user_id,
        username: v.username,
        name: v.name,
        description: v.description.unwrap_or_default(),
        display_hint: v.display_hint,
        scopes: v.scopes,
        created_at: Some(ts(v.created_at)),
        expires_at: Some(ts(v.expires_at)),
        last_used_at: v.last_used_at.map(ts),
        revoked_at: v.revoked_at.map(ts),
        kind: v.kind,
        rotated_from: v.rotated_from.map(|u| u.to_string()).unwrap_or_default(),
        active: v.active,
        user_issuer: v.user_issuer,
        last_used_ip: v.last_used_ip.unwrap_or_default(),
        last_used_user_agent: v.last_used_user_agent.unwrap_or_default(),
    }
}

fn created(c: CreatedView) -> pb::CreatedToken {
    pb::CreatedToken {
        info: c.info.map(info),
        token: c.token,
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for GrpcTokens {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let input = CreateInput {
            name: r.name,
            description: Some(r.description).filter(|d| !d.is_empty()),
            scopes: r.scopes,
            expires_in_days: days(r.expires_in_days),
            expires_at: from_ts(r.expires_at)?,
        };
        let out = self
            .svc
            .create(&c, input)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(created(out)))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let c = self.caller(&req).await?;
        let v = self.svc.list(&c).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: v.into_iter().map(info).collect(),
        }))
    }

    async fn get_token(
        &self,
        req: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let c = self.caller(&req).await?;
        let v = self
            .svc
            .get(&c, &req.get_ref().id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(info(v)))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let c = self.caller(&req).await?;
        let v = self
            .svc
            .revoke(&c, &req.get_ref().id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(info(v)))
    }

    async fn rotate_token(
        &self,
        req: Request<pb::RotateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let input = RotateInput {
            expires_in_days: days(r.expires_in_days),
            expires_at: from_ts(r.expires_at)?,
        };
        let out = self
            .svc
            .rotate(&c, &r.id, input)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(created(out)))
    }

    async fn get_self(
        &self,
        req: Request<pb::GetSelfRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let c = self.caller(&req).await?;
        let v = self.svc.get_self(&c).await.map_err(|e| e.to_status())?;
        Ok(Response::new(info(v)))
    }

    async fn list_user_tokens(
        &self,
        req: Request<pb::ListUserTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let c = self.caller(&req).await?;
        let v = self
            .svc
            .admin_list(&c, &req.get_ref().user_id, issuer(&req.get_ref().issuer))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: v.into_iter().map(info).collect(),
        }))
    }

    async fn revoke_user_tokens(
        &self,
        req: Request<pb::RevokeUserTokensRequest>,
    ) -> Result<Response<pb::RevokeUserTokensResponse>, Status> {
        let c = self.caller(&req).await?;
        let v = self
            .svc
            .admin_revoke(&c, &req.get_ref().user_id, issuer(&req.get_ref().issuer))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::RevokeUserTokensResponse {
            revoked: u32::try_from(v.revoked).unwrap_or(u32::MAX),
            tokens: v.tokens.into_iter().map(info).collect(),
        }))
    }

    async fn revoke_self(
        &self,
        req: Request<pb::RevokeSelfRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let c = self.caller(&req).await?;
        let v = self.svc.revoke_self(&c).await.map_err(|e| e.to_status())?;
        Ok(Response::new(info(v)))
    }

    async fn revoke_leaked(
        &self,
        req: Request<pb::RevokeLeakedRequest>,
    ) -> Result<Response<pb::RevokeLeakedResponse>, Status> {
        let started = std::time::Instant::now();
        let work = async {
            let auth = match req.metadata().get(crate::api::rest::LEAK_SECRET_HEADER) {
                Some(v) => LeakAuth::Secret {
                    presented: v.to_str().unwrap_or_default().to_owned(),
                    client_addr: self.client_addr(&req),
                },
                None => LeakAuth::Caller(self.caller(&req).await?),
            };
            let reporter = self.svc.leak_reporter(auth).map_err(|e| e.to_status())?;
            let out = self
                .svc
                .revoke_leaked(&reporter, req.into_inner().tokens)
                .await
                .map_err(|e| e.to_status())?;
            Ok(Response::new(pb::RevokeLeakedResponse {
                received: u32::try_from(out.received).unwrap_or(u32::MAX),
            }))
        };
        self.svc.leak_padded(started, work).await
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let p = AuditParams {
            user: opt(&r.user_id),
            issuer: opt(&r.issuer),
            token_id: opt(&r.token_id),
            event: opt(&r.event),
            cursor: opt(&r.cursor),
            limit: limit(r.limit),
        };
        let page = self.svc.audit(&c, p).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.events.into_iter().map(audit_event).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let p = DeliveryParams {
            state: opt(&r.state),
            webhook: opt(&r.webhook),
            cursor: opt(&r.cursor),
            limit: limit(r.limit),
        };
        let page = self
            .svc
            .deliveries(&c, p)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: page.deliveries.into_iter().map(delivery).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn list_all_tokens(
        &self,
        req: Request<pb::ListAllTokensRequest>,
    ) -> Result<Response<pb::ListAllTokensResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let p = InventoryParams {
            state: opt(&r.state),
            expiring_within: opt(&r.expiring_within),
            user: opt(&r.user_id),
            issuer: opt(&r.issuer),
            name_contains: opt(&r.name_contains),
            last_used_before: opt(&r.last_used_before),
            cursor: opt(&r.cursor),
            limit: limit(r.limit),
        };
        let page = self.svc.inventory(&c, p).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListAllTokensResponse {
            tokens: page.tokens.into_iter().map(info).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }
}
