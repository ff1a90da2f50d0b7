//! Compiles `proto/holmes/v1/holmes.proto` and `pipeline.proto` (the collector's Kafka
//! events) with `protox` (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["holmes/v1/holmes.proto", "holmes/v1/pipeline.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .compile_fds(fds)?;
    Ok(())
}
