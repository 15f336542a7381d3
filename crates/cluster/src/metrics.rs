//! [`GrpcMetrics`]: the metrics of the gRPC hops between components — the
//! ingester gRPC server's requests (ingesters and stores), the
//! distributor's and querier's calls to them, and the distributor's pushes
//! per ingester. Registered on a registry of their own, exported through
//! the HTTP API's `/metrics` ([`stratus_api::ExtraMetrics`]).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a gRPC call: its method and its outcome's gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

/// Labels of a distributor's pushes to one ingester.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IngesterLabels {
    ingester: String,
}

/// Labels of a distributor's failed pushes to one ingester.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    ingester: String,
    code: &'static str,
}

fn duration_histogram() -> Histogram {
    // 250 µs .. ~16 s.
    Histogram::new(exponential_buckets(0.00025, 4.0, 9))
}

/// The gRPC metrics of one process (see the module docs).
#[derive(Debug)]
pub struct GrpcMetrics {
    registry: Registry,
    server: Family<CallLabels, Histogram, fn() -> Histogram>,
    client: Family<CallLabels, Histogram, fn() -> Histogram>,
    appends: Family<IngesterLabels, Counter>,
    append_failures: Family<FailureLabels, Counter>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcMetrics {
    /// Empty metrics on their own registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let server: Family<CallLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let client: Family<CallLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let appends = Family::<IngesterLabels, Counter>::default();
        let append_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "stratus_ingester_grpc_request_duration_seconds",
            "Time to answer a gRPC request served by this ingester or store, by method and gRPC code.",
            server.clone(),
        );
        registry.register(
            "stratus_ingester_client_request_duration_seconds",
            "Time of this process' gRPC calls to ingesters and stores, by method and gRPC code (timeouts are DeadlineExceeded).",
            client.clone(),
        );
        registry.register(
            "stratus_distributor_ingester_appends",
            "Pushes sent by this distributor, by ingester.",
            appends.clone(),
        );
        registry.register(
            "stratus_distributor_ingester_append_failures",
            "Pushes of this distributor an ingester failed or did not answer in time, by ingester and gRPC code.",
            append_failures.clone(),
        );
        Self {
            registry,
            server,
            client,
            appends,
            append_failures,
        }
    }

    /// Records a request this server answered.
    pub(crate) fn served(&self, method: &'static str, start: Instant, code: tonic::Code) {
        self.server
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    /// Records a call this process made.
    pub(crate) fn called(&self, method: &'static str, start: Instant, code: tonic::Code) {
        self.client
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    /// Records a push to `ingester` and, when it failed, its code.
    pub(crate) fn pushed(&self, ingester: &str, failed: Option<tonic::Code>) {
        self.appends
            .get_or_create(&IngesterLabels {
                ingester: ingester.to_string(),
            })
            .inc();
        if let Some(code) = failed {
            self.append_failures
                .get_or_create(&FailureLabels {
                    ingester: ingester.to_string(),
                    code: code_name(code),
                })
                .inc();
        }
    }
}

impl stratus_api::ExtraMetrics for GrpcMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The gRPC code's name as grpc-go spells it (`OK`, `Unavailable`, ...).
fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code;
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_api::ExtraMetrics;

    #[test]
    fn exported_names_and_labels() {
        let m = GrpcMetrics::new();
        let t = Instant::now();
        m.served("Push", t, tonic::Code::Ok);
        m.called("QueryStream", t, tonic::Code::DeadlineExceeded);
        m.pushed("10.0.0.1:9095", None);
        m.pushed("10.0.0.1:9095", Some(tonic::Code::Unavailable));
        let text = m.encode();
        for want in [
            r#"stratus_ingester_grpc_request_duration_seconds_count{method="Push",code="OK"} 1"#,
            r#"stratus_ingester_client_request_duration_seconds_count{method="QueryStream",code="DeadlineExceeded"} 1"#,
            r#"stratus_distributor_ingester_appends_total{ingester="10.0.0.1:9095"} 2"#,
            r#"stratus_distributor_ingester_append_failures_total{ingester="10.0.0.1:9095",code="Unavailable"} 1"#,
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }
}

/// The gRPC service `S` with each request's time and code recorded in
/// [`GrpcMetrics`] (time to the response headers: a whole unary call, the
/// start of a stream; the code from a trailers-only answer, OK otherwise).
#[derive(Debug, Clone)]
pub(crate) struct Timed<S> {
    pub(crate) inner: S,
    pub(crate) metrics: std::sync::Arc<GrpcMetrics>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Timed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Timed<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<RB>,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let method = method_of(req.uri().path());
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.served(method, start, code);
            r
        })
    }
}

/// The method of a gRPC request path (`/pkg.Service/Method`), from the
/// ingester service's known ones (`other` for anything else).
fn method_of(path: &str) -> &'static str {
    match path.rsplit('/').next().unwrap_or("") {
        "Push" => "Push",
        "QueryStream" => "QueryStream",
        "LabelNames" => "LabelNames",
        "LabelValues" => "LabelValues",
        "Series" => "Series",
        "Check" => "Check",
        _ => "other",
    }
}
