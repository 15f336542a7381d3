//! The distributor's reading of replica answers, against real gRPC
//! servers on loopback whose `Push` answers are scripted: a transport
//! failure of one replica (whatever gRPC code it arrives with) is judged
//! by the quorum, only an ingester's marked refusal fails the request.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use stratus_api::WriteBackend;
use stratus_cluster::{ClientConfig, Distributor, StaticPlacement};
use stratus_model::TenantId;
use stratus_proto::ingester as pb;
use stratus_proto::ingester::ingester_server::{Ingester, IngesterServer};
use stratus_proto::prometheus as prom;
use tonic::{Request, Response, Status};

/// How a scripted ingester answers every push.
#[derive(Clone)]
enum Script {
    Ok,
    Fail(Status),
}

#[derive(Clone)]
struct Scripted(Script);

type Empty = Pin<Box<dyn Stream<Item = Result<pb::QueryStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Ingester for Scripted {
    async fn push(
        &self,
        _req: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        match &self.0 {
            Script::Ok => Ok(Response::new(pb::PushResponse::default())),
            Script::Fail(s) => Err(s.clone()),
        }
    }
    type QueryStreamStream = Empty;
    async fn query_stream(
        &self,
        _req: Request<pb::QueryRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn label_names(
        &self,
        _req: Request<pb::LabelNamesRequest>,
    ) -> Result<Response<pb::LabelNamesResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn label_values(
        &self,
        _req: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::LabelValuesResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn series(
        &self,
        _req: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::SeriesResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
    async fn check(
        &self,
        _req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
}

/// Starts one scripted ingester per entry; returns their addresses.
async fn ingesters(scripts: Vec<Script>) -> Vec<String> {
    let mut addrs = Vec::new();
    for s in scripts {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
        let incoming = tokio_stream_of(l);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IngesterServer::new(Scripted(s)))
                .serve_with_incoming(incoming),
        );
    }
    addrs
}

fn tokio_stream_of(
    l: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

/// A distributor at RF3 over the scripted ingesters pushing 20 series.
async fn push(scripts: Vec<Script>) -> Result<(), (u16, String)> {
    let addrs = ingesters(scripts).await;
    let d = Distributor::new(
        Arc::new(StaticPlacement::new(&addrs, 3)),
        ClientConfig::default(),
    );
    let encoded: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            prom::TimeSeries {
                labels: vec![
                    prom::Label {
                        name: "__name__".into(),
                        value: "m".into(),
                    },
                    prom::Label {
                        name: "s".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![prom::Sample {
                    value: 1.0,
                    timestamp: 1_000,
                }],
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let batch = stratus_api::batch_from_v1_encoded(encoded.iter().map(|b| &b[..]), &[]).unwrap();
    let tenant = TenantId::new("t1").unwrap();
    d.write(&tenant, &batch)
        .await
        .map(|_| ())
        .map_err(|f| (f.status, f.message))
}

/// What h2's ENHANCE_YOUR_CALM reset turns into on the client side.
fn calm() -> Status {
    Status::resource_exhausted("h2 protocol error: http2 error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_failing_with_any_code_keeps_the_quorum() {
    for fail in [
        calm(),
        Status::invalid_argument("unmarked"),
        Status::unavailable("down"),
    ] {
        let r = push(vec![Script::Ok, Script::Fail(fail.clone()), Script::Ok]).await;
        assert!(r.is_ok(), "{fail:?}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failed_replicas_are_503_even_when_one_says_resource_exhausted() {
    let r = push(vec![
        Script::Ok,
        Script::Fail(calm()),
        Script::Fail(Status::unavailable("down")),
    ])
    .await;
    let (status, msg) = r.expect_err("no quorum");
    assert_eq!(status, 503, "{msg}");
    assert!(msg.contains("could not be written to a quorum"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_refusal_is_the_requests_fault() {
    let mut refusal = Status::invalid_argument("tenant \"x\": bad");
    refusal.metadata_mut().insert(
        "stratus-refusal",
        tonic::metadata::MetadataValue::from_static("1"),
    );
    // Every replica refuses the same request.
    let r = push(vec![Script::Fail(refusal); 3]).await;
    let (status, msg) = r.expect_err("refused");
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("bad"), "{msg}");
}
