//! Test helpers: start portcullis in-process on 127.0.0.1:0 and call Check
//! over real gRPC, plus builders and assertions for requests and responses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::config::{Config, MapEnv};
use portcullis::server::{Running, ServeOptions, start};

use crate::wait::eventually;

/// Starts a server from YAML (listen addresses forced to port 0).
pub async fn serve_yaml(yaml: &str, data_dir: &Path, dev: bool) -> Running {
    serve_yaml_env(yaml, data_dir, dev, &[]).await
}

/// [`serve_yaml`] with an environment for the loader (overrides and the
/// secrets the config names by variable, such as webhook keys), without
/// touching the process environment.
pub async fn serve_yaml_env(
    yaml: &str,
    data_dir: &Path,
    dev: bool,
    env: &[(&str, &str)],
) -> Running {
    let env = MapEnv(
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let mut cfg = Config::from_yaml_str(yaml, &env).expect("test config parses");
    cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.listen.http = "127.0.0.1:0".parse().unwrap();
    cfg.data_dir = data_dir.to_path_buf();
    if dev {
        cfg.apply_dev_defaults(!yaml.trim().is_empty());
    }
    start(ServeOptions { config: cfg, dev })
        .await
        .expect("server starts")
}

/// `/readyz` status code (0 when the port does not answer).
pub async fn readyz(srv: &Running) -> u16 {
    reqwest::get(format!("http://{}/readyz", srv.http_addr))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Until `/readyz` answers 200 (issuer keys loaded, store reachable);
/// panics after `within` with the last status.
pub async fn wait_ready(srv: &Running, within: Duration) {
    eventually(
        within,
        "server ready (/readyz 200)",
        async || match readyz(srv).await {
            200 => Ok(()),
            other => Err(other),
        },
    )
    .await
}

/// A connected Check client.
pub async fn client(addr: SocketAddr) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to gRPC")
}

/// Builds a CheckRequest, the one way tests and benches make one.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub host: String,
    pub path: String,
    /// Envoy's request id (`attributes.request.http.id`); empty by default.
    pub id: String,
    pub headers: Vec<(String, String)>,
    pub raw_headers: bool,
    /// Add the HTTP/2 pseudo-headers Envoy sends (`:authority`, `:method`,
    /// `:path`, `:scheme`), from the request's own fields.
    pub pseudo_headers: bool,
    pub context: HashMap<String, String>,
    /// `source.certificate` (URL-encoded PEM); empty: none.
    pub peer_certificate: String,
    /// `source.address` (the client address Envoy reports); empty: none.
    pub source_ip: String,
}

impl Req {
    pub fn get(path: &str) -> Req {
        Req {
            method: "GET".into(),
            host: "api.example.org".into(),
            path: path.into(),
            id: String::new(),
            headers: Vec::new(),
            raw_headers: false,
            pseudo_headers: false,
            context: HashMap::new(),
            peer_certificate: String::new(),
            source_ip: String::new(),
        }
    }

    /// The client address Envoy reports (`source.address`).
    pub fn source_ip(mut self, ip: &str) -> Req {
        self.source_ip = ip.into();
        self
    }

    /// The client certificate Envoy forwards with `include_peer_certificate`
    /// (`source.certificate`, URL-encoded PEM).
    pub fn peer_certificate(mut self, urlencoded_pem: &str) -> Req {
        self.peer_certificate = urlencoded_pem.into();
        self
    }

    /// `Authorization: DPoP <token>` with `proof` in the `DPoP` header.
    pub fn dpop(self, token: &str, proof: &str) -> Req {
        self.header("authorization", &format!("DPoP {token}"))
            .header("dpop", proof)
    }

    /// The URL Envoy describes for this request, as a DPoP proof's `htu`
    /// names it (the query left out).
    pub fn url(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("");
        format!("https://{}{path}", self.host)
    }

    /// Envoy's request id (`http.id`).
    pub fn id(mut self, id: &str) -> Req {
        self.id = id.into();
        self
    }

    /// Also send the pseudo-headers Envoy adds (`:authority`, `:method`,
    /// `:path`, `:scheme`), as a real Envoy's CheckRequest carries them.
    pub fn pseudo_headers(mut self) -> Req {
        self.pseudo_headers = true;
        self
    }

    pub fn method(mut self, m: &str) -> Req {
        self.method = m.into();
        self
    }

    pub fn host(mut self, h: &str) -> Req {
        self.host = h.into();
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Send headers as Envoy's `header_map` (raw_value bytes) instead of the map.
    pub fn raw(mut self) -> Req {
        self.raw_headers = true;
        self
    }

    pub fn context(mut self, k: &str, v: &str) -> Req {
        self.context.insert(k.into(), v.into());
        self
    }

    /// As the Check server decodes it ([`portcullis::authz::CheckInput`]).
    pub fn input(&self) -> portcullis::authz::CheckInput {
        portcullis::authz::CheckInput::from_request(&self.build())
    }

    pub fn build(&self) -> CheckRequest {
        const SCHEME: &str = "https";
        let mut http = HttpRequest {
            id: self.id.clone(),
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            scheme: SCHEME.into(),
            protocol: "HTTP/1.1".into(),
            ..Default::default()
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        if self.pseudo_headers {
            let pseudo = [
                (":authority", &self.host),
                (":method", &self.method),
                (":path", &self.path),
            ];
            headers.extend(pseudo.map(|(k, v)| (k.to_owned(), v.clone())));
            headers.push((":scheme".into(), SCHEME.into()));
        }
        headers.extend(self.headers.iter().cloned());
        if self.raw_headers {
            http.header_map = Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.clone(),
                        value: String::new(),
                        raw_value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            });
        } else {
            for (k, v) in &headers {
                // Envoy joins repeated headers with ','.
                http.headers
                    .entry(k.to_ascii_lowercase())
                    .and_modify(|e: &mut String| {
                        e.push(',');
                        e.push_str(v)
                    })
                    .or_insert_with(|| v.clone());
            }
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                context_extensions: self.context.clone(),
                source: (!self.peer_certificate.is_empty() || !self.source_ip.is_empty()).then(
                    || Peer {
                        certificate: self.peer_certificate.clone(),
                        address: (!self.source_ip.is_empty())
                            .then(|| source_address(&self.source_ip)),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            }),
        }
    }
}

/// An Envoy `Address` for `ip` (port 40000).
fn source_address(ip: &str) -> envoy_types::pb::envoy::config::core::v3::Address {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(40000)),
            ..Default::default()
        })),
    }
}

/// Calls Check over gRPC; panics on a transport error (that is a bug: a
/// deny must be an Ok response).
pub async fn check(addr: SocketAddr, req: &Req) -> CheckResponse {
    let mut c = client(addr).await;
    c.check(req.build())
        .await
        .expect("Check must never return a gRPC error")
        .into_inner()
}

/// Calls Check every [`crate::wait::POLL`] until the response's gRPC code
/// satisfies `want` (0 is an allow, 14 a 503, 16 a 401), and returns that
/// response; panics after `within` naming `what` and the last response.
pub async fn check_until(
    addr: SocketAddr,
    req: &Req,
    within: Duration,
    what: &str,
    want: impl Fn(i32) -> bool,
) -> CheckResponse {
    eventually(within, what, async || {
        let resp = check(addr, req).await;
        if want(code(&resp)) {
            Ok(resp)
        } else {
            Err(resp)
        }
    })
    .await
}

/// The response's gRPC status code (0 is an allow; -1 when unset).
pub fn code(resp: &CheckResponse) -> i32 {
    resp.status.as_ref().map(|s| s.code).unwrap_or(-1)
}

/// Upstream headers of an allow, as name → value; panics on a deny.
pub fn allowed(resp: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    let status = resp.status.as_ref().expect("status must be set");
    assert_eq!(status.code, 0, "expected allow, got {resp:?}");
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let mut h = HashMap::new();
            for opt in &ok.headers {
                let hv = opt.header.as_ref().expect("header set");
                #[allow(deprecated)]
                let append = opt.append.as_ref().map(|b| b.value);
                assert_eq!(append, Some(false), "append must be false for {}", hv.key);
                assert_eq!(
                    opt.append_action, 2,
                    "append_action must be OVERWRITE_IF_EXISTS_OR_ADD"
                );
                h.insert(hv.key.clone(), hv.value.clone());
            }
            for r in &ok.headers_to_remove {
                assert!(!h.contains_key(r), "{r} is both set and removed");
            }
            (h, ok.headers_to_remove.clone())
        }
        other => panic!("allow without OkHttpResponse: {other:?}"),
    }
}

/// A denial's parts.
#[derive(Debug)]
pub struct Denied {
    pub code: i32,
    pub http: i32,
    pub www_authenticate: Option<String>,
    pub body: serde_json::Value,
}

impl Denied {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }
}

/// Parses a denial; panics on an allow.
pub fn denied(resp: &CheckResponse) -> Denied {
    let status = resp.status.as_ref().expect("status must be set");
    assert_ne!(status.code, 0, "expected deny, got allow: {resp:?}");
    match &resp.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let www = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "www-authenticate")
                .map(|h| h.value.clone());
            Denied {
                code: status.code,
                http: d.status.as_ref().map(|s| s.code).unwrap_or(0),
                www_authenticate: www,
                body: serde_json::from_str(&d.body).expect("deny body is JSON"),
            }
        }
        other => panic!("deny without DeniedHttpResponse: {other:?}"),
    }
}

/// Asserts a 401 `invalid_token` whose description contains `needle`.
pub fn assert_invalid_token(resp: &CheckResponse, needle: &str) {
    let d = denied(resp);
    assert_eq!((d.code, d.http), (16, 401), "{d:?}");
    assert_eq!(d.error(), "invalid_token", "{d:?}");
    assert!(
        d.description().contains(needle),
        "description {:?} lacks {needle:?}",
        d.description()
    );
    let www = d.www_authenticate.expect("WWW-Authenticate on 401");
    assert!(
        www.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
        "{www}"
    );
}
