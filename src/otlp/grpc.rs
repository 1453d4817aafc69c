//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export` on its own
//! listener, served by tonic with gzip accepted (and used for responses when the client
//! accepts it).
//!
//! Status codes follow the OTLP specification's gRPC section: partial success is OK with
//! `partial_success` set; throttling and shutdown are UNAVAILABLE (retried by clients); a
//! request over `otlp.max_points_per_request` is INVALID_ARGUMENT (not retried). Message size
//! and decoding are checked by tonic before the handler runs: over `otlp.max_body_bytes` is
//! OUT_OF_RANGE (RESOURCE_EXHAUSTED after decompression) and undecodable protobuf is INTERNAL;
//! tonic answers those itself, so they are not in `tallyd_otlp_requests_total`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::receiver::{unix_now, Receiver, Refusal};
use super::stats::{Outcome, Transport};

/// The tonic service implementation.
pub struct Service {
    receiver: Arc<Receiver>,
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let r = &self.receiver;
        let permit = match r.admit() {
            Ok(p) => p,
            Err(refusal) => {
                let (outcome, msg) = match refusal {
                    Refusal::Busy => (
                        Outcome::Throttled,
                        "too many OTLP requests in flight (otlp.max_concurrent_requests); retry later",
                    ),
                    Refusal::Closing => (Outcome::Unavailable, "tallyd is shutting down; retry later"),
                };
                r.stats.request(Transport::Grpc, outcome);
                return Err(Status::unavailable(msg));
            }
        };
        let req = request.into_inner();
        r.stats.bytes(Transport::Grpc, req.encoded_len());
        let receiver = Arc::clone(r);
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            receiver.export(&req, unix_now())
        })
        .await;
        match done {
            Ok(Ok(a)) => {
                let partial = a.rejected > 0;
                r.stats.request(
                    Transport::Grpc,
                    if partial {
                        Outcome::Partial
                    } else {
                        Outcome::Success
                    },
                );
                Ok(Response::new(ExportMetricsServiceResponse {
                    partial_success: partial.then(|| ExportMetricsPartialSuccess {
                        rejected_data_points: i64::try_from(a.rejected).unwrap_or(i64::MAX),
                        error_message: a.message,
                    }),
                }))
            }
            Ok(Err(e)) => {
                r.stats.request(Transport::Grpc, Outcome::TooLarge);
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => {
                r.stats.request(Transport::Grpc, Outcome::Unavailable);
                Err(Status::unavailable(format!(
                    "internal error while handling the request: {e}"
                )))
            }
        }
    }
}

/// Serves OTLP/gRPC on `listener` until `cancel`, letting requests in flight finish.
///
/// # Errors
/// A transport error of the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let max = receiver.max_body;
    let svc = MetricsServiceServer::new(Service { receiver })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            svc,
            tonic::transport::server::TcpIncoming::from(listener),
            cancel.cancelled_owned(),
        )
        .await
}
