//! TLS: the development CA and the rustls server configuration (ring provider).
//!
//! `--dev-tls` makes, once, a local CA (`DIR/dev-ca.pem`, key `DIR/dev-ca-key.pem`) and a server
//! certificate for `localhost`, `127.0.0.1` and `::1` signed by it (`DIR/server.pem`,
//! `DIR/server-key.pem`); later starts reuse them. Clients trust `dev-ca.pem` only. Without
//! `--dev-tls` the server uses `DIR/server.pem` and `DIR/server-key.pem` as given (a real
//! certificate chain from the federation's CA).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::cursor::write_private;

pub const DEV_CA_FILE: &str = "dev-ca.pem";
pub const DEV_CA_KEY_FILE: &str = "dev-ca-key.pem";
pub const SERVER_CERT_FILE: &str = "server.pem";
pub const SERVER_KEY_FILE: &str = "server-key.pem";

const CA_NAME: &str = "Doorstep development CA (local only)";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Doorstep");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, years: i32) {
    let today = Utc::now().date_naive();
    let start = today - chrono::Duration::days(1);
    params.not_before = rcgen::date_time_ymd(start.year(), start.month() as u8, start.day() as u8);
    params.not_after = rcgen::date_time_ymd(today.year() + years, today.month() as u8, 1);
}

/// Make (once) the development CA and server certificate under `dir`; answers the server
/// certificate files and the CA file clients should trust.
pub fn ensure_dev_tls(dir: &Path) -> Result<(CertFiles, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_path = dir.join(DEV_CA_FILE);
    let ca_key_path = dir.join(DEV_CA_KEY_FILE);
    let files = CertFiles {
        cert: dir.join(SERVER_CERT_FILE),
        key: dir.join(SERVER_KEY_FILE),
    };
    if ca_path.exists() && files.cert.exists() && files.key.exists() {
        return Ok((files, ca_path));
    }

    let mut params = ca_params()?;
    let ca_key = if ca_path.exists() && ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        set_validity(&mut params, 10);
        let cert = params.self_signed(&key)?;
        // Remove stale halves so the pair on disk always matches.
        for p in [&ca_path, &ca_key_path] {
            let _ = std::fs::remove_file(p);
        }
        write_private(&ca_key_path, key.serialize_pem().as_bytes())
            .map_err(io_err(&ca_key_path))?;
        std::fs::write(&ca_path, cert.pem()).map_err(io_err(&ca_path))?;
        tracing::info!(path = %ca_path.display(), "made a development CA");
        key
    };
    let issuer = Issuer::new(params, ca_key);

    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    dn.push(DnType::OrganizationName, "Doorstep");
    server.distinguished_name = dn;
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    set_validity(&mut server, 2);
    let server_key = KeyPair::generate()?;
    let cert = server.signed_by(&server_key, &issuer)?;
    for p in [&files.cert, &files.key] {
        let _ = std::fs::remove_file(p);
    }
    write_private(&files.key, server_key.serialize_pem().as_bytes()).map_err(io_err(&files.key))?;
    std::fs::write(&files.cert, cert.pem()).map_err(io_err(&files.cert))?;
    tracing::info!(path = %files.cert.display(), "made a development server certificate");
    Ok((files, ca_path))
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1) from
/// PEM files: a certificate chain and its private key.
pub fn server_config(files: &CertFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(&files.cert).map_err(io_err(&files.cert))?;
    let key_pem = std::fs::read(&files.key).map_err(io_err(&files.key))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(io_err(&files.cert))?;
    if certs.is_empty() {
        return Err(TlsError::Config(format!(
            "{} holds no certificate",
            files.cert.display()
        )));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(io_err(&files.key))?
        .ok_or_else(|| TlsError::Config(format!("{} holds no private key", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tls_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (files, ca) = ensure_dev_tls(dir.path()).unwrap();
        let first = std::fs::read(&ca).unwrap();
        let first_cert = std::fs::read(&files.cert).unwrap();
        server_config(&files).unwrap();
        let (files2, ca2) = ensure_dev_tls(dir.path()).unwrap();
        assert_eq!(files, files2);
        assert_eq!(std::fs::read(&ca2).unwrap(), first);
        assert_eq!(std::fs::read(&files2.cert).unwrap(), first_cert);
    }

    #[test]
    fn missing_server_cert_is_remade_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (files, ca) = ensure_dev_tls(dir.path()).unwrap();
        let ca_pem = std::fs::read(&ca).unwrap();
        std::fs::remove_file(&files.cert).unwrap();
        let (files, _) = ensure_dev_tls(dir.path()).unwrap();
        assert_eq!(std::fs::read(&ca).unwrap(), ca_pem);
        server_config(&files).unwrap();
    }

    #[test]
    fn missing_files_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = server_config(&CertFiles {
            cert: dir.path().join(SERVER_CERT_FILE),
            key: dir.path().join(SERVER_KEY_FILE),
        })
        .unwrap_err();
        assert!(err.to_string().contains("server.pem"), "{err}");
    }
}
