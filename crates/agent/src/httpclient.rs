//! HTTP clients built from a [`HttpClientConfig`] (scrapes, HTTP service
//! discovery; usable by the push side too): rustls with the `ring`
//! provider, CA bundle, client certificate, `insecure_skip_verify`,
//! minimum TLS version, proxy, redirects; and the `Authorization` header
//! (basic auth, bearer/credentials, `*_file` variants read per request as
//! Prometheus does).

use base64::Engine;

use crate::config::HttpClientConfig;

/// Installs rustls' `ring` crypto provider as the process default (once;
/// later calls are no-ops). Called by [`build_client`].
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a client for `cfg`. Errors name the setting at fault.
pub fn build_client(cfg: &HttpClientConfig) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("stratus-agent/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(4);
    let tls = &cfg.tls_config;
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("tls_config: cannot read ca_file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls_config: invalid ca_file {}: {e}", ca.display()))?;
        b = b.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = std::fs::read(cert)
            .map_err(|e| format!("tls_config: cannot read cert_file {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key)
                .map_err(|e| format!("tls_config: cannot read key_file {}: {e}", key.display()))?,
        );
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("tls_config: invalid client certificate or key: {e}"))?;
        b = b.identity(id);
    }
    if tls.server_name.is_some() {
        return Err("tls_config.server_name is not supported by stratus agent yet".into());
    }
    if tls.insecure_skip_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    if let Some(v) = &tls.min_version {
        let v = match v.as_str() {
            "TLS13" => reqwest::tls::Version::TLS_1_3,
            _ => reqwest::tls::Version::TLS_1_2,
        };
        b = b.tls_version_min(v);
    }
    match &cfg.proxy_url {
        Some(p) => {
            let proxy =
                reqwest::Proxy::all(p).map_err(|e| format!("invalid proxy_url {p:?}: {e}"))?;
            b = b.proxy(proxy);
        }
        None => b = b.no_proxy(),
    }
    if !cfg.follow_redirects {
        b = b.redirect(reqwest::redirect::Policy::none());
    }
    b.build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// The `Authorization` header value for `cfg`, if any (files are read on
/// every call so rotated secrets are picked up).
pub fn auth_header(cfg: &HttpClientConfig) -> Result<Option<String>, String> {
    if let Some(ba) = &cfg.basic_auth {
        let password = match (&ba.password, &ba.password_file) {
            (_, Some(f)) => read_secret(f)?,
            (Some(p), None) => p.0.clone(),
            (None, None) => String::new(),
        };
        let raw = format!("{}:{}", ba.username, password);
        let enc = base64::engine::general_purpose::STANDARD.encode(raw);
        return Ok(Some(format!("Basic {enc}")));
    }
    if let Some(a) = &cfg.authorization {
        let cred = match (&a.credentials, &a.credentials_file) {
            (_, Some(f)) => read_secret(f)?,
            (Some(c), None) => c.0.clone(),
            (None, None) => String::new(),
        };
        let kind = a.kind.as_deref().unwrap_or("Bearer");
        return Ok(Some(format!("{kind} {cred}")));
    }
    Ok(None)
}

fn read_secret(p: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))
}
