//! Compiles our own protobufs (`proto/`) without a system `protoc`:
//! `protox` parses them in pure Rust, `tonic-prost-build` generates code.
//! Envoy's ext_authz protos (`proto/vendor`, see its README) are compiled
//! into a descriptor set only, for gRPC reflection; their Rust types come
//! from `envoy-types`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/portcullis/v1/tokens.proto"];
    println!("cargo:rerun-if-changed=proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(protos, ["proto"])?;
    std::fs::write(
        out.join("portcullis_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let envoy = protox::compile(
        ["envoy/service/auth/v3/external_auth.proto"],
        ["proto/vendor"],
    )?;
    std::fs::write(
        out.join("envoy_auth_descriptor.bin"),
        prost::Message::encode_to_vec(&envoy),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    check_server();
    Ok(())
}

/// The server side of Envoy's `Authorization/Check` with our own request
/// and reply types: `envoy-types`' generated server is tied to
/// `CheckRequest`/`CheckResponse`, while portcullis decodes only what it
/// reads (`authz::CheckInput`) and answers with `authz::CheckReply` (the
/// same message on the wire, an allow spliced from pre-encoded bytes).
/// tonic's own code generator writes the glue, with our codec
/// (`authz::input::CheckCodec`: prost's encoder, our decoder).
fn check_server() {
    let check = tonic_build::manual::Method::builder()
        .name("check")
        .route_name("Check")
        .input_type("crate::authz::input::CheckInput")
        .output_type("crate::authz::reply::CheckReply")
        .codec_path("crate::authz::input::CheckCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(check)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service]);
}
