//! OTLP metrics in: OTLP/HTTP (`http.rs`) and OTLP/gRPC (`grpc.rs`) listeners hand decoded
//! requests to one [`Receiver`] (`receiver.rs`), which converts them (`convert.rs`, with the
//! cumulative stream memory of `cumulative.rs`) into values for its own aggregation shard.
//! Like the statsd sources, nothing here reaches a sink.

pub mod config;
pub mod convert;
pub mod cumulative;
pub mod grpc;
pub mod http;
pub mod receiver;
pub mod stats;
pub mod tags;

pub use receiver::Receiver;
