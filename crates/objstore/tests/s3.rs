//! The S3 backend against a real S3-compatible server (`s3s-fs` on
//! 127.0.0.1): object put/get/list/delete, streamed directory upload and
//! download (multipart), and clear errors for a dead endpoint, wrong
//! credentials and a missing bucket.

use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_objstore::{Bucket, Secret};

#[path = "common/s3server.rs"]
mod s3server;
use s3server::S3Server;

#[tokio::test]
async fn objects_put_get_list_delete() {
    let srv = S3Server::start(&["objs"]);
    let b = Bucket::s3(&srv.config("objs")).unwrap();
    b.check().await.unwrap();
    let t = b.with_prefix("tenant-1");
    t.put("01A/meta.json", Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();
    t.put("01A/chunks/000001", Bytes::from_static(b"xyz"))
        .await
        .unwrap();
    t.put("01B/meta.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    t.put("bucket-index.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        t.get("01A/meta.json").await.unwrap().unwrap(),
        Bytes::from_static(b"{\"a\":1}")
    );
    assert!(t.get("01A/missing").await.unwrap().is_none());
    assert_eq!(t.list_dirs("").await.unwrap(), vec!["01A", "01B"]);
    assert_eq!(t.list_dirs("01A").await.unwrap(), vec!["chunks"]);
    assert_eq!(b.list_dirs("").await.unwrap(), vec!["tenant-1"]);
    // On the server's disk, under the bucket.
    assert!(
        srv.keys("objs")
            .contains(&"tenant-1/01A/chunks/000001".to_string())
    );
    t.delete("01B/meta.json").await.unwrap();
    t.delete("01B/meta.json").await.unwrap(); // missing: not an error
    assert!(t.get("01B/meta.json").await.unwrap().is_none());
    t.delete_prefix("01A").await.unwrap();
    assert!(t.get("01A/chunks/000001").await.unwrap().is_none());
    assert_eq!(srv.keys("objs"), vec!["tenant-1/bucket-index.json"]);
}

#[tokio::test]
async fn directory_upload_download_streamed() {
    let srv = S3Server::start(&["dirs"]);
    let mut cfg = srv.config("dirs");
    cfg.prefix = "cluster-a/".into();
    let b = Bucket::s3(&cfg).unwrap().with_prefix("t");
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("chunks")).unwrap();
    // 20 MiB: three multipart parts of 8 MiB.
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.path().join("chunks/000001"), &big).unwrap();
    std::fs::write(src.path().join("index"), b"index-bytes").unwrap();
    std::fs::write(src.path().join("meta.json"), b"{}").unwrap();
    b.upload_dir("01BLOCK", src.path(), &["meta.json"])
        .await
        .unwrap();
    let keys = srv.keys("dirs");
    assert!(
        keys.contains(&"cluster-a/t/01BLOCK/chunks/000001".to_string()),
        "{keys:?}"
    );
    let dst = tempfile::tempdir().unwrap();
    b.download_dir("01BLOCK", dst.path()).await.unwrap();
    assert_eq!(
        std::fs::read(dst.path().join("chunks/000001")).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read(dst.path().join("index")).unwrap(),
        b"index-bytes"
    );
    assert_eq!(std::fs::read(dst.path().join("meta.json")).unwrap(), b"{}");
    b.delete_prefix("01BLOCK").await.unwrap();
    assert!(srv.keys("dirs").is_empty());
}

#[tokio::test]
async fn broken_endpoint_and_credentials_are_clear_errors() {
    let srv = S3Server::start(&["real"]);
    // Wrong secret: the server refuses the signature.
    let mut cfg = srv.config("real");
    cfg.secret_access_key = Secret::new("wrong-secret-value");
    let b = Bucket::s3(&cfg).unwrap();
    let e = b.check().await.unwrap_err().to_string();
    assert!(e.contains("s3://real") && e.contains(&srv.endpoint), "{e}");
    assert!(!e.contains("wrong-secret-value"), "{e}");
    assert!(b.put("x", Bytes::from_static(b"1")).await.is_err());

    // A bucket that does not exist.
    let b = Bucket::s3(&srv.config("nope")).unwrap();
    let e = b.check().await.unwrap_err().to_string();
    assert!(e.contains("s3://nope") && e.contains("not usable"), "{e}");

    // Nothing listens: fails within the bounded retries.
    let port = stratus_testkit::loopback_port();
    let mut cfg = srv.config("real");
    cfg.endpoint = format!("http://127.0.0.1:{port}");
    let b = Bucket::s3(&cfg).unwrap();
    let started = Instant::now();
    let e = b.check().await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(20), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");

    // Settings refused before any request.
    let mut cfg = srv.config("real");
    cfg.allow_http = false;
    let e = Bucket::s3(&cfg).unwrap_err().to_string();
    assert!(e.contains("allow_http"), "{e}");
    let mut cfg = srv.config("");
    cfg.bucket.clear();
    assert!(Bucket::s3(&cfg).unwrap_err().to_string().contains("bucket"));
}
