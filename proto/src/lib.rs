//! Palisade's wire contract, `palisade.v1`.
//!
//! # Layout
//! - [`v1`]: the generated messages (`CheckRequest`, `CheckResponse`, `ReportRequest`, ...)
//!   and, with the `tonic` feature, `scorer_client` / `scorer_server`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//! - [`SERVICE`], [`CHECK_METHOD`], [`REPORT_METHOD`]: names for callers that frame gRPC themselves
//!   (the wasm filter, through Envoy's `dispatch_grpc_call`).

/// Generated `palisade.v1` types.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/palisade.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every Palisade proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/palisade_descriptor.bin"));

/// Fully-qualified service name.
pub const SERVICE: &str = "palisade.v1.Scorer";
/// Method name of `Check`.
pub const CHECK_METHOD: &str = "Check";
/// Method name of `Report`.
pub const REPORT_METHOD: &str = "Report";
