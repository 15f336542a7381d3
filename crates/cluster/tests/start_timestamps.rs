//! Start timestamps through the cluster write and read paths, in one
//! process over real gRPC on loopback: a distributor pushes a remote
//! write 2.0 batch with start timestamps to an ingester, which stores
//! them; a querier reads them back from the streamed chunks.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use stratus_api::{ServerConfig, WriteBackend};
use stratus_cluster::{ClientConfig, Distributor, IngesterService, Querier, StaticPlacement};
use stratus_model::{Matcher, TenantId};
use stratus_proto::Message;
use stratus_proto::write_v2;
use stratus_tsdb::{Queryable, SelectHints};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributor_carries_start_timestamps_to_the_ingester() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let tenants = stratus_api::open_tenants(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(
            IngesterService::new(tenants.clone()).serve(listener, 16 << 20, async move {
                let _ = stopped.await;
            }),
        );
    let placement = Arc::new(StaticPlacement::new(std::slice::from_ref(&addr), 1));
    let d = Distributor::new(placement.clone(), ClientConfig::default());

    let t0 = now_ms() - 60_000;
    let req = write_v2::Request {
        symbols: ["", "__name__", "c_total", "g"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![
            write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: (1..=4)
                    .map(|i| write_v2::Sample {
                        value: i as f64,
                        timestamp: t0 + 10_000 * i,
                        start_timestamp: if i < 3 { t0 } else { t0 + 25_000 },
                    })
                    .collect(),
                ..Default::default()
            },
            write_v2::TimeSeries {
                labels_refs: vec![1, 3],
                samples: vec![write_v2::Sample {
                    value: 1.0,
                    timestamp: t0,
                    start_timestamp: 0,
                }],
                ..Default::default()
            },
        ],
    };
    let batch = stratus_api::decode_v2(&req.encode_to_vec()).unwrap();
    let tenant = TenantId::new("t1").unwrap();
    let out = d
        .write(&tenant, &batch)
        .await
        .map_err(|f| f.message)
        .unwrap();
    assert_eq!(out.report.accepted, 5);

    // Stored by the ingester.
    let db = tenants.get(&tenant).await.unwrap();
    let sel = |name: &str| vec![Matcher::eq("__name__", name)];
    let hints = SelectHints::range(t0 - 1, t0 + 60_000);
    let local = db.select(&sel("c_total"), &hints).unwrap();
    assert!(local[0].has_start_timestamps());
    let sts: Vec<i64> = local[0]
        .st_samples(hints.start, hints.end)
        .unwrap()
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert_eq!(sts, [t0, t0, t0 + 25_000, t0 + 25_000]);
    let plain = db.select(&sel("g"), &hints).unwrap();
    assert!(!plain[0].has_start_timestamps());

    // Read back through a querier (chunks streamed over gRPC).
    let q = Querier::new(placement, ClientConfig::default()).tenant(tenant);
    let h = hints.clone();
    let got = tokio::task::spawn_blocking(move || q.select(&sel("c_total"), &h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].has_start_timestamps());
    let remote: Vec<i64> = got[0]
        .st_samples(hints.start, hints.end)
        .unwrap()
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert_eq!(remote, sts);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
