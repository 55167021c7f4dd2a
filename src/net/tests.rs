//! The server loop and the client together: plain HTTP, TLS, mTLS (with a
//! client that has no certificate refused at the handshake), bearer auth
//! over TLS, a host name resolved without NSS, and graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::auth::{require_bearer, ApiToken};
use super::client::{build_client, ClientTimeouts};
use super::dns::HickoryDns;
use super::server::serve;
use super::tls::server_config;
use crate::config::TlsConfig;

/// A CA, and a server/client certificate for `localhost` and 127.0.0.1
/// signed by it, plus a second CA that signs nothing we trust.
pub(crate) struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "llorchd test CA");
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub(crate) fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, s: &str| -> PathBuf {
            let p = dir.path().join(n);
            std::fs::write(&p, s).unwrap();
            p
        };
        let (ca_cert, ca_key) = ca();
        let (cert, key) = leaf(&ca_cert, &ca_key);
        let (rogue_ca, rogue_ca_key) = ca();
        let (rcert, rkey) = leaf(&rogue_ca, &rogue_ca_key);
        Pki {
            ca: w("ca.pem", &ca_cert.pem()),
            cert: w("cert.pem", &cert),
            key: w("key.pem", &key),
            rogue_cert: w("rogue.pem", &rcert),
            rogue_key: w("rogue-key.pem", &rkey),
            _dir: dir,
        }
    }

    fn server(&self, mtls: bool) -> TlsConfig {
        TlsConfig {
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ca: Some(self.ca.clone()),
            require_client_cert: mtls,
        }
    }

    fn client(&self, cert: Option<(&Path, &Path)>) -> TlsConfig {
        TlsConfig {
            cert: cert.map(|c| c.0.to_path_buf()),
            key: cert.map(|c| c.1.to_path_buf()),
            ca: Some(self.ca.clone()),
            require_client_cert: false,
        }
    }
}

const TOKEN: &str = "test-token-0123456789";

struct Running {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<usize>,
}

async fn start(app: Router, tls: Option<TlsConfig>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_tls = tls.map(|t| server_config(&t).unwrap().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(
        listener,
        app,
        server_tls,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Running {
        port,
        stop: Some(tx),
        done,
    }
}

fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        )
}

fn client(tls: &TlsConfig) -> reqwest::Client {
    build_client(tls, HickoryDns::from_system(), ClientTimeouts::default()).unwrap()
}

#[tokio::test]
async fn plain_http_with_a_name_resolved_by_hickory() {
    let s = start(app(), None).await;
    let c = client(&TlsConfig::default());
    let body = c
        .get(format!("http://localhost:{}/hello", s.port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn tls_and_mtls() {
    let pki = Pki::generate();

    // TLS, no client certificate required.
    let s = start(app(), Some(pki.server(false))).await;
    let url = format!("https://localhost:{}/hello", s.port);
    let r = client(&pki.client(None)).get(&url).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    // Plain HTTP to a TLS port fails.
    assert!(client(&TlsConfig::default())
        .get(format!("http://localhost:{}/hello", s.port))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true));
    // A client that does not trust our CA refuses the server.
    let untrusting = TlsConfig {
        ca: Some(pki.rogue_cert.clone()),
        ..Default::default()
    };
    let untrusting = build_client(
        &untrusting,
        HickoryDns::from_system(),
        ClientTimeouts::default(),
    );
    // (The rogue leaf is not a CA; building may fail or connecting will.)
    if let Ok(c) = untrusting {
        assert!(c.get(&url).send().await.is_err());
    }

    // mTLS: the server asks for a client certificate signed by the CA.
    let m = start(app(), Some(pki.server(true))).await;
    let url = format!("https://localhost:{}/hello", m.port);
    let with_cert = client(&pki.client(Some((&pki.cert, &pki.key))));
    assert_eq!(
        with_cert
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "hello"
    );
    let e = client(&pki.client(None)).get(&url).send().await;
    assert!(
        e.is_err(),
        "a client without a certificate got through: {e:?}"
    );
    let e = client(&pki.client(Some((&pki.rogue_cert, &pki.rogue_key))))
        .get(&url)
        .send()
        .await;
    assert!(
        e.is_err(),
        "a certificate from another CA got through: {e:?}"
    );
}

#[tokio::test]
async fn bearer_auth_over_tls() {
    let pki = Pki::generate();
    let token = Arc::new(ApiToken::new(TOKEN, "test").unwrap());
    let guarded = app().layer(axum::middleware::from_fn_with_state(
        token.clone(),
        require_bearer,
    ));
    let s = start(guarded, Some(pki.server(false))).await;
    let url = format!("https://127.0.0.1:{}/hello", s.port);
    let c = client(&pki.client(None));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(&url)
        .header("authorization", token.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut s = start(app(), None).await;
    let c = client(&TlsConfig::default());
    let url = format!("http://127.0.0.1:{}/slow", s.port);
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop.take().unwrap().send(()).unwrap();
    assert_eq!(req.await.unwrap(), "slow");
    assert_eq!(s.done.await.unwrap(), 0);
    // No longer accepting.
    assert!(c
        .get(format!("http://127.0.0.1:{}/hello", s.port))
        .send()
        .await
        .is_err());
}
