//! The S3-compatible backend: its settings ([`S3Config`], [`StorageBackend`],
//! [`Secret`]) and the construction of an `object_store` S3 client from
//! them (retries bounded so a dead endpoint fails in seconds, not minutes).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::{Bucket, Result, StoreSnafu};

/// Where blocks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A directory on local disk (`<data_dir>/blocks`). The default.
    #[default]
    Filesystem,
    /// An S3-compatible object store (settings in [`S3Config`]).
    S3,
}

/// How the bucket is addressed in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketLookup {
    /// `https://endpoint/bucket/key` (MinIO, s3s, most self-hosted
    /// servers). The default.
    #[default]
    Path,
    /// `https://bucket.endpoint/key` (AWS for new buckets).
    VirtualHosted,
}

/// A credential: never printed. Serializes as `<secret>` when set (so
/// `--print-config` and `/config` do not show it) and debugs the same way.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself (to hand to the client, never to a log).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a set secret is shown as.
pub const REDACTED: &str = "<secret>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(REDACTED)
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

/// Settings of an S3-compatible bucket. Credentials left empty are taken
/// from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`) when the bucket is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name (required).
    pub bucket: String,
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; empty = AWS for
    /// `region`.
    pub endpoint: String,
    /// Region used for signing (default `us-east-1`).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (shown as `<secret>`).
    pub secret_access_key: Secret,
    /// Path-style or virtual-hosted-style addressing (default `path`).
    pub bucket_lookup: BucketLookup,
    /// Allow plain `http://` endpoints (default off).
    pub allow_http: bool,
    /// Key prefix inside the bucket under which everything is stored
    /// (default none), so several clusters can share one bucket.
    pub prefix: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".to_string(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            bucket_lookup: BucketLookup::Path,
            allow_http: false,
            prefix: String::new(),
        }
    }
}

impl S3Config {
    /// `s3://bucket/prefix` plus the endpoint, for messages (no secrets).
    pub fn location(&self) -> String {
        let mut s = format!("s3://{}", self.bucket);
        if !self.prefix.trim_matches('/').is_empty() {
            s.push('/');
            s.push_str(self.prefix.trim_matches('/'));
        }
        if !self.endpoint.is_empty() {
            s.push_str(" at ");
            s.push_str(&self.endpoint);
        }
        s
    }

    /// Checks the settings that can be checked without the network.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.bucket.is_empty() {
            return Err("s3.bucket is required when storage.backend is s3".into());
        }
        if !self.endpoint.is_empty() {
            if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
                return Err(format!(
                    "s3.endpoint {:?} must start with http:// or https://",
                    self.endpoint
                ));
            }
            if self.endpoint.starts_with("http://") && !self.allow_http {
                return Err(format!(
                    "s3.endpoint {} is plain http: set s3.allow_http to use it",
                    self.endpoint
                ));
            }
        }
        Ok(())
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Bucket {
    /// Opens an S3-compatible bucket (no request is made; see
    /// [`Bucket::check`]). Credentials come from `cfg`, else from the
    /// `AWS_*` environment variables; none at all is an error (no
    /// instance-metadata probing).
    pub fn s3(cfg: &S3Config) -> Result<Self> {
        cfg.validate()
            .map_err(|message| crate::Error::S3Config { message })?;
        // reqwest is built with `rustls-no-provider`: the process needs a
        // default crypto provider before the first client is made.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key_id = if cfg.access_key_id.is_empty() {
            env_nonempty("AWS_ACCESS_KEY_ID")
        } else {
            Some(cfg.access_key_id.clone())
        };
        let secret = if cfg.secret_access_key.is_empty() {
            env_nonempty("AWS_SECRET_ACCESS_KEY")
        } else {
            Some(cfg.secret_access_key.expose().to_string())
        };
        let (Some(key_id), Some(secret)) = (key_id, secret) else {
            return Err(crate::Error::S3Config {
                message: format!(
                    "no credentials for {}: set s3.access_key_id and s3.secret_access_key \
                     (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                    cfg.location()
                ),
            });
        };
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        };
        let client = ClientOptions::new()
            .with_allow_http(cfg.allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            })
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_allow_http(cfg.allow_http)
            .with_virtual_hosted_style_request(cfg.bucket_lookup == BucketLookup::VirtualHosted)
            .with_retry(retry)
            .with_client_options(client);
        if let Some(token) =
            env_nonempty("AWS_SESSION_TOKEN").filter(|_| cfg.access_key_id.is_empty())
        {
            b = b.with_token(token);
        }
        if !cfg.endpoint.is_empty() {
            b = b.with_endpoint(cfg.endpoint.trim_end_matches('/'));
        }
        let store = b.build().context(StoreSnafu {
            op: "open",
            key: cfg.location(),
        })?;
        let mut bucket = Bucket::from_store(Arc::new(store)).with_prefix(&cfg.prefix);
        bucket.location = cfg.location();
        Ok(bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_shown() {
        let c = S3Config {
            bucket: "b".into(),
            secret_access_key: Secret::new("hunter2"),
            ..S3Config::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains(REDACTED));
        let back: S3Config =
            serde_json::from_str(r#"{"bucket":"b","secret_access_key":"x"}"#).unwrap();
        assert_eq!(back.secret_access_key.expose(), "x");
    }

    #[test]
    fn validation() {
        assert!(S3Config::default().validate().is_err());
        let mut c = S3Config {
            bucket: "b".into(),
            endpoint: "http://127.0.0.1:1".into(),
            ..S3Config::default()
        };
        assert!(c.validate().unwrap_err().contains("allow_http"));
        c.allow_http = true;
        c.validate().unwrap();
        c.endpoint = "127.0.0.1:1".into();
        assert!(c.validate().is_err());
    }
}
