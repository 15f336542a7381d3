//! The ring's stored model: one [`InstanceDesc`] per instance, its key
//! layout in the KV store and its value encoding.
//!
//! Key layout: `/stratus/rings/<ring>/<instance-id>` (see [`instance_key`]),
//! one key per instance, so an instance's heartbeat never contends with
//! another instance's writes; only the instance itself and an operator's
//! "forget" touch a key, both by compare-and-swap on its version.
//!
//! Value encoding: JSON (readable with `etcdctl get --prefix
//! /stratus/rings/`), with a `format` field, currently 1; decoders refuse
//! other formats and ignore unknown fields so new optional fields can be
//! added without a format change:
//!
//! ```json
//! {"format":1,"id":"ingester-1","addr":"10.0.0.1:9095","http_addr":"10.0.0.1:9090",
//!  "zone":"a","state":"ACTIVE","tokens":[12,99,...],
//!  "registered_at_ms":1700000000000,"heartbeat_ms":1700000005000}
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::error::{CodecSnafu, Error, Result};

/// Root of all ring keys.
pub const KEY_ROOT: &str = "/stratus/rings/";

/// Current value format version.
pub const FORMAT_VERSION: u32 = 1;

/// The key prefix of ring `ring`: `/stratus/rings/<ring>/`.
pub fn ring_prefix(ring: &str) -> String {
    format!("{KEY_ROOT}{ring}/")
}

/// The key of instance `id` in ring `ring`.
pub fn instance_key(ring: &str, id: &str) -> String {
    format!("{KEY_ROOT}{ring}/{id}")
}

/// Checks a ring name or instance id: non-empty, at most 128 bytes of
/// `[A-Za-z0-9._:-]` (it becomes one path segment of a key).
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            message: format!("{what} {name:?} must be 1-128 characters of [A-Za-z0-9._:-]"),
        })
    }
}

/// Lifecycle state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Registered without tokens (not used by the lifecycler today; read
    /// for compatibility).
    Pending,
    /// Has tokens but is not ready to take writes yet (e.g. replaying its WAL).
    Joining,
    /// Serving reads and writes.
    Active,
    /// Shutting down: still readable, no longer written to.
    Leaving,
}

impl InstanceState {
    /// Upper-case name as shown on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "PENDING",
            InstanceState::Joining => "JOINING",
            InstanceState::Active => "ACTIVE",
            InstanceState::Leaving => "LEAVING",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance of a ring as stored in the KV store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDesc {
    /// Unique id within the ring (also the last key segment).
    pub id: String,
    /// gRPC address, `host:port`.
    pub addr: String,
    /// HTTP address, `host:port` (may be empty).
    #[serde(default)]
    pub http_addr: String,
    /// Availability zone; empty when zones are not used.
    #[serde(default)]
    pub zone: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Ring tokens, sorted ascending, unique.
    #[serde(default)]
    pub tokens: Vec<u32>,
    /// When the instance first registered (Unix milliseconds).
    #[serde(default)]
    pub registered_at_ms: u64,
    /// Last heartbeat (Unix milliseconds).
    pub heartbeat_ms: u64,
}

#[derive(Serialize)]
struct EncodeEntry<'a> {
    format: u32,
    #[serde(flatten)]
    desc: &'a InstanceDesc,
}

#[derive(Deserialize)]
struct DecodeEntry {
    format: u32,
    #[serde(flatten)]
    desc: InstanceDesc,
}

impl InstanceDesc {
    /// Encodes the value stored at the instance's key.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain strings, integers and a unit enum cannot fail.
        serde_json::to_vec(&EncodeEntry {
            format: FORMAT_VERSION,
            desc: self,
        })
        .unwrap_or_default()
    }

    /// Decodes a stored value; `key` names the entry in errors.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        let e: DecodeEntry = serde_json::from_slice(bytes).context(CodecSnafu { key })?;
        if e.format != FORMAT_VERSION {
            return Err(Error::CodecVersion {
                key: key.to_string(),
                version: e.format,
            });
        }
        let mut desc = e.desc;
        desc.tokens.sort_unstable();
        desc.tokens.dedup();
        Ok(desc)
    }

    /// Time since the last heartbeat at `now_ms` (zero if in the future).
    pub fn heartbeat_age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.heartbeat_ms))
    }

    /// Whether the last heartbeat is at most `timeout` old at `now_ms`.
    pub fn heartbeat_fresh(&self, now_ms: u64, timeout: Duration) -> bool {
        self.heartbeat_age(now_ms) <= timeout
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_version() {
        let d = InstanceDesc {
            id: "i-1".into(),
            addr: "127.0.0.1:9095".into(),
            http_addr: "127.0.0.1:9090".into(),
            zone: "a".into(),
            state: InstanceState::Active,
            tokens: vec![5, 1, 3],
            registered_at_ms: 1,
            heartbeat_ms: 2,
        };
        let bytes = d.encode();
        let s = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            s.contains("\"format\":1") && s.contains("\"ACTIVE\""),
            "{s}"
        );
        let back = InstanceDesc::decode("k", &bytes).unwrap();
        assert_eq!(back.tokens, vec![1, 3, 5]);
        let bad = s.replace("\"format\":1", "\"format\":9");
        assert!(matches!(
            InstanceDesc::decode("k", bad.as_bytes()),
            Err(Error::CodecVersion { version: 9, .. })
        ));
        assert!(InstanceDesc::decode("k", b"{not json").is_err());
        // Unknown fields are ignored.
        let extra = s.replace("\"format\":1", "\"format\":1,\"new_field\":true");
        assert!(InstanceDesc::decode("k", extra.as_bytes()).is_ok());
    }

    #[test]
    fn names() {
        assert!(validate_name("id", "ingester-1.zone_a:x").is_ok());
        assert!(validate_name("id", "").is_err());
        assert!(validate_name("id", "a/b").is_err());
        assert_eq!(instance_key("ingester", "i1"), "/stratus/rings/ingester/i1");
    }
}
