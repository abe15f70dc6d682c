//! gRPC reflection on the Check port, through independent clients:
//!
//! - grpcurl (Go, `scripts/install-grpcurl`, or `$PORTCULLIS_GRPCURL`): it
//!   asks `grpc.reflection.v1` first; `list`, `describe`, and a Check call
//!   built from the reflected descriptors alone;
//! - Python's grpcio-reflection (`scripts/install-grpc-reflection`, or
//!   `$PORTCULLIS_REFLECTION_PYTHON`), which speaks only
//!   `grpc.reflection.v1alpha`: the same three things;
//! - tonic-reflection's own v1 and v1alpha clients, to pin each version
//!   separately (grpcurl would fall back to v1alpha silently).
//!
//! Without the clients installed the tests fail saying how to install them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::server::Running;
use portcullis_testkit::check::serve_yaml;
use portcullis_testkit::envoy::repo_root;

/// Every service the gRPC port serves; reflection must list each.
const SERVICES: &[&str] = &[
    "envoy.service.auth.v3.Authorization",
    "portcullis.v1.TokenService",
    "grpc.health.v1.Health",
];

async fn server(dir: &Path) -> Running {
    serve_yaml("", dir, true).await
}

/// An installed client: `$var`, else what `script` installs. Panics, saying
/// how to install it, when there is none.
fn tool(var: &str, script: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join(script)).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let path = text.lines().last().unwrap_or_default().trim().to_owned();
            assert!(!path.is_empty(), "{script} printed no path");
            PathBuf::from(path)
        }
        Ok(o) => panic!(
            "\n\n{script} failed (set {var} to an installed one instead):\n{}\n",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("\n\nrunning {script}: {e} (or set {var})\n"),
    }
}

fn grpcurl() -> PathBuf {
    tool("PORTCULLIS_GRPCURL", "scripts/install-grpcurl")
}

fn python() -> PathBuf {
    tool(
        "PORTCULLIS_REFLECTION_PYTHON",
        "scripts/install-grpc-reflection",
    )
}

/// Runs a client to completion off the async runtime; Ok(stdout) on success.
async fn run(mut cmd: Command) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("client thread")
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what} exited with {}:\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

async fn grpcurl_run(addr: SocketAddr, args: &[&str]) -> String {
    let mut cmd = Command::new(grpcurl());
    cmd.args(["-plaintext", "-max-time", "20"])
        .arg(addr.to_string())
        .args(args);
    run(cmd).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_check() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let addr = srv.grpc_addr;

    let listed = grpcurl_run(addr, &["list"]).await;
    let names: Vec<&str> = listed.lines().map(str::trim).collect();
    for s in SERVICES {
        assert!(names.contains(s), "grpcurl list lacks {s}:\n{listed}");
    }

    let methods = grpcurl_run(addr, &["list", "envoy.service.auth.v3.Authorization"]).await;
    assert_eq!(
        methods.trim(),
        "envoy.service.auth.v3.Authorization.Check",
        "{methods}"
    );
    let described = grpcurl_run(addr, &["describe", "envoy.service.auth.v3.Authorization"]).await;
    assert!(
        described.contains(
            "rpc Check ( .envoy.service.auth.v3.CheckRequest ) returns ( .envoy.service.auth.v3.CheckResponse )"
        ),
        "{described}"
    );
    let msg = grpcurl_run(
        addr,
        &[
            "describe",
            "envoy.service.auth.v3.AttributeContext.HttpRequest",
        ],
    )
    .await;
    for field in [
        "string method",
        "string path",
        "map<string, string> headers",
    ] {
        assert!(msg.contains(field), "HttpRequest lacks {field}:\n{msg}");
    }

    // A Check built from the reflected descriptors only: no credential is a
    // 401 deny (code 16), decoded back through the same descriptors.
    let body = r#"{"attributes":{"request":{"http":{"method":"GET","path":"/x","host":"h"}}}}"#;
    let mut cmd = Command::new(grpcurl());
    cmd.args(["-plaintext", "-max-time", "20", "-d", body])
        .arg(addr.to_string())
        .arg("envoy.service.auth.v3.Authorization/Check");
    let out = run(cmd).await.unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"]["code"], 16, "{out}");
    assert_eq!(
        v["deniedResponse"]["status"]["code"], "Unauthorized",
        "{out}"
    );

    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

/// Lists services, describes Check and calls it, all over v1alpha.
const PYTHON_CLIENT: &str = r#"
import json, sys
import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=20)
db = ProtoReflectionDescriptorDatabase(channel)
services = list(db.get_services())
pool = descriptor_pool.DescriptorPool(db)
svc = pool.FindServiceByName("envoy.service.auth.v3.Authorization")
check = svc.FindMethodByName("Check")
Req = message_factory.GetMessageClass(check.input_type)
Resp = message_factory.GetMessageClass(check.output_type)
req = json_format.ParseDict(
    {"attributes": {"request": {"http": {"method": "GET", "path": "/x", "host": "h"}}}}, Req()
)
call = channel.unary_unary(
    "/envoy.service.auth.v3.Authorization/Check",
    request_serializer=Req.SerializeToString,
    response_deserializer=Resp.FromString,
)
resp = call(req, timeout=20)
print(json.dumps({
    "services": services,
    "methods": [m.name for m in svc.methods],
    "input": check.input_type.full_name,
    "output": check.output_type.full_name,
    "response": json_format.MessageToDict(resp),
}))
"#;

#[tokio::test]
async fn python_grpcio_reflection_speaks_v1alpha() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let mut cmd = Command::new(python());
    cmd.args(["-c", PYTHON_CLIENT])
        .arg(srv.grpc_addr.to_string());
    let out = run(cmd).await.unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in SERVICES {
        assert!(services.contains(s), "v1alpha lists no {s}: {services:?}");
    }
    assert_eq!(v["methods"], serde_json::json!(["Check"]), "{out}");
    assert_eq!(v["input"], "envoy.service.auth.v3.CheckRequest");
    assert_eq!(v["output"], "envoy.service.auth.v3.CheckResponse");
    assert_eq!(v["response"]["status"]["code"], 16, "{out}");
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

/// Each version on its own, with tonic-reflection's clients.
#[tokio::test]
async fn v1_and_v1alpha_each_list_every_service() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.grpc_addr))
        .unwrap()
        .connect()
        .await
        .expect("connect to gRPC");

    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::{ServerReflectionRequest, ServiceResponse};
        let mut c = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("v1 reflection is served")
            .into_inner();
        let resp = stream.next().await.expect("an answer").expect("v1 ok");
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("v1: not a service list: {resp:?}");
        };
        let names: Vec<String> = list
            .service
            .into_iter()
            .map(|ServiceResponse { name }| name)
            .collect();
        for s in SERVICES
            .iter()
            .chain(&["grpc.reflection.v1.ServerReflection"])
        {
            assert!(names.iter().any(|n| n == s), "v1 lacks {s}: {names:?}");
        }
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "envoy.service.auth.v3.Authorization".into(),
            )),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.next().await.expect("an answer").expect("v1 ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = resp.message_response else {
            panic!("v1: no file for Authorization: {resp:?}");
        };
        let first: prost_types::FileDescriptorProto =
            prost::Message::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
        assert_eq!(
            first.name(),
            "envoy/service/auth/v3/external_auth.proto",
            "{first:?}"
        );
    }
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServiceResponse};
        let mut c = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner();
        let resp = stream.next().await.expect("an answer").expect("v1alpha ok");
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("v1alpha: not a service list: {resp:?}");
        };
        let names: Vec<String> = list
            .service
            .into_iter()
            .map(|ServiceResponse { name }| name)
            .collect();
        for s in SERVICES
            .iter()
            .chain(&["grpc.reflection.v1alpha.ServerReflection"])
        {
            assert!(names.iter().any(|n| n == s), "v1alpha lacks {s}: {names:?}");
        }
    }
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}
