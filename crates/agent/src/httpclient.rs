//! HTTP clients built from a [`HttpClientConfig`] (scrapes, HTTP service
//! discovery, remote write): rustls with the `ring` provider, CA bundle,
//! client certificate, `insecure_skip_verify`, `server_name` (the name
//! the server certificate is verified against), minimum TLS version,
//! HTTP proxy (`http://` proxies, with `CONNECT` for `https://` URLs),
//! redirects; and the `Authorization` header (basic auth,
//! bearer/credentials, `*_file` variants read per request as Prometheus
//! does).

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{HttpClientConfig, TlsConfig};

/// Installs rustls' `ring` crypto provider as the process default (once;
/// later calls are no-ops). Called by [`build_client`].
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a client for `cfg`. Errors name the setting at fault.
pub fn build_client(cfg: &HttpClientConfig) -> Result<reqwest::Client, String> {
    client_builder(cfg)?
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// A client builder with `cfg`'s TLS, proxy and redirect settings, for
/// callers that add their own (default headers, timeouts).
pub fn client_builder(cfg: &HttpClientConfig) -> Result<reqwest::ClientBuilder, String> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("stratus-agent/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(4);
    let tls = &cfg.tls_config;
    match &tls.server_name {
        Some(name) if !tls.insecure_skip_verify => {
            b = b.tls_backend_preconfigured(rustls_with_server_name(tls, name)?);
        }
        _ => b = reqwest_tls(b, tls)?,
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
    Ok(b)
}

/// `tls` through reqwest's own settings (everything but `server_name`).
fn reqwest_tls(
    mut b: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, String> {
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
    Ok(b)
}

/// A rustls configuration that verifies the server's certificate chain
/// against `ca_file` and its name against `name` instead of the URL's
/// host (Prometheus' `server_name`). The SNI sent is still the URL's
/// host name (none for IP addresses).
fn rustls_with_server_name(tls: &TlsConfig, name: &str) -> Result<rustls::ClientConfig, String> {
    let ca = tls.ca_file.as_ref().ok_or_else(|| {
        "tls_config.server_name needs ca_file (the CA that signed the server's certificate)"
            .to_string()
    })?;
    let pem = std::fs::read(ca)
        .map_err(|e| format!("tls_config: cannot read ca_file {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("tls_config: invalid ca_file {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("tls_config: invalid CA in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "tls_config: no certificate in ca_file {}",
            ca.display()
        ));
    }
    let inner = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("tls_config: {e}"))?;
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("tls_config: invalid server_name {name:?}: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_deref() {
        Some("TLS13") => &[&rustls::version::TLS13],
        _ => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamedVerifier {
            inner,
            name: server_name,
        }));
    let mut cfg = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_config: invalid cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls_config: invalid key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls_config: invalid client certificate or key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Verifies certificates as WebPKI does, against a fixed name.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
