//! Compiles the protocol with `protox` (pure Rust, no system `protoc`):
//! `proto/holmes/v1/holmes.proto` and `pipeline.proto` (the collector's Kafka events),
//! and Google's `proto/perftools/profiles/profile.proto`, the pprof format, vendored
//! unchanged from github.com/google/pprof (`proto/profile.proto`, commit 963a80db).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "holmes/v1/holmes.proto",
            "holmes/v1/pipeline.proto",
            "perftools/profiles/profile.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .compile_fds(fds)?;
    Ok(())
}
