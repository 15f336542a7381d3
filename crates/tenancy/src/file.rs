//! [`FileRegistry`]: the registry kept in one JSON file
//! (`<data>/registry.json`), held in memory and rewritten atomically on
//! every change (temporary file, fsync, rename, fsync of the directory;
//! mode 0600, since it holds token digests and limits).
//!
//! File format (version 1):
//!
//! ```json
//! {"version": 1,
//!  "plans": {"small": {"ingestion_rate": 1000}},
//!  "tenants": {"default": {"created": 1700000000, "plan": "small", "limits": {}}},
//!  "tokens": [{"id": "tok_…", "name": "…", "kind": "tenant", "tenant": "default",
//!              "sha256": "<64 hex>", "created": 1700000000}]}
//! ```
//!
//! Every change is applied to a copy, written, and only then made visible,
//! so a failed write changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;
use stratus_model::TenantId;

use crate::error::{
    CorruptSnafu, Error, ExistsSnafu, InvalidSnafu, IoSnafu, NotFoundSnafu, Result,
};
use crate::limits::Limits;
use crate::records::{
    TenantRecord, TokenRecord, now_secs, validate_plan_name, validate_token_name,
};
use crate::registry::{
    NewToken, Principal, Registry, TenantInfo, TenantUpdate, TokenInfo, TokenScope,
};
use crate::token::{TokenHash, ct_eq, hash_token};

/// The tenant created on first start.
pub const DEFAULT_TENANT: &str = "default";

const FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileData {
    version: u32,
    #[serde(default)]
    plans: BTreeMap<String, Limits>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantRecord>,
    #[serde(default)]
    tokens: Vec<TokenRecord>,
}

/// The in-memory state: the file's content plus the token index.
#[derive(Debug, Default)]
struct State {
    data: FileData,
    by_hash: HashMap<TokenHash, (TokenHash, Principal)>,
}

impl State {
    /// Checks `data` and builds the token index.
    fn build(data: FileData) -> Result<Self, String> {
        if data.version != FILE_VERSION {
            return Err(format!("unsupported version {}", data.version));
        }
        for (name, l) in &data.plans {
            l.validate().map_err(|e| format!("plan {name:?}: {e}"))?;
        }
        for (id, t) in &data.tenants {
            TenantId::new(id).map_err(|e| format!("tenant {id:?}: {e}"))?;
            if let Some(p) = &t.plan
                && !data.plans.contains_key(p)
            {
                return Err(format!("tenant {id:?} names unknown plan {p:?}"));
            }
            t.limits
                .validate()
                .map_err(|e| format!("tenant {id:?}: {e}"))?;
        }
        let mut by_hash = HashMap::with_capacity(data.tokens.len());
        for tok in &data.tokens {
            let h = tok
                .hash()
                .ok_or_else(|| format!("token {:?}: bad sha256", tok.id))?;
            let p = match tok.principal() {
                Some(p @ Principal::Admin { .. }) => p,
                Some(p @ Principal::Tenant { .. })
                    if tok
                        .tenant
                        .as_ref()
                        .is_some_and(|t| data.tenants.contains_key(t)) =>
                {
                    p
                }
                _ => return Err(format!("token {:?}: bad kind or unknown tenant", tok.id)),
            };
            by_hash.insert(h, (h, p));
        }
        Ok(Self { data, by_hash })
    }

    fn tenant_info(&self, id: &str, t: &TenantRecord) -> TenantInfo {
        TenantInfo {
            id: id.to_string(),
            created: t.created,
            plan: t.plan.clone(),
            limits: t.limits.clone(),
            tokens: self
                .data
                .tokens
                .iter()
                .filter(|k| k.tenant.as_deref() == Some(id))
                .count(),
        }
    }
}

/// A registry kept in one JSON file.
#[derive(Debug)]
pub struct FileRegistry {
    path: PathBuf,
    state: RwLock<State>,
}

/// The tokens written on first start.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The admin token.
    pub admin: NewToken,
    /// The token of tenant `default`.
    pub default: NewToken,
    /// Where the admin token was written.
    pub admin_file: PathBuf,
    /// Where the `default` token was written.
    pub default_file: PathBuf,
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).context(IoSnafu { path: &tmp })?;
    #[cfg(unix)]
    {
        // The mode of an existing file is not changed by open().
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .context(IoSnafu { path: &tmp })?;
    }
    f.write_all(bytes).context(IoSnafu { path: &tmp })?;
    f.sync_all().context(IoSnafu { path: &tmp })?;
    drop(f);
    std::fs::rename(&tmp, path).context(IoSnafu { path })?;
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().context(IoSnafu { path: dir })?;
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).context(IoSnafu { path: dir })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .context(IoSnafu { path: dir })?;
    }
    Ok(())
}

impl FileRegistry {
    /// Opens the registry at `path`, or starts an empty one (the file is
    /// written on the first change).
    pub fn open(path: &Path) -> Result<Self> {
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let data: FileData =
                    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path, e))?;
                State::build(data).map_err(|e| Error::corrupt(path, e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::build(FileData {
                version: FILE_VERSION,
                ..FileData::default()
            })
            .map_err(|e| Error::corrupt(path, e))?,
            Err(e) => return Err(e).context(IoSnafu { path }),
        };
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new(state),
        })
    }

    /// The file backing the registry.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// On an empty registry (first start): creates tenant `default`, an
    /// admin token and a token for `default`, writes the two secrets to
    /// `<tokens_dir>/admin.token` and `<tokens_dir>/default.token` (dir
    /// 0700, files 0600) and only then saves the registry, so a crash in
    /// between just repeats the bootstrap. `None` when the registry
    /// already has tenants or tokens.
    pub fn bootstrap(&self, tokens_dir: &Path) -> Result<Option<Bootstrapped>> {
        let mut st = self.state.write();
        if !st.data.tenants.is_empty() || !st.data.tokens.is_empty() {
            return Ok(None);
        }
        let default = TenantId::new(DEFAULT_TENANT).map_err(|e| {
            InvalidSnafu {
                message: e.to_string(),
            }
            .build()
        })?;
        let (admin_rec, admin) = TokenRecord::mint(&TokenScope::Admin, "admin")?;
        let (def_rec, def) = TokenRecord::mint(&TokenScope::Tenant(default), DEFAULT_TENANT)?;
        create_private_dir(tokens_dir)?;
        let admin_file = tokens_dir.join("admin.token");
        let default_file = tokens_dir.join("default.token");
        write_private(&admin_file, format!("{}\n", admin.token).as_bytes())?;
        write_private(&default_file, format!("{}\n", def.token).as_bytes())?;
        let mut data = st.data.clone();
        data.tenants.insert(
            DEFAULT_TENANT.into(),
            TenantRecord {
                created: now_secs(),
                ..TenantRecord::default()
            },
        );
        data.tokens.push(admin_rec);
        data.tokens.push(def_rec);
        *st = self.save(data)?;
        Ok(Some(Bootstrapped {
            admin,
            default: def,
            admin_file,
            default_file,
        }))
    }

    /// Validates, writes and indexes `data`.
    fn save(&self, data: FileData) -> Result<State> {
        let st = State::build(data).map_err(|message| InvalidSnafu { message }.build())?;
        let mut bytes = serde_json::to_vec_pretty(&st.data).map_err(|e| {
            InvalidSnafu {
                message: e.to_string(),
            }
            .build()
        })?;
        bytes.push(b'\n');
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).context(IoSnafu { path: dir })?;
        }
        write_private(&self.path, &bytes)?;
        Ok(st)
    }

    /// Applies `f` to a copy of the data, saves it, then publishes it.
    fn mutate<R>(&self, f: impl FnOnce(&mut FileData) -> Result<R>) -> Result<R> {
        let mut st = self.state.write();
        let mut data = st.data.clone();
        let r = f(&mut data)?;
        *st = self.save(data)?;
        Ok(r)
    }
}

impl Error {
    fn corrupt(path: &Path, e: impl std::fmt::Display) -> Self {
        CorruptSnafu {
            path,
            message: e.to_string(),
        }
        .build()
    }
}

fn not_found(what: String) -> Error {
    NotFoundSnafu { what }.build()
}

impl Registry for FileRegistry {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        let h = hash_token(token);
        let st = self.state.read();
        // The probe compares SHA-256 digests, which tells a timing
        // attacker nothing about the secret; the final check is constant
        // time all the same.
        let (stored, p) = st.by_hash.get(&h)?;
        ct_eq(stored, &h).then(|| p.clone())
    }

    fn tenant(&self, id: &TenantId) -> Option<TenantInfo> {
        let st = self.state.read();
        let t = st.data.tenants.get(id.as_str())?;
        Some(st.tenant_info(id.as_str(), t))
    }

    fn tenants(&self) -> Vec<TenantInfo> {
        let st = self.state.read();
        st.data
            .tenants
            .iter()
            .map(|(id, t)| st.tenant_info(id, t))
            .collect()
    }

    fn create_tenant(
        &self,
        id: &TenantId,
        plan: Option<String>,
        limits: Limits,
    ) -> Result<TenantInfo> {
        limits
            .validate()
            .map_err(|message| InvalidSnafu { message }.build())?;
        self.mutate(|d| {
            if d.tenants.contains_key(id.as_str()) {
                return ExistsSnafu {
                    what: format!("tenant {id}"),
                }
                .fail();
            }
            if let Some(p) = &plan
                && !d.plans.contains_key(p)
            {
                return Err(not_found(format!("plan {p:?}")));
            }
            d.tenants.insert(
                id.as_str().to_string(),
                TenantRecord {
                    created: now_secs(),
                    plan,
                    limits,
                },
            );
            Ok(())
        })?;
        self.tenant(id)
            .ok_or_else(|| not_found(format!("tenant {id}")))
    }

    fn update_tenant(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo> {
        if let Some(l) = &update.limits {
            l.validate()
                .map_err(|message| InvalidSnafu { message }.build())?;
        }
        self.mutate(|d| {
            let has_plan = |p: &str| d.plans.contains_key(p);
            if let Some(Some(p)) = &update.plan
                && !has_plan(p)
            {
                return Err(not_found(format!("plan {p:?}")));
            }
            let t = d
                .tenants
                .get_mut(id.as_str())
                .ok_or_else(|| not_found(format!("tenant {id}")))?;
            if let Some(p) = update.plan {
                t.plan = p;
            }
            if let Some(l) = update.limits {
                t.limits = if update.replace_limits {
                    l
                } else {
                    t.limits.overlay(&l)
                };
            }
            Ok(())
        })?;
        self.tenant(id)
            .ok_or_else(|| not_found(format!("tenant {id}")))
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<TenantInfo> {
        let info = self
            .tenant(id)
            .ok_or_else(|| not_found(format!("tenant {id}")))?;
        self.mutate(|d| {
            if d.tenants.remove(id.as_str()).is_none() {
                return Err(not_found(format!("tenant {id}")));
            }
            d.tokens
                .retain(|t| t.tenant.as_deref() != Some(id.as_str()));
            Ok(())
        })?;
        Ok(info)
    }

    fn create_token(&self, scope: TokenScope, name: &str) -> Result<NewToken> {
        validate_token_name(name)?;
        let (rec, nt) = TokenRecord::mint(&scope, name)?;
        self.mutate(|d| {
            if let TokenScope::Tenant(t) = &scope
                && !d.tenants.contains_key(t.as_str())
            {
                return Err(not_found(format!("tenant {t}")));
            }
            d.tokens.push(rec);
            Ok(())
        })?;
        Ok(nt)
    }

    fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        self.mutate(|d| {
            let pos = d
                .tokens
                .iter()
                .position(|t| t.id == id)
                .ok_or_else(|| not_found(format!("token {id:?}")))?;
            Ok(d.tokens.remove(pos).info())
        })
    }

    fn tokens(&self) -> Vec<TokenInfo> {
        self.state
            .read()
            .data
            .tokens
            .iter()
            .map(TokenRecord::info)
            .collect()
    }

    fn plans(&self) -> BTreeMap<String, Limits> {
        self.state.read().data.plans.clone()
    }

    fn set_plan(&self, name: &str, limits: Option<Limits>) -> Result<()> {
        validate_plan_name(name)?;
        if let Some(l) = &limits {
            l.validate()
                .map_err(|message| InvalidSnafu { message }.build())?;
        }
        self.mutate(|d| match limits {
            Some(l) => {
                d.plans.insert(name.to_string(), l);
                Ok(())
            }
            None => {
                if let Some((t, _)) = d
                    .tenants
                    .iter()
                    .find(|(_, t)| t.plan.as_deref() == Some(name))
                {
                    return InvalidSnafu {
                        message: format!("plan {name:?} is used by tenant {t:?}"),
                    }
                    .fail();
                }
                d.plans
                    .remove(name)
                    .map(|_| ())
                    .ok_or_else(|| not_found(format!("plan {name:?}")))
            }
        })
    }

    fn limits(&self, id: &TenantId) -> Limits {
        let st = self.state.read();
        let Some(t) = st.data.tenants.get(id.as_str()) else {
            return Limits::default();
        };
        let plan = t
            .plan
            .as_ref()
            .and_then(|p| st.data.plans.get(p))
            .cloned()
            .unwrap_or_default();
        plan.overlay(&t.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn bootstrap_writes_private_files_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let r = FileRegistry::open(&path).unwrap();
        assert!(!path.exists(), "nothing written before the first change");
        let b = r.bootstrap(&dir.path().join("tokens")).unwrap().unwrap();
        let admin = std::fs::read_to_string(&b.admin_file).unwrap();
        assert_eq!(admin.trim(), b.admin.token);
        #[cfg(unix)]
        {
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&b.admin_file), 0o600);
            assert_eq!(mode(&b.default_file), 0o600);
            assert_eq!(mode(&dir.path().join("tokens")), 0o700);
        }
        // The file holds digests, never secrets.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&b.admin.token));
        assert!(r.bootstrap(&dir.path().join("tokens")).unwrap().is_none());
        drop(r);
        let r = FileRegistry::open(&path).unwrap();
        assert!(matches!(
            r.authenticate(&b.admin.token),
            Some(Principal::Admin { .. })
        ));
        assert_eq!(
            r.authenticate(&b.default.token),
            Some(Principal::Tenant {
                tenant: tid("default"),
                token_id: b.default.info.id.clone()
            })
        );
        assert_eq!(r.authenticate("stratus_nope"), None);
        assert_eq!(r.authenticate(""), None);
    }

    #[test]
    fn tenant_token_plan_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let r = FileRegistry::open(&path).unwrap();
        let small = Limits {
            ingestion_rate: Some(10.0),
            max_series: Some(100),
            ..Limits::default()
        };
        assert!(
            r.create_tenant(&tid("a"), Some("small".into()), Limits::default())
                .is_err(),
            "unknown plan"
        );
        r.set_plan("small", Some(small)).unwrap();
        r.create_tenant(
            &tid("a"),
            Some("small".into()),
            Limits {
                max_series: Some(5),
                ..Limits::default()
            },
        )
        .unwrap();
        assert!(matches!(
            r.create_tenant(&tid("a"), None, Limits::default()),
            Err(Error::Exists { .. })
        ));
        let l = r.limits(&tid("a"));
        assert_eq!(l.ingestion_rate, Some(10.0));
        assert_eq!(l.max_series, Some(5));
        assert_eq!(r.limits(&tid("zzz")), Limits::default());
        assert!(r.set_plan("small", None).is_err(), "plan in use");

        let t = r.create_token(TokenScope::Tenant(tid("a")), "ci").unwrap();
        assert!(r.create_token(TokenScope::Tenant(tid("b")), "x").is_err());
        assert!(matches!(
            r.authenticate(&t.token),
            Some(Principal::Tenant { ref tenant, .. }) if tenant.as_str() == "a"
        ));
        assert_eq!(r.tenant(&tid("a")).unwrap().tokens, 1);

        // Merge, then replace.
        r.update_tenant(
            &tid("a"),
            TenantUpdate {
                limits: Some(Limits {
                    max_series_per_metric: Some(3),
                    ..Limits::default()
                }),
                ..TenantUpdate::default()
            },
        )
        .unwrap();
        let l = r.limits(&tid("a"));
        assert_eq!((l.max_series, l.max_series_per_metric), (Some(5), Some(3)));
        r.update_tenant(
            &tid("a"),
            TenantUpdate {
                plan: Some(None),
                limits: Some(Limits::default()),
                replace_limits: true,
            },
        )
        .unwrap();
        assert_eq!(r.limits(&tid("a")), Limits::default());

        // Survives a reopen.
        let r2 = FileRegistry::open(&path).unwrap();
        assert!(r2.authenticate(&t.token).is_some());
        assert_eq!(r2.plans().len(), 1);

        r.revoke_token(&t.info.id).unwrap();
        assert!(r.authenticate(&t.token).is_none());
        assert!(r.revoke_token(&t.info.id).is_err());
        let t2 = r.create_token(TokenScope::Tenant(tid("a")), "two").unwrap();
        r.delete_tenant(&tid("a")).unwrap();
        assert!(
            r.authenticate(&t2.token).is_none(),
            "tokens go with the tenant"
        );
        assert!(r.tokens().is_empty());
        assert!(r.delete_tenant(&tid("a")).is_err());
        let r3 = FileRegistry::open(&path).unwrap();
        assert!(r3.tenants().is_empty());
    }

    #[test]
    fn damaged_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        for bad in [
            "{",
            r#"{"version": 2}"#,
            r#"{"version": 1, "tenants": {"a/b": {"created": 0}}}"#,
            r#"{"version": 1, "tenants": {"a": {"created": 0, "plan": "x"}}}"#,
            r#"{"version": 1, "tokens": [{"id":"t","name":"n","kind":"tenant","tenant":"a","sha256":"00","created":0}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = FileRegistry::open(&path).unwrap_err().to_string();
            assert!(e.contains("registry.json"), "{e}");
        }
    }
}
