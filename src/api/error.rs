//! Errors as the API answers them, and the one mapping from stable codes to
//! HTTP statuses. Native routes answer `{code, message, retriable,
//! retry_after_ms?, policy_label?}`; OpenAI routes answer OpenAI's
//! `{"error": {...}}`. Backpressure carries `Retry-After` (seconds, rounded
//! up) and `X-Backoff-Ms` on both.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::control::ControlError;
use crate::store::StoreError;
use crate::transport::ErrorCode;

/// Which error body to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Native,
    OpenAi,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    pub policy_label: Option<&'static str>,
    pub flavor: Flavor,
}

/// The HTTP status of a stable code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidParams | ErrorCode::CtxExceeded | ErrorCode::DeadlineUnmet => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
        ErrorCode::PoolUnready
        | ErrorCode::PoolUnavailable
        | ErrorCode::VramOom
        | ErrorCode::HostOom => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::AdmissionReject | ErrorCode::QueueFullDropLru => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Canceled => StatusCode::CONFLICT,
        ErrorCode::WorkerLost => StatusCode::BAD_GATEWAY,
        ErrorCode::AuthFailed => StatusCode::UNAUTHORIZED,
        ErrorCode::CudaError | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            code,
            message: message.into(),
            retry_after_ms: None,
            policy_label: None,
            flavor: Flavor::Native,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidParams, message)
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(format!("no {what} {id:?}"))
        }
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::invalid(format!("request body is larger than {limit} bytes"))
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn openai(mut self) -> ApiError {
        self.flavor = Flavor::OpenAi;
        self
    }

    pub fn retriable(&self) -> bool {
        self.code.retriable() || self.retry_after_ms.is_some()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let code = e.code();
        let status = match &e {
            ControlError::NotFound { .. } => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            _ => status_of(code),
        };
        let policy_label = match &e {
            ControlError::Backpressure { policy_label, .. } => Some(*policy_label),
            _ => None,
        };
        ApiError {
            status,
            code,
            retry_after_ms: e.retry_after_ms(),
            policy_label,
            message: e.to_string(),
            flavor: Flavor::Native,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match e {
            StoreError::NotFound(_) => ApiError::new(ErrorCode::ModelNotFound, message),
            StoreError::AlreadyExists(_) | StoreError::StagingInProgress(_) => {
                ApiError::invalid(message).with_status(StatusCode::CONFLICT)
            }
            StoreError::InvalidId { .. }
            | StoreError::InvalidSha256(_)
            | StoreError::Sha256Mismatch { .. }
            | StoreError::InvalidModel { .. } => ApiError::invalid(message),
            StoreError::Io { op: "open", .. } | StoreError::Io { op: "stat", .. } => {
                ApiError::invalid(message)
            }
            _ => ApiError::new(ErrorCode::Internal, message),
        }
    }
}

#[derive(Serialize)]
struct NativeBody<'a> {
    code: &'static str,
    message: &'a str,
    retriable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_label: Option<&'static str>,
}

#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiInner<'a>,
}

#[derive(Serialize)]
struct OpenAiInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: String,
}

/// `Retry-After` (whole seconds, rounded up) and `X-Backoff-Ms`.
pub fn backoff_headers(headers: &mut HeaderMap, retry_after_ms: u64) {
    let secs = retry_after_ms.div_ceil(1000).max(1);
    headers.insert("retry-after", HeaderValue::from(secs));
    headers.insert("x-backoff-ms", HeaderValue::from(retry_after_ms));
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retriable = self.retriable();
        let mut resp = match self.flavor {
            Flavor::Native => (
                self.status,
                axum::Json(NativeBody {
                    code: self.code.as_str(),
                    message: &self.message,
                    retriable,
                    retry_after_ms: self.retry_after_ms,
                    policy_label: self.policy_label,
                }),
            )
                .into_response(),
            Flavor::OpenAi => {
                let kind = match self.status {
                    StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                    StatusCode::UNAUTHORIZED => "authentication_error",
                    s if s.is_server_error() => "server_error",
                    _ => "invalid_request_error",
                };
                (
                    self.status,
                    axum::Json(OpenAiBody {
                        error: OpenAiInner {
                            message: &self.message,
                            kind,
                            param: None,
                            code: self.code.as_str().to_ascii_lowercase(),
                        },
                    }),
                )
                    .into_response()
            }
        };
        if let Some(ms) = self.retry_after_ms {
            if self.status == StatusCode::TOO_MANY_REQUESTS
                || self.status == StatusCode::SERVICE_UNAVAILABLE
                || retriable
            {
                backoff_headers(resp.headers_mut(), ms);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_4xx_or_5xx_status() {
        for c in ErrorCode::ALL {
            let s = status_of(c);
            assert!(s.is_client_error() || s.is_server_error(), "{c}");
        }
        assert_eq!(
            status_of(ErrorCode::AdmissionReject),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(ErrorCode::PoolUnavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of(ErrorCode::CtxExceeded), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn backpressure_carries_headers_and_body() {
        let e = ApiError::from(ControlError::Backpressure {
            code: ErrorCode::AdmissionReject,
            message: "full".into(),
            retry_after_ms: 1500,
            policy_label: "reject",
        });
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["x-backoff-ms"], "1500");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "ADMISSION_REJECT");
        assert_eq!(v["retriable"], true);
        assert_eq!(v["retry_after_ms"], 1500);
        assert_eq!(v["policy_label"], "reject");
    }

    #[tokio::test]
    async fn openai_flavor_has_openai_shape() {
        let resp = ApiError::new(ErrorCode::ModelNotFound, "no model x")
            .openai()
            .into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "no model x");
    }
}
