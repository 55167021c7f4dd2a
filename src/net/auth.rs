//! Bearer-token authentication between llorchd processes and for the client
//! API when it is reachable beyond loopback.
//!
//! The token comes from a file (`auth.token_file` / `LLORCH_API_TOKEN_FILE`,
//! or systemd's `$CREDENTIALS_DIRECTORY/llorch-api-token`) or from
//! `LLORCH_API_TOKEN`; the binary reads the environment once at start and
//! passes the values to [`load_token`]. A presented token is compared in
//! constant time, after hashing both sides so that not even the length
//! leaks. Logs only ever carry the fingerprint
//! (`telemetry::logging::fingerprint`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::telemetry::logging::fingerprint;

/// Name of the systemd credential (`LoadCredential=llorch-api-token:...`).
pub const CREDENTIAL_NAME: &str = "llorch-api-token";

/// Tokens longer than this are refused (a token file is small; this bounds
/// what a misconfigured path could make us read).
const MAX_TOKEN_BYTES: u64 = 4096;
/// Shortest token accepted: anything shorter is guessable.
const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the API token from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API token from {origin} is {problem}")]
    Invalid { origin: String, problem: String },
    #[error(
        "{what} needs a bearer token: set LLORCH_API_TOKEN_FILE (or auth.token_file), \
         a systemd credential named {CREDENTIAL_NAME}, or LLORCH_API_TOKEN"
    )]
    Missing { what: String },
}

/// Where the token was read from (for the start-up log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Credential(PathBuf),
    Env,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "file {}", p.display()),
            TokenSource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            TokenSource::Env => f.write_str("LLORCH_API_TOKEN"),
        }
    }
}

/// The shared secret. `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct ApiToken {
    secret: String,
    digest: [u8; 32],
    fingerprint: String,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({})", self.fingerprint)
    }
}

impl ApiToken {
    /// A token from its text; surrounding whitespace (a file's trailing
    /// newline) is dropped. It must be printable ASCII without spaces (it
    /// travels in an HTTP header) and at least 16 characters long.
    pub fn new(text: &str, origin: &str) -> Result<ApiToken, AuthError> {
        let secret = text.trim();
        let invalid = |problem: String| AuthError::Invalid {
            origin: origin.to_string(),
            problem,
        };
        if secret.is_empty() {
            return Err(invalid("empty".into()));
        }
        if let Some(c) = secret.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(invalid(format!(
                "not usable in an HTTP header (it contains {c:?}); use printable ASCII without spaces"
            )));
        }
        if secret.len() < MIN_TOKEN_CHARS {
            return Err(invalid(format!(
                "{} characters long; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(ApiToken {
            secret: secret.to_string(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            fingerprint: fingerprint(secret),
        })
    }

    /// First 6 hex digits of the token's SHA-256: what logs show.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Is `presented` this token? Constant time in the content and length
    /// of both.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        d.ct_eq(&self.digest).into()
    }

    /// `Authorization: Bearer <token>`, marked sensitive so that HTTP
    /// libraries never log it.
    pub fn authorization(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.secret))
            .expect("a validated token is a valid header value");
        v.set_sensitive(true);
        v
    }
}

/// Find and read the token. Order: the configured or `LLORCH_API_TOKEN_FILE`
/// file, then `$CREDENTIALS_DIRECTORY/llorch-api-token` when that file
/// exists, then the value of `LLORCH_API_TOKEN`. `None` when none is set.
pub fn load_token(
    token_file: Option<&Path>,
    credentials_dir: Option<&Path>,
    env_token: Option<&str>,
) -> Result<Option<(ApiToken, TokenSource)>, AuthError> {
    if let Some(p) = token_file {
        return read_token_file(p).map(|t| Some((t, TokenSource::File(p.to_path_buf()))));
    }
    if let Some(dir) = credentials_dir {
        let p = dir.join(CREDENTIAL_NAME);
        if p.exists() {
            return read_token_file(&p).map(|t| Some((t, TokenSource::Credential(p))));
        }
    }
    match env_token {
        Some(v) => ApiToken::new(v, "LLORCH_API_TOKEN").map(|t| Some((t, TokenSource::Env))),
        None => Ok(None),
    }
}

fn read_token_file(path: &Path) -> Result<ApiToken, AuthError> {
    use std::io::Read;
    let read_err = |source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    f.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    let origin = path.display().to_string();
    if buf.len() as u64 > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid {
            origin,
            problem: format!("longer than {MAX_TOKEN_BYTES} bytes"),
        });
    }
    let text = String::from_utf8(buf).map_err(|_| AuthError::Invalid {
        origin: origin.clone(),
        problem: "not UTF-8 text".into(),
    })?;
    ApiToken::new(&text, &origin)
}

/// Whether the client API on `bind` must require the token: always when it
/// listens beyond loopback (or on all interfaces), or when configured so.
pub fn client_api_needs_token(bind: SocketAddr, require_on_loopback: bool) -> bool {
    require_on_loopback || !bind.ip().is_loopback()
}

/// The `AUTH_FAILED` answer: 401, `WWW-Authenticate: Bearer`, the API's
/// error body.
pub fn unauthorized(message: &str) -> Response {
    let body = serde_json::json!({
        "code": "AUTH_FAILED",
        "message": message,
        "retriable": false,
    });
    let mut r = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The bearer token in a request, if it has one.
fn presented(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Axum middleware: pass requests carrying the token, answer the rest with
/// 401 `AUTH_FAILED`. Apply with
/// `axum::middleware::from_fn_with_state(token, require_bearer)`.
pub async fn require_bearer(
    State(token): State<Arc<ApiToken>>,
    req: Request,
    next: Next,
) -> Response {
    match presented(&req) {
        Some(p) if token.verify(p) => next.run(req).await,
        Some(p) => {
            // The fingerprint of what was sent tells an operator which
            // (wrong) token a peer uses, without revealing it.
            let sent = String::from_utf8_lossy(p);
            tracing::warn!(
                path = %req.uri().path(),
                token_fingerprint = %fingerprint(&sent),
                expected_fingerprint = %token.fingerprint(),
                human = "refused a request with a wrong bearer token",
            );
            unauthorized("invalid bearer token")
        }
        None => {
            tracing::warn!(
                path = %req.uri().path(),
                human = "refused a request without a bearer token",
            );
            unauthorized("missing bearer token (Authorization: Bearer <token>)")
        }
    }
}

/// Paths a probe may call without the token on a guarded client API:
/// liveness and readiness say nothing secret.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// As [`require_bearer`], but lets [`OPEN_PATHS`] through: for the client
/// API when it listens beyond loopback.
pub async fn require_bearer_except_probes(
    State(token): State<Arc<ApiToken>>,
    req: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    require_bearer(State(token), req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    const T: &str = "0123456789abcdef0123";

    #[test]
    fn tokens_are_validated_and_trimmed() {
        let t = ApiToken::new(&format!("  {T}\n"), "test").unwrap();
        assert!(t.verify(T.as_bytes()));
        assert_eq!(t.fingerprint(), fingerprint(T));
        assert_eq!(format!("{t:?}"), format!("ApiToken({})", fingerprint(T)));
        for bad in [
            "",
            "   ",
            "short",
            "has space inside 0123456789",
            "tab\tinside0123456789",
        ] {
            assert!(ApiToken::new(bad, "test").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn verify_is_exact() {
        let t = ApiToken::new(T, "t").unwrap();
        assert!(!t.verify(b""));
        assert!(!t.verify(&T.as_bytes()[..T.len() - 1]));
        assert!(!t.verify(format!("{T}x").as_bytes()));
        assert!(!t.verify(T.to_uppercase().as_bytes()));
    }

    #[test]
    fn sources_in_order_file_credential_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, format!("{T}-file\n")).unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let env = format!("{T}-env");

        let (t, src) = load_token(Some(&file), Some(&creds), Some(&env))
            .unwrap()
            .unwrap();
        assert!(t.verify(format!("{T}-file").as_bytes()));
        assert_eq!(src, TokenSource::File(file.clone()));

        // No credential file in the directory: the env value.
        let (t, src) = load_token(None, Some(&creds), Some(&env)).unwrap().unwrap();
        assert!(t.verify(env.as_bytes()));
        assert_eq!(src, TokenSource::Env);

        std::fs::write(creds.join(CREDENTIAL_NAME), format!("{T}-cred")).unwrap();
        let (t, src) = load_token(None, Some(&creds), Some(&env)).unwrap().unwrap();
        assert!(t.verify(format!("{T}-cred").as_bytes()));
        assert!(matches!(src, TokenSource::Credential(_)));

        assert!(load_token(None, None, None).unwrap().is_none());
    }

    #[test]
    fn bad_token_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = load_token(Some(&missing), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, "a".repeat(10_000)).unwrap();
        let e = load_token(Some(&big), None, None).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xffu8, 0xfe, 0x00]).unwrap();
        assert!(load_token(Some(&bin), None, None).is_err());
        let e = load_token(None, None, Some("short"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LLORCH_API_TOKEN") && !e.contains("short\""),
            "{e}"
        );
    }

    #[test]
    fn loopback_rule() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert!(!client_api_needs_token(lo, false));
        assert!(!client_api_needs_token(lo6, false));
        assert!(client_api_needs_token(lo, true));
        assert!(client_api_needs_token(any, false));
        assert!(client_api_needs_token(lan, false));
    }

    async fn call(app: &Router, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut b = axum::http::Request::builder().uri("/x");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let r = app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, v)
    }

    #[tokio::test]
    async fn middleware_lets_the_token_through_and_nothing_else() {
        let token = Arc::new(ApiToken::new(T, "t").unwrap());
        let app = Router::new()
            .route(
                "/x",
                get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
            )
            .layer(axum::middleware::from_fn_with_state(token, require_bearer));
        let (s, v) = call(&app, Some(&format!("Bearer {T}"))).await;
        assert_eq!((s, v["ok"].as_bool()), (StatusCode::OK, Some(true)));
        let (s, _) = call(&app, Some(&format!("bearer  {T} "))).await;
        assert_eq!(s, StatusCode::OK);
        for bad in [
            None,
            Some("Bearer wrong-token-000000"),
            Some(T),
            Some("Basic abc"),
        ] {
            let (s, v) = call(&app, bad).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(v["code"], "AUTH_FAILED");
            assert_eq!(v["retriable"], false);
        }
    }
}
