//! Generated protobuf types of the wire protocols Stratus speaks.
//!
//! This crate holds generated code only (prost types compiled at build
//! time from `proto/` by protox, so no `protoc` is needed):
//!
//! - [`prometheus`]: remote write 1.0 (`prometheus.WriteRequest`) and
//!   remote read (`ReadRequest`, `ReadResponse`, `ChunkedReadResponse`);
//! - [`write_v2`]: remote write 2.0 (`io.prometheus.write.v2.Request`).
//!
//! Decoding, validation and conversion to model types live in the API
//! crate, not here.

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

pub use prost::Message;
