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
//!
//! tonic reads and decodes the whole message before it calls [`Service::export`], which only
//! then takes one of the `otlp.max_concurrent_requests` slots: a slow upload holds no slot.
//! `Counted` also bounds that reception by `otlp.request_timeout`: a request whose handler has
//! not started by then is answered DEADLINE_EXCEEDED and counted as `timeout`. (tonic's own
//! `Server::timeout` is not used: it would also cut a request whose points are being applied,
//! answering an error for data that is counted, and the client's retry would count it twice.)

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{http, BoxFuture};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Code, Request, Response, Status};

use crate::base::conn::{Conn, Limits, Stats};
use crate::base::duration::format_duration;

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
        if let Some(started) = request.extensions().get::<Started>() {
            started.0.store(true, Relaxed);
        }
        let r = &self.receiver;
        let permit = match r.admit() {
            Ok(p) => p,
            Err(refusal) => {
                let (outcome, msg) = match refusal {
                    // gRPC messages are buffered by tonic before the handler (bounded by
                    // `otlp.max_body_bytes`), not through the body budget.
                    Refusal::Busy | Refusal::BodyBudget => (
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

/// Set by [`Service::export`] when it is called: the message has been received and decoded.
#[derive(Clone)]
struct Started(Arc<AtomicBool>);

/// The service tonic builds, wrapped to count the requests tonic refuses before the handler
/// runs (they never reach [`Service::export`], which counts everything else), and to answer
/// DEADLINE_EXCEEDED to one whose message has not arrived within `timeout`.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    receiver: Arc<Receiver>,
    timeout: Duration,
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
    R: Default + Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let started = Arc::new(AtomicBool::new(false));
        req.extensions_mut().insert(Started(Arc::clone(&started)));
        let answer = self.inner.call(req);
        let receiver = Arc::clone(&self.receiver);
        let timeout = self.timeout;
        Box::pin(async move {
            let mut answer = std::pin::pin!(answer);
            let response = tokio::select! {
                biased;
                done = &mut answer => done?,
                () = tokio::time::sleep(timeout) => {
                    // The handler runs inside `answer`, on this task: once it has set the flag
                    // it owns the request (and maybe a slot), and is left to finish.
                    if started.load(Relaxed) {
                        answer.await?
                    } else {
                        receiver.stats.request(Transport::Grpc, Outcome::Timeout);
                        let msg = format!(
                            "the request message did not arrive within otlp.request_timeout = {}",
                            format_duration(timeout)
                        );
                        receiver.warn_limited(
                            receiver.now(),
                            &format!("OTLP/gRPC request to {path} refused: {msg}"),
                        );
                        return Ok(Status::deadline_exceeded(msg).into_http());
                    }
                }
            };
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

/// An admitted connection as tonic takes it (`base::conn`, counted against the caps until
/// tonic drops it), with the peer address tonic hands to requests.
struct GrpcIo(Conn);

impl Connected for GrpcIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(self.0.peer()),
        }
    }
}

impl AsyncRead for GrpcIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Streams gRPC opens on one connection at once (grpc-go's and h2's usual 100 would also do;
/// an exporter uses one at a time).
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// Serves OTLP/gRPC on `listener` within `limits` (TLS when `tls` is set) until `cancel`,
/// letting requests in flight finish. Connections are accepted by `base::conn` (caps, TLS,
/// idle timeout) and handed to tonic as its incoming stream.
///
/// # Errors
/// A transport error of the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<Stats>,
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
        timeout: receiver.request_timeout,
        receiver,
    };
    let header_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    let (handoff, incoming) =
        crate::base::conn::handoff(GrpcIo, limits.header_read_timeout, Arc::clone(&stats));
    let accepting = crate::base::conn::run(listener, limits, tls, stats, handoff, cancel.clone());
    let serving = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(header_list)
        .serve_with_incoming_shutdown(svc, incoming, cancel.cancelled_owned());
    let ((), served) = tokio::join!(accepting, serving);
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregator;
    use crate::base::clock::Clock;
    use crate::config::Config;
    use crate::telemetry::Telemetry;
    use tonic::codegen::Service as _;

    /// Stands in for tonic's service: receives and decodes for `decode`, then enters the
    /// handler (marking the request started, as [`Service::export`] does) for `handle`.
    #[derive(Clone)]
    struct Slow {
        decode: Duration,
        handle: Duration,
    }

    impl tonic::codegen::Service<http::Request<()>> for Slow {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<()>) -> Self::Future {
            let Slow { decode, handle } = self.clone();
            Box::pin(async move {
                tokio::time::sleep(decode).await;
                if let Some(s) = req.extensions().get::<Started>() {
                    s.0.store(true, Relaxed);
                }
                tokio::time::sleep(handle).await;
                Ok(http::Response::new(tonic::body::Body::default()))
            })
        }
    }

    async fn call_slow(decode: u64, handle: u64) -> (Option<String>, u64) {
        let cfg = Config::default();
        let agg = Aggregator::new(
            &cfg.aggregate,
            cfg.statsd.gauge_mode,
            Arc::new(Telemetry::default()),
        );
        let receiver = Arc::new(Receiver::new(
            &cfg.otlp,
            &agg,
            Clock::manual(Duration::ZERO),
        ));
        let mut svc = Counted {
            inner: Slow {
                decode: Duration::from_secs(decode),
                handle: Duration::from_secs(handle),
            },
            receiver: Arc::clone(&receiver),
            timeout: Duration::from_secs(10),
        };
        let response = svc.call(http::Request::new(())).await.expect("a response");
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (
            status,
            receiver.stats.requests(Transport::Grpc, Outcome::Timeout),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_not_received_in_time_is_deadline_exceeded_and_counted() {
        assert_eq!(call_slow(11, 0).await, (Some("4".into()), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_handler_is_never_cut_by_the_timeout() {
        assert_eq!(call_slow(1, 30).await, (None, 0));
        assert_eq!(call_slow(9, 0).await, (None, 0));
    }

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
