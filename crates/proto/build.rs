//! Compiles the .proto files under `proto/` with protox (a pure-Rust
//! protobuf compiler, so no `protoc` is needed) and generates Rust types
//! with prost-build; with the `grpc` feature, tonic-prost-build also
//! generates the client and server of the internal gRPC services.
//! `stratus.ingester.v1.PushRequest` maps to the hand-written
//! `crate::push::PushRequest`.

/// The push message is hand-written (`src/push.rs`: series kept as their
/// encoded bytes), wire-identical to its definition in the .proto file.
const PUSH_REQUEST: &str = ".stratus.ingester.v1.PushRequest";
const PUSH_REQUEST_RUST: &str = "crate::push::PushRequest";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/prometheus/types.proto",
        "proto/prometheus/remote.proto",
        "proto/io/prometheus/write/v2/types.proto",
        "proto/opentelemetry/proto/metrics/v1/metrics.proto",
        "proto/opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
        "proto/stratus/ingester.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .extern_path(PUSH_REQUEST, PUSH_REQUEST_RUST)
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new()
        .extern_path(PUSH_REQUEST, PUSH_REQUEST_RUST)
        .compile_fds(fds)?;
    Ok(())
}
