//! Generated protobuf types of the wire protocols Stratus speaks.
//!
//! This crate holds generated code only (prost types compiled at build
//! time from `proto/` by protox, so no `protoc` is needed):
//!
//! - [`prometheus`]: remote write 1.0 (`prometheus.WriteRequest`) and
//!   remote read (`ReadRequest`, `ReadResponse`, `ChunkedReadResponse`);
//! - [`write_v2`]: remote write 2.0 (`io.prometheus.write.v2.Request`);
//! - [`ingester`]: the internal gRPC protocol of cluster mode
//!   (`stratus.ingester.v1`; services with the `grpc` feature);
//! - [`otlp_metrics`] and [`otlp_collector`]: OTLP metrics
//!   (`ExportMetricsServiceRequest`/`Response` and the metric data model;
//!   the common and resource messages are folded into the metrics file).
//!
//! Decoding, validation and conversion to model types live in the API
//! crate, not here. One message is hand-written instead of generated:
//! `stratus.ingester.v1.PushRequest` ([`push`]), which carries each
//! series as its encoded bytes so that neither the distributor nor the
//! ingester builds a `String` per label.

/// Package `prometheus`: remote write 1.0 and remote read.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Package `io.prometheus.write.v2`: remote write 2.0.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod write_v2 {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}

/// OTLP packages, nested as the generated code refers to each other.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod opentelemetry {
    pub mod proto {
        pub mod metrics {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.metrics.v1.rs"
                ));
            }
        }
        pub mod collector {
            pub mod metrics {
                pub mod v1 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/opentelemetry.proto.collector.metrics.v1.rs"
                    ));
                }
            }
        }
    }
}

/// Package `opentelemetry.proto.metrics.v1`: the OTLP metric data model.
pub use opentelemetry::proto::metrics::v1 as otlp_metrics;

/// Package `opentelemetry.proto.collector.metrics.v1`: the OTLP metrics
/// export request and response.
pub use opentelemetry::proto::collector::metrics::v1 as otlp_collector;

pub use prost::Message;
pub use prost::bytes;

pub mod push;

/// Stratus' own packages, nested as the generated code refers to others.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod stratus {
    pub mod ingester {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/stratus.ingester.v1.rs"));
            pub use crate::push::PushRequest;
        }
    }
}

/// Package `stratus.ingester.v1`: the internal protocol between
/// distributors, queriers and ingesters (`proto/stratus/ingester.proto`).
/// With the `grpc` feature it also holds the tonic client
/// (`ingester_client`) and server (`ingester_server`).
pub use stratus::ingester::v1 as ingester;
