//! [`KvRegistry`]: the tenant registry shared by every node of a cluster
//! through the ring's [`Kv`] store (etcd), so a token made on one node
//! authenticates on all of them and limits are the same everywhere.
//!
//! # Layout
//!
//! One key per object under [`REGISTRY_PREFIX`], each a JSON value with a
//! format version (`"format": 1`):
//!
//! - `tenants/<id>`: `{"format":1,"uid":"<16 hex>","tenant":{"created":…,"plan":…,"limits":{…}}}`
//! - `tokens/<sha256 hex>`: `{"format":1,"tenant_uid":"…","token":{"id":"tok_…","name":…,"kind":"tenant","tenant":"a","sha256":…,"created":…}}`
//!   — the digest only, never the secret (as [`stratus_tenancy::FileRegistry`]).
//! - `plans/<name>`: `{"format":1,"limits":{…}}`
//! - `bootstrap`: `{"format":1,"node":…,"started":…,"done":true}`
//!
//! All objects share one prefix so one watch and one listing see them at
//! one store revision. A tenant's `uid` is random per creation and
//! copied into its tokens: a token authenticates only while its tenant
//! exists with the same uid, so a token created concurrently with the
//! tenant's deletion cannot come back to life when the id is reused.
//!
//! # Reads and writes
//!
//! Lookups ([`Registry::authenticate`], limits, listings) are served from
//! an in-memory copy kept current by a prefix watch: open the watch, list,
//! apply events newer than what is known, re-open and re-list with backoff
//! when the watch breaks (as [`stratus_ring::Ring`] does). Every write is
//! a compare-and-swap on one key, decided by what the store holds now (the
//! keys a write depends on are read from the store, not from the copy),
//! and returns only after the store accepted it; its result is applied to
//! the local copy at once (read-your-writes on this node; other nodes see
//! it within the watch latency). Deletions leave a tombstone until the
//! watch has passed them, so a late watch event cannot resurrect a
//! revoked token on this node.
//!
//! Cross-object rules are checked per key, without multi-key
//! transactions: a tenant deleted while a token for it is created leaves
//! an orphan token that never authenticates (uid mismatch) and is removed
//! by the next deletion of that tenant id; a plan removed while a tenant
//! is moved to it counts as an empty plan.
//!
//! The [`Registry`] trait is synchronous: writes run on the runtime given
//! at [`KvRegistry::start`] and the calling thread waits for them (the
//! admin API calls them on the blocking pool). Calling a write from a
//! task of a current-thread runtime would block that runtime; use
//! `spawn_blocking` there.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use stratus_model::TenantId;
use stratus_ring::{CasOutcome, Kv, Listing, Precondition, Versioned, WatchEvent, WatchStream};
use stratus_tenancy::{
    DEFAULT_TENANT, Error, Limits, NewToken, Principal, Registry, Result, TenantInfo, TenantRecord,
    TenantUpdate, TokenHash, TokenInfo, TokenRecord, TokenScope, create_private_dir, ct_eq,
    hash_token, now_secs, random_hex, validate_limits, validate_plan_name, validate_token_name,
    write_private,
};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Where the registry lives in the store.
pub const REGISTRY_PREFIX: &str = "/stratus/registry/";

/// Format version of every value.
const FORMAT: u32 = 1;

/// Attempts of a read-modify-write before giving up on conflicts.
const CAS_ATTEMPTS: usize = 10;

/// A bootstrap claim older than this, never finished, may be taken over
/// (the node that claimed it died half-way).
const BOOTSTRAP_STALE_SECS: u64 = 60;

fn tenant_key(id: &str) -> String {
    format!("{REGISTRY_PREFIX}tenants/{id}")
}

fn token_key(sha256_hex: &str) -> String {
    format!("{REGISTRY_PREFIX}tokens/{sha256_hex}")
}

fn plan_key(name: &str) -> String {
    format!("{REGISTRY_PREFIX}plans/{name}")
}

fn bootstrap_key() -> String {
    format!("{REGISTRY_PREFIX}bootstrap")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTenant {
    format: u32,
    uid: String,
    tenant: TenantRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    format: u32,
    /// The uid of the tenant of a tenant token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant_uid: Option<String>,
    token: TokenRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredPlan {
    format: u32,
    limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredBootstrap {
    format: u32,
    node: String,
    started: u64,
    done: bool,
}

/// One decoded object of the registry.
#[derive(Debug, Clone, PartialEq)]
enum Obj {
    Tenant(String, StoredTenant),
    Token(TokenHash, StoredToken),
    Plan(String, Limits),
    /// Keys the registry does not index (bootstrap, unknown kinds).
    Other,
}

fn store_err(message: impl Into<String>) -> Error {
    Error::Store {
        message: message.into(),
    }
}

fn kv_err(op: &str, key: &str, e: stratus_ring::Error) -> Error {
    store_err(format!("{op} {key}: {e}"))
}

fn not_found(what: String) -> Error {
    Error::NotFound { what }
}

fn invalid(message: String) -> Error {
    Error::Invalid { message }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| invalid(e.to_string()))
}

fn check_format(key: &str, format: u32) -> Result<(), String> {
    if format == FORMAT {
        Ok(())
    } else {
        Err(format!("{key}: unsupported format version {format}"))
    }
}

/// Decodes the value at `key` (an error names the key).
fn decode(key: &str, bytes: &[u8]) -> Result<Obj, String> {
    let Some(rest) = key.strip_prefix(REGISTRY_PREFIX) else {
        return Ok(Obj::Other);
    };
    let bad = |e: serde_json::Error| format!("{key}: {e}");
    if let Some(id) = rest.strip_prefix("tenants/") {
        let t: StoredTenant = serde_json::from_slice(bytes).map_err(bad)?;
        check_format(key, t.format)?;
        TenantId::new(id).map_err(|e| format!("{key}: {e}"))?;
        t.tenant
            .limits
            .validate()
            .map_err(|e| format!("{key}: {e}"))?;
        return Ok(Obj::Tenant(id.to_string(), t));
    }
    if let Some(hex) = rest.strip_prefix("tokens/") {
        let t: StoredToken = serde_json::from_slice(bytes).map_err(bad)?;
        check_format(key, t.format)?;
        let h = t
            .token
            .hash()
            .filter(|_| t.token.sha256.eq_ignore_ascii_case(hex))
            .ok_or_else(|| format!("{key}: digest does not match the key"))?;
        if t.token.principal().is_none() {
            return Err(format!("{key}: bad kind or tenant"));
        }
        return Ok(Obj::Token(h, t));
    }
    if let Some(name) = rest.strip_prefix("plans/") {
        let p: StoredPlan = serde_json::from_slice(bytes).map_err(bad)?;
        check_format(key, p.format)?;
        p.limits.validate().map_err(|e| format!("{key}: {e}"))?;
        return Ok(Obj::Plan(name.to_string(), p.limits));
    }
    Ok(Obj::Other)
}

/// The indexes lookups use, rebuilt from the entries after each change.
#[derive(Debug, Default)]
struct View {
    /// tenant id → (uid, record).
    tenants: BTreeMap<String, (String, TenantRecord)>,
    plans: BTreeMap<String, Limits>,
    /// digest → (record, principal); only tokens that authenticate.
    by_hash: HashMap<TokenHash, Principal>,
    /// All token records (orphans included), by token id.
    tokens: BTreeMap<String, (TokenHash, TokenRecord)>,
}

impl View {
    fn build(entries: &BTreeMap<String, (Obj, i64)>) -> View {
        let mut v = View::default();
        for (obj, _) in entries.values() {
            match obj {
                Obj::Tenant(id, t) => {
                    v.tenants
                        .insert(id.clone(), (t.uid.clone(), t.tenant.clone()));
                }
                Obj::Plan(name, l) => {
                    v.plans.insert(name.clone(), l.clone());
                }
                Obj::Token(..) | Obj::Other => {}
            }
        }
        for (obj, _) in entries.values() {
            let Obj::Token(h, t) = obj else { continue };
            v.tokens.insert(t.token.id.clone(), (*h, t.token.clone()));
            let Some(p) = t.token.principal() else {
                continue;
            };
            let live = match &p {
                Principal::Admin { .. } => true,
                Principal::Tenant { tenant, .. } => v
                    .tenants
                    .get(tenant.as_str())
                    .is_some_and(|(uid, _)| t.tenant_uid.as_deref() == Some(uid.as_str())),
            };
            if live {
                v.by_hash.insert(*h, p);
            }
        }
        v
    }

    fn tenant_info(&self, id: &str, t: &TenantRecord) -> TenantInfo {
        TenantInfo {
            id: id.to_string(),
            created: t.created,
            plan: t.plan.clone(),
            limits: t.limits.clone(),
            tokens: self
                .tokens
                .values()
                .filter(|(h, r)| r.tenant.as_deref() == Some(id) && self.by_hash.contains_key(h))
                .count(),
        }
    }
}

/// The local copy: decoded entries with their versions, tombstones of
/// recent deletions, and the indexes.
#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, (Obj, i64)>,
    /// key → revision of a deletion the watch has not shown yet.
    tombstones: BTreeMap<String, i64>,
    /// Highest revision seen from the watch or a listing.
    watched: i64,
    view: Arc<View>,
}

impl State {
    /// Applies a change; true when the copy changed.
    fn apply(&mut self, ev: &WatchEvent) -> bool {
        match ev {
            WatchEvent::Put { key, value } => {
                if self
                    .entries
                    .get(key)
                    .is_some_and(|(_, v)| *v >= value.version)
                    || self
                        .tombstones
                        .get(key)
                        .is_some_and(|r| *r >= value.version)
                {
                    return false;
                }
                match decode(key, &value.value) {
                    Ok(obj) => {
                        self.tombstones.remove(key);
                        self.entries.insert(key.clone(), (obj, value.version));
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring undecodable registry entry");
                        self.entries.remove(key).is_some()
                    }
                }
            }
            WatchEvent::Delete { key, revision } => {
                if self.entries.get(key).is_some_and(|(_, v)| v >= revision) {
                    return false;
                }
                let t = self.tombstones.entry(key.clone()).or_insert(*revision);
                *t = (*t).max(*revision);
                self.entries.remove(key).is_some()
            }
        }
    }

    /// Notes that the watch reached `revision`: older tombstones are no
    /// longer needed.
    fn watched_to(&mut self, revision: i64) {
        self.watched = self.watched.max(revision);
        let w = self.watched;
        self.tombstones.retain(|_, r| *r > w);
    }

    /// Replaces the copy with a listing, keeping local changes newer than it.
    fn replace(&mut self, listing: Listing) {
        let mut entries = BTreeMap::new();
        for (key, v) in listing.entries {
            match decode(&key, &v.value) {
                Ok(obj) => {
                    entries.insert(key, (obj, v.version));
                }
                Err(e) => tracing::warn!(error = %e, "skipping undecodable registry entry"),
            }
        }
        let newer: Vec<(String, (Obj, i64))> = self
            .entries
            .iter()
            .filter(|(_, (_, v))| *v > listing.revision)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        entries.extend(newer);
        for (k, r) in &self.tombstones {
            if *r > listing.revision && entries.get(k).is_some_and(|(_, v)| v < r) {
                entries.remove(k);
            }
        }
        self.entries = entries;
        self.watched = listing.revision;
        let w = self.watched;
        self.tombstones.retain(|_, r| *r > w);
    }

    fn rebuild(&mut self) {
        self.view = Arc::new(View::build(&self.entries));
    }
}

/// Shared between the registry handle, its watch task and its writes.
#[derive(Debug)]
struct Inner {
    kv: Arc<dyn Kv>,
    state: RwLock<State>,
    generation: AtomicU64,
    timeout: Duration,
}

impl Inner {
    fn view(&self) -> Arc<View> {
        Arc::clone(&self.state.read().view)
    }

    /// Applies changes seen by this process (its own writes or reads).
    fn apply_local(&self, evs: &[WatchEvent]) {
        let mut st = self.state.write();
        let mut changed = false;
        for ev in evs {
            changed |= st.apply(ev);
        }
        if changed {
            st.rebuild();
        }
    }

    fn put_event(key: &str, value: Vec<u8>, version: i64) -> WatchEvent {
        WatchEvent::Put {
            key: key.to_string(),
            value: Versioned { value, version },
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        self.kv.get(key).await.map_err(|e| kv_err("get", key, e))
    }

    async fn put(&self, key: &str, value: Vec<u8>, cond: Precondition) -> Result<CasOutcome> {
        let out = self
            .kv
            .put(key, value.clone(), cond)
            .await
            .map_err(|e| kv_err("put", key, e))?;
        if let CasOutcome::Done { version } = out {
            self.apply_local(&[Self::put_event(key, value, version)]);
        }
        Ok(out)
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<CasOutcome> {
        let out = self
            .kv
            .delete(key, cond)
            .await
            .map_err(|e| kv_err("delete", key, e))?;
        if let CasOutcome::Done { version } = out {
            self.apply_local(&[WatchEvent::Delete {
                key: key.to_string(),
                revision: version,
            }]);
        }
        Ok(out)
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.kv
            .list(prefix)
            .await
            .map_err(|e| kv_err("list", prefix, e))
    }

    /// The tenant as the store holds it now.
    async fn stored_tenant(&self, id: &str) -> Result<Option<(StoredTenant, i64)>> {
        let key = tenant_key(id);
        match self.get(&key).await? {
            None => Ok(None),
            Some(v) => match decode(&key, &v.value) {
                Ok(Obj::Tenant(_, t)) => Ok(Some((t, v.version))),
                Ok(_) => Ok(None),
                Err(e) => Err(store_err(e)),
            },
        }
    }

    async fn plan_exists(&self, name: &str) -> Result<bool> {
        Ok(self.get(&plan_key(name)).await?.is_some())
    }

    async fn create_tenant(
        &self,
        id: TenantId,
        plan: Option<String>,
        limits: Limits,
    ) -> Result<TenantInfo> {
        if let Some(p) = &plan
            && !self.plan_exists(p).await?
        {
            return Err(not_found(format!("plan {p:?}")));
        }
        let stored = StoredTenant {
            format: FORMAT,
            uid: random_hex(8)?,
            tenant: TenantRecord {
                created: now_secs(),
                plan,
                limits,
            },
        };
        let key = tenant_key(id.as_str());
        match self
            .put(&key, encode(&stored)?, Precondition::Absent)
            .await?
        {
            CasOutcome::Done { .. } => Ok(self.view().tenant_info(id.as_str(), &stored.tenant)),
            CasOutcome::Conflict { .. } => Err(Error::Exists {
                what: format!("tenant {id}"),
            }),
        }
    }

    async fn update_tenant(&self, id: TenantId, update: TenantUpdate) -> Result<TenantInfo> {
        if let Some(Some(p)) = &update.plan
            && !self.plan_exists(p).await?
        {
            return Err(not_found(format!("plan {p:?}")));
        }
        let key = tenant_key(id.as_str());
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut stored, version)) = self.stored_tenant(id.as_str()).await? else {
                return Err(not_found(format!("tenant {id}")));
            };
            let t = &mut stored.tenant;
            if let Some(p) = &update.plan {
                t.plan.clone_from(p);
            }
            if let Some(l) = &update.limits {
                t.limits = if update.replace_limits {
                    l.clone()
                } else {
                    t.limits.overlay(l)
                };
            }
            validate_limits(&t.limits)?;
            match self
                .put(&key, encode(&stored)?, Precondition::Version(version))
                .await?
            {
                CasOutcome::Done { .. } => {
                    return Ok(self.view().tenant_info(id.as_str(), &stored.tenant));
                }
                CasOutcome::Conflict { .. } => continue,
            }
        }
        Err(store_err(format!(
            "tenant {id}: gave up after {CAS_ATTEMPTS} conflicting updates"
        )))
    }

    /// Deletes the tokens of tenant `id` (all of them, orphans included).
    async fn delete_tokens_of(&self, id: &str) -> Result<()> {
        let prefix = token_key("");
        let listing = self.list(&prefix).await?;
        for (key, v) in listing.entries {
            if let Ok(Obj::Token(_, t)) = decode(&key, &v.value)
                && t.token.tenant.as_deref() == Some(id)
            {
                // A conflict means it changed or went meanwhile: either
                // way it is not ours to remove blindly.
                self.delete(&key, Precondition::Version(v.version)).await?;
            }
        }
        Ok(())
    }

    async fn delete_tenant(&self, id: TenantId) -> Result<TenantInfo> {
        let key = tenant_key(id.as_str());
        for _ in 0..CAS_ATTEMPTS {
            let Some((stored, version)) = self.stored_tenant(id.as_str()).await? else {
                return Err(not_found(format!("tenant {id}")));
            };
            let info = self.view().tenant_info(id.as_str(), &stored.tenant);
            match self.delete(&key, Precondition::Version(version)).await? {
                CasOutcome::Done { .. } => {
                    // The tenant is gone, so its tokens no longer
                    // authenticate; removing them is cleanup.
                    self.delete_tokens_of(id.as_str()).await?;
                    return Ok(info);
                }
                CasOutcome::Conflict { .. } => continue,
            }
        }
        Err(store_err(format!(
            "tenant {id}: gave up after {CAS_ATTEMPTS} conflicting updates"
        )))
    }

    /// Stores a token record (for `scope`); `Absent` unless `idempotent`
    /// (an operator-provided token may already be there).
    async fn store_token(
        &self,
        scope: &TokenScope,
        rec: TokenRecord,
        idempotent: bool,
    ) -> Result<()> {
        let tenant_uid = match scope {
            TokenScope::Admin => None,
            TokenScope::Tenant(t) => match self.stored_tenant(t.as_str()).await? {
                Some((s, _)) => Some(s.uid),
                None => return Err(not_found(format!("tenant {t}"))),
            },
        };
        let key = token_key(&rec.sha256);
        let stored = StoredToken {
            format: FORMAT,
            tenant_uid,
            token: rec,
        };
        match self
            .put(&key, encode(&stored)?, Precondition::Absent)
            .await?
        {
            CasOutcome::Done { .. } => Ok(()),
            CasOutcome::Conflict { current } => {
                if let Some(v) = current {
                    // Learn it (the watch may not have shown it yet).
                    self.apply_local(&[Self::put_event(&key, v.value, v.version)]);
                }
                if idempotent {
                    Ok(())
                } else {
                    // Two random 32-byte secrets colliding: not in practice.
                    Err(store_err("token digest already registered"))
                }
            }
        }
    }

    async fn revoke_token(&self, id: String) -> Result<TokenInfo> {
        // The copy may not know a token made on another node a moment
        // ago: look in the store then.
        let known = self.view().tokens.get(&id).map(|(_, r)| r.sha256.clone());
        let sha = match known {
            Some(s) => s,
            None => {
                let listing = self.list(&token_key("")).await?;
                listing
                    .entries
                    .iter()
                    .find_map(|(k, v)| match decode(k, &v.value) {
                        Ok(Obj::Token(_, t)) if t.token.id == id => Some(t.token.sha256),
                        _ => None,
                    })
                    .ok_or_else(|| not_found(format!("token {id:?}")))?
            }
        };
        let key = token_key(&sha);
        for _ in 0..CAS_ATTEMPTS {
            let Some(v) = self.get(&key).await? else {
                return Err(not_found(format!("token {id:?}")));
            };
            let rec = match decode(&key, &v.value) {
                Ok(Obj::Token(_, t)) if t.token.id == id => t.token,
                _ => return Err(not_found(format!("token {id:?}"))),
            };
            match self.delete(&key, Precondition::Version(v.version)).await? {
                CasOutcome::Done { .. } => return Ok(rec.info()),
                CasOutcome::Conflict { .. } => continue,
            }
        }
        Err(store_err(format!(
            "token {id:?}: gave up after {CAS_ATTEMPTS} conflicting updates"
        )))
    }

    async fn set_plan(&self, name: String, limits: Option<Limits>) -> Result<()> {
        let key = plan_key(&name);
        match limits {
            Some(limits) => {
                let v = encode(&StoredPlan {
                    format: FORMAT,
                    limits,
                })?;
                self.put(&key, v, Precondition::Any).await?;
                Ok(())
            }
            None => {
                let Some(v) = self.get(&key).await? else {
                    return Err(not_found(format!("plan {name:?}")));
                };
                let tenants = self.list(&tenant_key("")).await?;
                for (k, tv) in &tenants.entries {
                    if let Ok(Obj::Tenant(id, t)) = decode(k, &tv.value)
                        && t.tenant.plan.as_deref() == Some(name.as_str())
                    {
                        return Err(invalid(format!("plan {name:?} is used by tenant {id:?}")));
                    }
                }
                match self.delete(&key, Precondition::Version(v.version)).await? {
                    CasOutcome::Done { .. } => Ok(()),
                    CasOutcome::Conflict { current: None } => {
                        Err(not_found(format!("plan {name:?}")))
                    }
                    CasOutcome::Conflict { current: Some(_) } => {
                        Err(store_err(format!("plan {name:?} changed meanwhile; retry")))
                    }
                }
            }
        }
    }
}

/// Stops the watch task when the last handle goes.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`KvRegistry::bootstrap`] created on the node that won it.
#[derive(Debug)]
pub struct KvBootstrapped {
    /// The file holding the admin token (`None` when the operator
    /// provides the admin token).
    pub admin_file: Option<PathBuf>,
    /// The file holding the token of tenant `default`.
    pub default_file: PathBuf,
}

/// The tenant registry in a shared [`Kv`] store (see the module docs).
#[derive(Debug, Clone)]
pub struct KvRegistry {
    inner: Arc<Inner>,
    rt: Handle,
    _task: Arc<TaskGuard>,
}

impl KvRegistry {
    /// Reads the registry from `kv` and starts following it. Returns once
    /// the first listing is in (an error if the store cannot be reached).
    /// Must be called within a Tokio runtime; writes run on it.
    pub async fn start(kv: Arc<dyn Kv>) -> Result<KvRegistry> {
        Self::start_with_timeout(kv, Duration::from_secs(10)).await
    }

    /// [`KvRegistry::start`] with the time a write may take before it
    /// fails with [`Error::Store`].
    pub async fn start_with_timeout(kv: Arc<dyn Kv>, timeout: Duration) -> Result<KvRegistry> {
        let stream = kv
            .watch(REGISTRY_PREFIX)
            .await
            .map_err(|e| kv_err("watch", REGISTRY_PREFIX, e))?;
        let listing = kv
            .list(REGISTRY_PREFIX)
            .await
            .map_err(|e| kv_err("list", REGISTRY_PREFIX, e))?;
        let mut st = State::default();
        st.replace(listing);
        st.rebuild();
        let inner = Arc::new(Inner {
            kv,
            state: RwLock::new(st),
            generation: AtomicU64::new(1),
            timeout,
        });
        let task = tokio::spawn(follow(Arc::downgrade(&inner), stream));
        Ok(KvRegistry {
            inner,
            rt: Handle::current(),
            _task: Arc::new(TaskGuard(task)),
        })
    }

    /// Runs a write on the runtime, waits for it (bounded by the timeout).
    fn block<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Inner>) -> futures::future::BoxFuture<'static, Result<T>>,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        let timeout = inner.timeout;
        let fut = f(inner);
        let job = self.rt.spawn(async move {
            tokio::time::timeout(timeout, fut)
                .await
                .unwrap_or_else(|_| Err(store_err(format!("no answer within {timeout:?}"))))
        });
        let wait = || futures::executor::block_on(job);
        let joined = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        joined.map_err(|e| store_err(format!("registry task failed: {e}")))?
    }

    /// Waits (at most `timeout`) until `pred` holds for this node's copy
    /// (tests and start-up; lookups never wait).
    pub async fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Registers an operator-provided admin token (its digest only) under
    /// an id derived from the digest, so every node given the same secret
    /// writes the same record; already registered is fine.
    pub async fn register_admin_token(&self, secret: &str) -> Result<TokenInfo> {
        let secret = secret.trim();
        if secret.len() < 16 || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "admin token: at least 16 characters, no whitespace".into(),
            ));
        }
        let rec = TokenRecord::from_secret(&TokenScope::Admin, "admin (provided)", secret);
        let info = rec.info();
        self.inner
            .store_token(&TokenScope::Admin, rec, true)
            .await?;
        Ok(info)
    }

    /// On an empty store, exactly once per cluster: creates tenant
    /// `default`, a token for it and (unless `admin_provided`) an admin
    /// token, writing the secrets to `<tokens_dir>/default.token` and
    /// `<tokens_dir>/admin.token` on this node. Nodes race by
    /// compare-and-swap on the `bootstrap` key; `None` on every node but
    /// the winner, and once done. A claim left unfinished for a minute
    /// (its node died) is taken over.
    pub async fn bootstrap(
        &self,
        node: &str,
        tokens_dir: &Path,
        admin_provided: bool,
    ) -> Result<Option<KvBootstrapped>> {
        let inner = &self.inner;
        let key = bootstrap_key();
        let claim = encode(&StoredBootstrap {
            format: FORMAT,
            node: node.to_string(),
            started: now_secs(),
            done: false,
        })?;
        let cond = match inner.get(&key).await? {
            None => Precondition::Absent,
            Some(v) => {
                let b: StoredBootstrap = serde_json::from_slice(&v.value)
                    .map_err(|e| store_err(format!("{key}: {e}")))?;
                if b.done || now_secs().saturating_sub(b.started) < BOOTSTRAP_STALE_SECS {
                    return Ok(None);
                }
                tracing::warn!(
                    node = b.node,
                    "taking over an unfinished registry bootstrap"
                );
                Precondition::Version(v.version)
            }
        };
        let version = match inner.put(&key, claim, cond).await? {
            CasOutcome::Done { version } => version,
            CasOutcome::Conflict { .. } => return Ok(None),
        };
        let default = TenantId::new(DEFAULT_TENANT).map_err(|e| invalid(e.to_string()))?;
        match inner
            .create_tenant(default.clone(), None, Limits::default())
            .await
        {
            Ok(_) | Err(Error::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
        // Secrets reach the files before their records reach the store.
        create_private_dir(tokens_dir)?;
        let scope = TokenScope::Tenant(default);
        let (def_rec, def) = TokenRecord::mint(&scope, DEFAULT_TENANT)?;
        let default_file = tokens_dir.join("default.token");
        write_private(&default_file, format!("{}\n", def.token).as_bytes())?;
        inner.store_token(&scope, def_rec, false).await?;
        let mut admin_file = None;
        if !admin_provided {
            let (rec, admin) = TokenRecord::mint(&TokenScope::Admin, "admin")?;
            let f = tokens_dir.join("admin.token");
            write_private(&f, format!("{}\n", admin.token).as_bytes())?;
            inner.store_token(&TokenScope::Admin, rec, false).await?;
            admin_file = Some(f);
        }
        let done = encode(&StoredBootstrap {
            format: FORMAT,
            node: node.to_string(),
            started: now_secs(),
            done: true,
        })?;
        inner
            .put(&key, done, Precondition::Version(version))
            .await?;
        Ok(Some(KvBootstrapped {
            admin_file,
            default_file,
        }))
    }
}

/// Follows the store: applies watch events, re-lists on a broken watch.
async fn follow(inner: std::sync::Weak<Inner>, stream: WatchStream) {
    let mut stream = Some(stream);
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(mut s) = stream.take() {
            while let Some(item) = s.next().await {
                let Some(inner) = inner.upgrade() else { return };
                match item {
                    Ok(ev) => {
                        backoff = Duration::from_millis(100);
                        let mut st = inner.state.write();
                        let rev = ev.revision();
                        let changed = st.apply(&ev);
                        st.watched_to(rev);
                        if changed {
                            st.rebuild();
                            drop(st);
                            inner.generation.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registry watch broke; re-listing");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let Some(inner) = inner.upgrade() else { return };
        let s = match inner.kv.watch(REGISTRY_PREFIX).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "registry watch failed");
                continue;
            }
        };
        match inner.kv.list(REGISTRY_PREFIX).await {
            Ok(listing) => {
                let mut st = inner.state.write();
                st.replace(listing);
                st.rebuild();
                drop(st);
                inner.generation.fetch_add(1, Ordering::Relaxed);
                stream = Some(s);
            }
            Err(e) => tracing::warn!(error = %e, "registry list failed"),
        }
    }
}

impl Registry for KvRegistry {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        let h = hash_token(token);
        let st = self.inner.state.read();
        let (stored, p) = st.view.by_hash.get_key_value(&h)?;
        ct_eq(stored, &h).then(|| p.clone())
    }

    fn tenant(&self, id: &TenantId) -> Option<TenantInfo> {
        let v = self.inner.view();
        let (_, t) = v.tenants.get(id.as_str())?;
        Some(v.tenant_info(id.as_str(), t))
    }

    fn tenants(&self) -> Vec<TenantInfo> {
        let v = self.inner.view();
        v.tenants
            .iter()
            .map(|(id, (_, t))| v.tenant_info(id, t))
            .collect()
    }

    fn create_tenant(
        &self,
        id: &TenantId,
        plan: Option<String>,
        limits: Limits,
    ) -> Result<TenantInfo> {
        validate_limits(&limits)?;
        let id = id.clone();
        self.block(move |i| Box::pin(async move { i.create_tenant(id, plan, limits).await }))
    }

    fn update_tenant(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo> {
        if let Some(l) = &update.limits {
            validate_limits(l)?;
        }
        let id = id.clone();
        self.block(move |i| Box::pin(async move { i.update_tenant(id, update).await }))
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<TenantInfo> {
        let id = id.clone();
        self.block(move |i| Box::pin(async move { i.delete_tenant(id).await }))
    }

    fn create_token(&self, scope: TokenScope, name: &str) -> Result<NewToken> {
        validate_token_name(name)?;
        let (rec, nt) = TokenRecord::mint(&scope, name)?;
        self.block(move |i| Box::pin(async move { i.store_token(&scope, rec, false).await }))?;
        Ok(nt)
    }

    fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let id = id.to_string();
        self.block(move |i| Box::pin(async move { i.revoke_token(id).await }))
    }

    fn tokens(&self) -> Vec<TokenInfo> {
        let v = self.inner.view();
        v.tokens
            .values()
            .filter(|(h, r)| r.kind == "admin" || v.by_hash.contains_key(h))
            .map(|(_, r)| r.info())
            .collect()
    }

    fn plans(&self) -> BTreeMap<String, Limits> {
        self.inner.view().plans.clone()
    }

    fn set_plan(&self, name: &str, limits: Option<Limits>) -> Result<()> {
        validate_plan_name(name)?;
        if let Some(l) = &limits {
            validate_limits(l)?;
        }
        let name = name.to_string();
        self.block(move |i| Box::pin(async move { i.set_plan(name, limits).await }))
    }

    fn limits(&self, id: &TenantId) -> Limits {
        let v = self.inner.view();
        let Some((_, t)) = v.tenants.get(id.as_str()) else {
            return Limits::default();
        };
        let plan = t
            .plan
            .as_ref()
            .and_then(|p| v.plans.get(p))
            .cloned()
            .unwrap_or_default();
        plan.overlay(&t.limits)
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_ring::MemKv;

    fn tid(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    async fn pair() -> (Arc<MemKv>, KvRegistry, KvRegistry) {
        let kv = Arc::new(MemKv::new());
        let a = KvRegistry::start(kv.clone()).await.unwrap();
        let b = KvRegistry::start(kv.clone()).await.unwrap();
        (kv, a, b)
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crud_with_read_your_writes() {
        let (kv, a, _) = pair().await;
        let small = Limits {
            ingestion_rate: Some(10.0),
            max_series: Some(100),
            ..Limits::default()
        };
        assert!(matches!(
            a.create_tenant(&tid("t"), Some("small".into()), Limits::default()),
            Err(Error::NotFound { .. })
        ));
        a.set_plan("small", Some(small)).unwrap();
        assert_eq!(a.plans().len(), 1, "own write visible at once");
        let info = a
            .create_tenant(
                &tid("t"),
                Some("small".into()),
                Limits {
                    max_series: Some(5),
                    ..Limits::default()
                },
            )
            .unwrap();
        assert_eq!(info.plan.as_deref(), Some("small"));
        assert!(matches!(
            a.create_tenant(&tid("t"), None, Limits::default()),
            Err(Error::Exists { .. })
        ));
        let l = a.limits(&tid("t"));
        assert_eq!((l.ingestion_rate, l.max_series), (Some(10.0), Some(5)));
        assert!(a.set_plan("small", None).is_err(), "plan in use");

        let tok = a.create_token(TokenScope::Tenant(tid("t")), "ci").unwrap();
        assert!(
            a.create_token(TokenScope::Tenant(tid("nope")), "x")
                .is_err()
        );
        assert!(matches!(
            a.authenticate(&tok.token),
            Some(Principal::Tenant { ref tenant, .. }) if tenant.as_str() == "t"
        ));
        assert_eq!(a.tenant(&tid("t")).unwrap().tokens, 1);
        let admin = a.create_token(TokenScope::Admin, "ops").unwrap();
        assert!(matches!(
            a.authenticate(&admin.token),
            Some(Principal::Admin { .. })
        ));
        assert_eq!(a.tokens().len(), 2);

        // Only digests are stored.
        let listing = kv.list(REGISTRY_PREFIX).await.unwrap();
        for (_, v) in &listing.entries {
            let text = String::from_utf8_lossy(&v.value);
            assert!(!text.contains(&tok.token) && !text.contains(&admin.token));
            assert!(text.contains("\"format\":1"), "{text}");
        }

        a.update_tenant(
            &tid("t"),
            TenantUpdate {
                limits: Some(Limits {
                    max_series_per_metric: Some(3),
                    ..Limits::default()
                }),
                ..TenantUpdate::default()
            },
        )
        .unwrap();
        let l = a.limits(&tid("t"));
        assert_eq!((l.max_series, l.max_series_per_metric), (Some(5), Some(3)));
        a.update_tenant(
            &tid("t"),
            TenantUpdate {
                plan: Some(None),
                limits: Some(Limits::default()),
                replace_limits: true,
            },
        )
        .unwrap();
        assert_eq!(a.limits(&tid("t")), Limits::default());
        a.set_plan("small", None).unwrap();
        assert!(a.plans().is_empty());

        a.revoke_token(&tok.info.id).unwrap();
        assert!(a.authenticate(&tok.token).is_none(), "revoked at once");
        assert!(matches!(
            a.revoke_token(&tok.info.id),
            Err(Error::NotFound { .. })
        ));
        let t2 = a.create_token(TokenScope::Tenant(tid("t")), "two").unwrap();
        a.delete_tenant(&tid("t")).unwrap();
        assert!(a.authenticate(&t2.token).is_none());
        assert!(a.delete_tenant(&tid("t")).is_err());
        assert_eq!(a.tokens().len(), 1, "the admin token stays");
        // The watch events of all this arriving later change nothing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.authenticate(&t2.token).is_none());
        assert!(a.authenticate(&tok.token).is_none());
        assert!(a.tenants().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_propagate_between_instances() {
        let (_, a, b) = pair().await;
        a.create_tenant(&tid("x"), None, Limits::default()).unwrap();
        // B creates a token right after A made the tenant: B checks the
        // store, not its copy.
        let tok = b.create_token(TokenScope::Tenant(tid("x")), "ci").unwrap();
        assert!(b.authenticate(&tok.token).is_some());
        assert!(
            a.wait_for(WAIT, |r| r.authenticate(&tok.token).is_some())
                .await
        );
        let g = a.generation();
        b.update_tenant(
            &tid("x"),
            TenantUpdate {
                limits: Some(Limits {
                    ingestion_rate: Some(7.0),
                    ..Limits::default()
                }),
                ..TenantUpdate::default()
            },
        )
        .unwrap();
        assert!(
            a.wait_for(WAIT, |r| r.limits(&tid("x")).ingestion_rate == Some(7.0))
                .await
        );
        assert!(a.generation() > g, "watched changes bump the generation");
        // A revokes a token it learnt through the watch.
        a.revoke_token(&tok.info.id).unwrap();
        assert!(
            b.wait_for(WAIT, |r| r.authenticate(&tok.token).is_none())
                .await
        );
        // Revoking by id on a node that has not seen the token yet works
        // (it looks in the store).
        let t2 = a.create_token(TokenScope::Tenant(tid("x")), "t2").unwrap();
        b.revoke_token(&t2.info.id).unwrap();
        assert!(
            a.wait_for(WAIT, |r| r.authenticate(&t2.token).is_none())
                .await
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_conflict_or_merge() {
        let (_, a, b) = pair().await;
        // Same tenant created on both: exactly one wins.
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| a.create_tenant(&tid("c"), None, Limits::default()));
            let hb = s.spawn(|| b.create_tenant(&tid("c"), None, Limits::default()));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!(
            [ra.is_ok(), rb.is_ok()].iter().filter(|x| **x).count(),
            1,
            "{ra:?} {rb:?}"
        );
        // Concurrent limit changes both land (CAS retry re-reads).
        std::thread::scope(|s| {
            for (r, i) in [(&a, 0u64), (&b, 1)] {
                s.spawn(move || {
                    for k in 0..20u64 {
                        let l = if i == 0 {
                            Limits {
                                max_series: Some(k + 1),
                                ..Limits::default()
                            }
                        } else {
                            Limits {
                                max_series_per_metric: Some(k + 1),
                                ..Limits::default()
                            }
                        };
                        r.update_tenant(
                            &tid("c"),
                            TenantUpdate {
                                limits: Some(l),
                                ..TenantUpdate::default()
                            },
                        )
                        .unwrap();
                    }
                });
            }
        });
        for r in [&a, &b] {
            assert!(
                r.wait_for(WAIT, |r| {
                    let l = r.limits(&tid("c"));
                    (l.max_series, l.max_series_per_metric) == (Some(20), Some(20))
                })
                .await
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bootstrap_happens_once() {
        let kv = Arc::new(MemKv::new());
        let dir = tempfile::tempdir().unwrap();
        let mut regs = Vec::new();
        for _ in 0..4 {
            regs.push(KvRegistry::start(kv.clone()).await.unwrap());
        }
        let runs = regs.iter().enumerate().map(|(i, r)| {
            let d = dir.path().join(format!("n{i}"));
            async move { r.bootstrap(&format!("n{i}"), &d, false).await.unwrap() }
        });
        let won: Vec<KvBootstrapped> = futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(won.len(), 1);
        let b = &won[0];
        let admin = std::fs::read_to_string(b.admin_file.as_ref().unwrap()).unwrap();
        let default = std::fs::read_to_string(&b.default_file).unwrap();
        for r in &regs {
            assert!(
                r.wait_for(WAIT, |r| r.authenticate(admin.trim()).is_some()
                    && r.authenticate(default.trim()).is_some())
                    .await
            );
            assert_eq!(r.tokens().len(), 2);
            assert_eq!(r.tenants().len(), 1);
            assert!(
                r.bootstrap("late", dir.path(), false)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        // An operator-provided admin token: registered idempotently.
        let secret = "operator-provided-admin-token";
        let i1 = regs[0].register_admin_token(secret).await.unwrap();
        let i2 = regs[1].register_admin_token(secret).await.unwrap();
        assert_eq!(i1.id, i2.id);
        assert!(matches!(
            regs[1].authenticate(secret),
            Some(Principal::Admin { .. })
        ));
        assert!(regs[0].register_admin_token("short").await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_claims_are_taken_over_and_orphans_stay_dead() {
        let kv = Arc::new(MemKv::new());
        let dir = tempfile::tempdir().unwrap();
        let stale = encode(&StoredBootstrap {
            format: FORMAT,
            node: "dead".into(),
            started: now_secs() - 2 * BOOTSTRAP_STALE_SECS,
            done: false,
        })
        .unwrap();
        kv.put(&bootstrap_key(), stale, Precondition::Absent)
            .await
            .unwrap();
        let r = KvRegistry::start(kv.clone()).await.unwrap();
        let b = r.bootstrap("n1", dir.path(), true).await.unwrap().unwrap();
        assert!(
            b.admin_file.is_none(),
            "admin token provided by the operator"
        );
        assert_eq!(r.tokens().len(), 1);

        // A token whose tenant was deleted and re-created (new uid) does
        // not authenticate.
        r.create_tenant(&tid("o"), None, Limits::default()).unwrap();
        let (rec, nt) = TokenRecord::mint(&TokenScope::Tenant(tid("o")), "old").unwrap();
        let orphan = StoredToken {
            format: FORMAT,
            tenant_uid: Some("0000000000000000".into()),
            token: rec.clone(),
        };
        kv.put(
            &token_key(&rec.sha256),
            encode(&orphan).unwrap(),
            Precondition::Absent,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(r.authenticate(&nt.token).is_none());
        assert_eq!(r.tenant(&tid("o")).unwrap().tokens, 0);
        // Deleting the tenant removes the orphan too.
        r.delete_tenant(&tid("o")).unwrap();
        assert!(kv.get(&token_key(&rec.sha256)).await.unwrap().is_none());
        // Garbage under the prefix is skipped, not fatal.
        kv.put(&tenant_key("bad"), b"{".to_vec(), Precondition::Any)
            .await
            .unwrap();
        let r2 = KvRegistry::start(kv.clone()).await.unwrap();
        assert!(r2.tenant(&tid("bad")).is_none());
        assert!(r2.tenant(&tid("default")).is_some());
    }

    #[test]
    fn late_events_do_not_resurrect_deleted_keys() {
        let mut st = State::default();
        let put = Inner::put_event(
            "/stratus/registry/plans/p",
            br#"{"format":1,"limits":{}}"#.to_vec(),
            5,
        );
        assert!(st.apply(&put));
        let del = WatchEvent::Delete {
            key: "/stratus/registry/plans/p".into(),
            revision: 7,
        };
        assert!(st.apply(&del));
        assert!(!st.apply(&put), "older put after the delete");
        st.watched_to(7);
        assert!(st.tombstones.is_empty());
        // A listing older than a local change keeps the change.
        let put9 = Inner::put_event(
            "/stratus/registry/plans/q",
            br#"{"format":1,"limits":{}}"#.to_vec(),
            9,
        );
        assert!(st.apply(&put9));
        st.replace(Listing {
            revision: 8,
            entries: Vec::new(),
        });
        assert!(st.entries.contains_key("/stratus/registry/plans/q"));
        assert!(decode("/stratus/registry/plans/x", br#"{"format":2,"limits":{}}"#).is_err());
    }
}
