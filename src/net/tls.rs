//! TLS with rustls (ring provider) for llorchd's HTTP servers and its HTTP
//! client, from PEM files named in `[tls]`.
//!
//! - Server: `tls.cert` + `tls.key`; with `tls.require_client_cert`, the
//!   handshake fails unless the peer presents a certificate signed by
//!   `tls.ca` (mTLS between nodes).
//! - Client: trusts `tls.ca` when set (else the Mozilla roots), and presents
//!   `tls.cert` + `tls.key` as its client certificate when they are set, so
//!   a worker proves itself to a control plane that asks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// PEM files larger than this are refused.
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} is not usable: {problem}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client-certificate verifier: {0}")]
    Verifier(String),
    #[error("tls.require_client_cert needs tls.ca")]
    NoCa,
}

/// The crypto provider: ring, chosen explicitly (never a process default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let err = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(err)?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            problem: format!("larger than {MAX_PEM_BYTES} bytes"),
        });
    }
    Ok(buf)
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            problem: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in load_certs("CA bundle", ca)? {
        store.add(c).map_err(|e| TlsError::Pem {
            what: "CA bundle",
            path: ca.to_path_buf(),
            problem: e.to_string(),
        })?;
    }
    Ok(store)
}

/// The server side, or `None` when `tls.cert`/`tls.key` are not set.
pub fn server_config(tls: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    let certs = load_certs("certificate", cert)?;
    let key = load_key(key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if tls.require_client_cert {
        let ca = tls.ca.as_deref().ok_or(TlsError::NoCa)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder.with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// The client side: whom to trust, and the client certificate to present.
pub fn client_config(tls: &TlsConfig) -> Result<ClientConfig, TlsError> {
    let roots = match &tls.ca {
        Some(ca) => roots(ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs("certificate", cert)?, load_key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = load_certs("certificate", &junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = load_key(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.pem"), "{e}");
        let e = load_certs("certificate", &dir.path().join("absent.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.pem"), "{e}");
        let cfg = TlsConfig {
            cert: Some(junk.clone()),
            key: Some(junk),
            ..Default::default()
        };
        assert!(server_config(&cfg).is_err());
    }

    #[test]
    fn configs_build_from_generated_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.pem"), ca.pem()).unwrap();
        std::fs::write(p("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
        let tls = TlsConfig {
            cert: Some(p("cert.pem")),
            key: Some(p("key.pem")),
            ca: Some(p("ca.pem")),
            require_client_cert: true,
        };
        assert!(server_config(&tls).unwrap().is_some());
        client_config(&tls).unwrap();
        assert!(server_config(&TlsConfig::default()).unwrap().is_none());
        client_config(&TlsConfig::default()).unwrap();
    }
}
