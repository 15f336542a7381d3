//! The ingester's gRPC server over the local tenant databases.
//!
//! A push's series stay in the received bytes and are decoded and
//! validated by the HTTP remote write path's own borrowing decoder and
//! validator ([`stratus_api::batch_from_v1_encoded`]) and appended by its own
//! append path ([`stratus_api::apply_batch`]): the answer is sent only
//! after the tenant's WAL holds every accepted sample. Reads select from
//! the tenant's database (head and blocks) and stream its chunks as they
//! are stored. A tenant without data answers empty reads without creating
//! anything on disk.
//!
//! The store component serves the same read RPCs over the blocks of the
//! shared bucket ([`IngesterService::store`], a
//! [`stratus_tsdb::BucketStore`]); it refuses pushes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use snafu::ResultExt;
use stratus_model::TenantId;
use stratus_proto::ingester as pb;
use stratus_proto::ingester::ingester_server::{Ingester, IngesterServer};
use stratus_tsdb::{BucketStore, Queryable, SelectHints, Tenants};
use tonic::{Request, Response, Status};
use tracing::{error, info};

use crate::convert;
use crate::error::{Result, ServeSnafu};
use crate::metrics::{GrpcMetrics, Timed};

/// Series per streamed query message.
const SERIES_PER_MESSAGE: usize = 128;

/// The ingester service.
#[derive(Debug, Clone)]
pub struct IngesterService {
    source: Source,
    ready: Arc<AtomicBool>,
    metrics: Arc<GrpcMetrics>,
}

/// What the service reads from.
#[derive(Debug, Clone)]
enum Source {
    /// An ingester's tenant databases (writable).
    Tenants(Arc<Tenants>),
    /// A store's blocks from the bucket (read only).
    Store(Arc<BucketStore>),
}

impl IngesterService {
    /// Serves `tenants`.
    pub fn new(tenants: Arc<Tenants>) -> Self {
        Self {
            source: Source::Tenants(tenants),
            ready: Arc::new(AtomicBool::new(true)),
            metrics: Arc::default(),
        }
    }

    /// Serves the read RPCs over the blocks of `store` (the store
    /// component); pushes are refused (UNIMPLEMENTED).
    pub fn store(store: Arc<BucketStore>) -> Self {
        Self {
            source: Source::Store(store),
            ready: Arc::new(AtomicBool::new(true)),
            metrics: Arc::default(),
        }
    }

    /// Records the requests served in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<GrpcMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs the gRPC server on `listener` until `shutdown` resolves; then
    /// health checks answer NOT_SERVING, and in-flight calls finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        max_message_bytes: usize,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
        info!(grpc = %addr, "ingester gRPC server listening");
        let ready = self.ready.clone();
        let metrics = self.metrics.clone();
        let svc = IngesterServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            // Distributors cancel pushes that time out. After a pause (GC,
            // SIGSTOP, a slow disk) the cancellations of streams this server
            // had not yet accepted arrive together; past h2's default of 20
            // it would end the connection with ENHANCE_YOUR_CALM, failing the
            // healthy pushes sharing it too.
            .http2_max_pending_accept_reset_streams(Some(4096))
            .add_service(Timed {
                inner: svc,
                metrics,
            })
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                ready.store(false, Ordering::Relaxed);
            })
            .await
            .context(ServeSnafu { addr })
    }

    fn tenant(s: &str) -> Result<TenantId, Status> {
        TenantId::new(s).map_err(|e| refused(format!("tenant {s:?}: {e}")))
    }

    /// The tenant's data for a read, `None` when it has none.
    async fn db_for_read(&self, t: &TenantId) -> Result<Option<Arc<dyn Queryable>>, Status> {
        let tenants = match &self.source {
            Source::Tenants(tenants) => tenants,
            Source::Store(store) => {
                return Ok(store.tenant(t).map(|x| x as Arc<dyn Queryable>));
            }
        };
        if let Some(db) = tenants.get_open(t).await {
            return Ok(Some(db));
        }
        let known = tenants.list().await.map_err(internal)?;
        if !known.contains(t) {
            return Ok(None);
        }
        match tenants.get(t).await {
            Ok(db) => Ok(Some(db)),
            Err(e) => Err(internal(e)),
        }
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        tenant: &str,
        empty: T,
        f: impl FnOnce(&dyn Queryable) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let t = Self::tenant(tenant)?;
        let Some(db) = self.db_for_read(&t).await? else {
            return Ok(empty);
        };
        tokio::task::spawn_blocking(move || f(db.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("read task failed: {e}")))?
    }
}

/// Metadata key marking a status as the ingester's refusal of the
/// request itself (see `ingester.proto`).
pub(crate) const REFUSAL_KEY: &str = "stratus-refusal";

/// INVALID_ARGUMENT for a request the ingester refuses: retrying it
/// cannot help.
fn refused(msg: String) -> Status {
    let mut s = Status::invalid_argument(msg);
    s.metadata_mut().insert(
        REFUSAL_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    s
}

/// Whether `s` is an ingester's [`refused`] answer rather than a failure
/// of the replica or of the transport to it.
pub(crate) fn is_refusal(s: &Status) -> bool {
    s.metadata().contains_key(REFUSAL_KEY)
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

type SeriesStream = Pin<Box<dyn Stream<Item = Result<pb::QueryStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Ingester for IngesterService {
    async fn push(
        &self,
        request: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(Status::unavailable("ingester is shutting down"));
        }
        let Source::Tenants(tenants) = &self.source else {
            return Err(Status::unimplemented(
                "this is a store: it serves blocks from the bucket and takes no writes",
            ));
        };
        let req = request.into_inner();
        let tenant = Self::tenant(&req.tenant)?;
        let mut batch = stratus_api::batch_from_v1_encoded(
            req.timeseries.iter().map(|b| &b[..]),
            &req.metadata,
        )
        .map_err(|e| refused(format!("push: {e}")))?;
        // Created timestamps (sent only when the distributor injects
        // zero samples at them).
        let ct_zero = !req.created.is_empty();
        batch.created = req
            .created
            .iter()
            .map(|c| stratus_api::CreatedTimestamp {
                series: convert::labels_from_proto(&c.labels),
                ct: c.created_ms,
            })
            .collect();
        let db = tenants.get(&tenant).await.map_err(|e| {
            error!(tenant = %tenant, error = %e, "opening tenant database");
            internal(format!("opening the tenant database failed: {e}"))
        })?;
        let res = stratus_api::append_pool::run(move || {
            stratus_api::apply_batch(&db, &batch, ct_zero).map(|o| (batch, o))
        })
        .await
        .map_err(|e| Status::internal(format!("append task failed: {e}")))?;
        let (batch, out) = res.map_err(|e| {
            error!(tenant = %tenant, error = %e, "append failed");
            internal(format!("storage error: {e}"))
        })?;
        let mut rejections: Vec<pb::Rejection> = out
            .report
            .errors
            .iter()
            .map(|e| pb::Rejection {
                labels: convert::labels_to_proto(&e.labels),
                timestamp_ms: e.t,
                reason: convert::reason_to_proto(e.reason) as i32,
                message: String::new(),
            })
            .collect();
        rejections.extend(batch.errors.iter().map(|m| pb::Rejection {
            labels: Vec::new(),
            timestamp_ms: 0,
            reason: pb::RejectReason::Invalid as i32,
            message: m.clone(),
        }));
        let ex = out.exemplars;
        Ok(Response::new(pb::PushResponse {
            samples_accepted: out.report.accepted,
            histograms_accepted: out.report.histograms_accepted,
            rejected: out.report.rejected + batch.invalid_samples + batch.histograms_refused,
            series_limited: out.report.series_limited,
            rejections,
            exemplars_accepted: ex.added + ex.duplicates,
            exemplars_refused: batch.exemplars_refused + ex.out_of_order + ex.invalid,
        }))
    }

    type QueryStreamStream = SeriesStream;

    async fn query_stream(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<SeriesStream>, Status> {
        let req = request.into_inner();
        let matchers = convert::matchers_from_proto(&req.matchers)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if matchers.is_empty() {
            return Err(Status::invalid_argument("at least one matcher is required"));
        }
        let (start, end) = (req.start_ms, req.end_ms);
        let series = self
            .read(&req.tenant, Vec::new(), move |db| {
                let found = db
                    .select(&matchers, &SelectHints::range(start, end))
                    .map_err(internal)?;
                found
                    .iter()
                    .map(convert::series_to_proto)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)
            })
            .await?;
        let mut batches: Vec<Result<pb::QueryStreamResponse, Status>> = Vec::new();
        let mut it = series.into_iter().peekable();
        while it.peek().is_some() {
            batches.push(Ok(pb::QueryStreamResponse {
                series: it.by_ref().take(SERIES_PER_MESSAGE).collect(),
            }));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn label_names(
        &self,
        request: Request<pb::LabelNamesRequest>,
    ) -> Result<Response<pb::LabelNamesResponse>, Status> {
        let req = request.into_inner();
        let matchers = convert::matchers_from_proto(&req.matchers)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (start, end) = (req.start_ms, req.end_ms);
        let names = self
            .read(&req.tenant, Vec::new(), move |db| {
                db.label_names(&matchers, start, end).map_err(internal)
            })
            .await?;
        Ok(Response::new(pb::LabelNamesResponse { names }))
    }

    async fn label_values(
        &self,
        request: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::LabelValuesResponse>, Status> {
        let req = request.into_inner();
        let matchers = convert::matchers_from_proto(&req.matchers)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (start, end, name) = (req.start_ms, req.end_ms, req.name);
        let values = self
            .read(&req.tenant, Vec::new(), move |db| {
                db.label_values(&name, &matchers, start, end)
                    .map_err(internal)
            })
            .await?;
        Ok(Response::new(pb::LabelValuesResponse { values }))
    }

    async fn series(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::SeriesResponse>, Status> {
        let req = request.into_inner();
        let matchers = convert::matchers_from_proto(&req.matchers)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if matchers.is_empty() {
            return Err(Status::invalid_argument("at least one matcher is required"));
        }
        let hints = SelectHints {
            labels_only: true,
            ..SelectHints::range(req.start_ms, req.end_ms)
        };
        let series = self
            .read(&req.tenant, Vec::new(), move |db| {
                Ok(db
                    .select(&matchers, &hints)
                    .map_err(internal)?
                    .iter()
                    .map(|s| pb::SeriesLabels {
                        labels: convert::labels_to_proto(&s.labels),
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(pb::SeriesResponse { series }))
    }

    async fn check(
        &self,
        _request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let status = if self.ready.load(Ordering::Relaxed) {
            pb::health_check_response::ServingStatus::Serving
        } else {
            pb::health_check_response::ServingStatus::NotServing
        };
        Ok(Response::new(pb::HealthCheckResponse {
            status: status as i32,
        }))
    }
}
