//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export` on its own
//! listener, served by tonic with gzip accepted (and used for responses when the client
//! accepts it).
//!
//! Status codes follow the OTLP specification's gRPC section: partial success is OK with
//! `partial_success` set; throttling and shutdown are UNAVAILABLE (retried by clients); a
//! request over `otlp.max_points_per_request` is INVALID_ARGUMENT (not retried). Message size
//! and decoding are checked by tonic before the handler runs: over `otlp.max_body_bytes` is
//! OUT_OF_RANGE (RESOURCE_EXHAUSTED after decompression), undecodable protobuf is INTERNAL and
//! an unsupported `grpc-encoding` (or an unknown method) is UNIMPLEMENTED. tonic answers those
//! itself, so `Counted` reads the status of every response the handler did not produce and
//! counts it in `tallyd_otlp_requests_total` (`too_large`, `bad_request`,
//! `unsupported_media_type`), with a rate-limited warning.

use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{http, BoxFuture};
use tonic::{Code, Request, Response, Status};

use super::receiver::{Receiver, Refusal};
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
            receiver.export(&req, receiver.now())
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

/// The service tonic builds, wrapped to count the requests tonic refuses before the handler
/// runs (they never reach [`Service::export`], which counts everything else).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    receiver: Arc<Receiver>,
}

/// The outcome of a response tonic produced itself, from its `grpc-status` header (tonic
/// answers its own refusals trailers-only, status in the headers); `None` for a status the
/// handler returns, which it has counted already.
fn refused_by_tonic(headers: &http::HeaderMap) -> Option<(Outcome, Code)> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)?;
    let outcome = match code {
        Code::OutOfRange | Code::ResourceExhausted => Outcome::TooLarge,
        Code::Internal => Outcome::BadRequest,
        Code::Unimplemented => Outcome::UnsupportedMediaType,
        _ => return None,
    };
    Some((outcome, code))
}

impl<S, B, R> tonic::codegen::Service<http::Request<B>> for Counted<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let answer = self.inner.call(req);
        let receiver = Arc::clone(&self.receiver);
        Box::pin(async move {
            let response = answer.await?;
            if let Some((outcome, code)) = refused_by_tonic(response.headers()) {
                receiver.stats.request(Transport::Grpc, outcome);
                let detail = response
                    .headers()
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                receiver.warn_limited(
                    receiver.now(),
                    &format!("OTLP/gRPC request to {path} refused ({code:?}): {detail}"),
                );
            }
            Ok(response)
        })
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
    let svc = Counted {
        inner: MetricsServiceServer::new(Service {
            receiver: Arc::clone(&receiver),
        })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max),
        receiver,
    };
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            svc,
            tonic::transport::server::TcpIncoming::from(listener),
            cancel.cancelled_owned(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_own_refusals_are_counted_here() {
        let status = |code: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                "grpc-status",
                http::HeaderValue::from_str(code).expect("header"),
            );
            refused_by_tonic(&h).map(|(o, _)| o)
        };
        assert_eq!(status("13"), Some(Outcome::BadRequest));
        assert_eq!(status("11"), Some(Outcome::TooLarge));
        assert_eq!(status("8"), Some(Outcome::TooLarge));
        assert_eq!(status("12"), Some(Outcome::UnsupportedMediaType));
        // What the handler answers it has counted itself; OK carries its status in trailers.
        for handled in ["0", "3", "14", "x"] {
            assert_eq!(status(handled), None, "{handled}");
        }
        assert_eq!(refused_by_tonic(&http::HeaderMap::new()), None);
    }
}
