//! Generates the gRPC code of the configuration stream from `proto/`.
//!
//! The `.proto` files are compiled by `protox`, a protobuf compiler written in Rust, so no
//! `protoc` binary is needed; its file descriptors feed tonic's prost code generator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "ferry/discovery/v1/discovery.proto";
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([file, "ferry/ca/v1/ca.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Chunks are slices of configurations shared between streams: no copy per proxy.
        .bytes(".ferry.discovery.v1.ConfigChunk.config_json")
        // prost's codec with buffers sized for thousands of long-lived streams.
        .codec_path("crate::discovery::Codec")
        .compile_fds(descriptors)?;
    Ok(())
}
