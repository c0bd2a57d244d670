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
    /// The body did not arrive within `--body-timeout`: 408.
    #[error("{0}")]
    Timeout(String),
    /// The body is not JSON: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The store cannot be reached now, or its disk is full: 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the server itself, such as damaged stored data: 500 saying what was lost.
    #[error("{0}")]
    Internal(String),
}

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

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
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
        let retry = status == StatusCode::SERVICE_UNAVAILABLE;
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
        if retry {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The full message (paths included) goes to the log; the answer names no path of the
        // server's file system (SPEC §4).
        tracing::warn!(error = %e, "store error");
        let message = without_paths(&e.to_string());
        match e {
            // Worth a retry: the database comes back, or space is freed.
            StoreError::Unavailable(_) | StoreError::DiskFull(_) => ApiError::Unavailable(message),
            // Retrying will not help: the server says what it cannot give.
            StoreError::Damaged(_) | StoreError::Failed(_) => ApiError::Internal(message),
        }
    }
}

/// `message` with every absolute file-system path cut to its last component.
pub(crate) fn without_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find('/') {
        // A path starts at a '/' that begins a word (or follows a quote or parenthesis).
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | '=' | ':'));
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ',' | ';'))
            .map_or(rest.len(), |n| at + n);
        let word = &rest[at..end];
        out.push_str(&rest[..at]);
        if starts_word && word[1..].contains('/') && !word.starts_with("//") {
            let file = word.trim_end_matches(['.', ':']);
            let tail = &word[file.len()..];
            out.push_str(file.rsplit('/').next().unwrap_or(""));
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        match e {
            StatusError::Refused(r) => ApiError::Conflict(r.to_string()),
            StatusError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_no_path_of_the_server() {
        let cases = [
            (
                "cannot sync /var/lib/mw/millwatch.db-log.3: No space left on device",
                "cannot sync millwatch.db-log.3: No space left on device",
            ),
            (
                "cannot open \"/a/b/c.db\" (read-only)",
                "cannot open \"c.db\" (read-only)",
            ),
            (
                "chunk of press-01 from 2026-01-01T00:00:00Z",
                "chunk of press-01 from 2026-01-01T00:00:00Z",
            ),
            ("relative a/b stays", "relative a/b stays"),
            (
                "url postgres://host/db stays",
                "url postgres://host/db stays",
            ),
            ("/", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(without_paths(input), want, "{input}");
        }
    }

    #[test]
    fn store_errors_map_to_their_classes() {
        let status = |e: StoreError| ApiError::from(e).status();
        assert_eq!(
            status(StoreError::Unavailable("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(StoreError::DiskFull("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(StoreError::Damaged("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(StoreError::Failed("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let enospc = std::io::Error::from_raw_os_error(28);
        assert!(matches!(
            StoreError::classify(enospc),
            StoreError::DiskFull(_)
        ));
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert!(matches!(
            StoreError::classify(corrupt),
            StoreError::Damaged(_)
        ));
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(matches!(
            StoreError::classify(full),
            StoreError::DiskFull(_)
        ));
        assert!(matches!(
            StoreError::classify("text".to_owned()),
            StoreError::Failed(_)
        ));
    }
}
