//! The API's one error type, and the one place where errors become status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::StatusError;
use crate::store::StoreError;

/// Every way a request can fail; the message names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON or an invalid value: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Credentials missing or not valid: 401, with a `WWW-Authenticate` challenge.
    #[error("{0}")]
    Unauthorized(String),
    /// The token lacks the route's role, or a browser check failed (Host, Origin): 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such route: 404.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A status change the lifecycle does not allow: 409.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit: 413.
    #[error("the body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The body is not JSON: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The store cannot be reached now: 503, worth a retry.
    #[error("{0}")]
    Unavailable(String),
}

/// The body of every error: `{"error": "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the field.
    pub error: String,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"millwatch\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // Whatever broke in the store, the request itself was fine: retrying later may work.
        ApiError::Unavailable(e.to_string())
    }
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        match e {
            StatusError::Refused(r) => ApiError::Conflict(r.to_string()),
            StatusError::Store(s) => s.into(),
        }
    }
}
