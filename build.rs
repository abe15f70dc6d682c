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
    Ok(())
}
