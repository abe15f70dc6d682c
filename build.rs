//! Compiles our own protobufs (`proto/`) without a system `protoc`:
//! `protox` parses them in pure Rust, `tonic-prost-build` generates code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/portcullis/v1/tokens.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("portcullis_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
