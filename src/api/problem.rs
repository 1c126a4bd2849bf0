//! Errors as RFC 9457 problem details (`application/problem+json`): a type URI, a
//! title, the status, a detail in words and, where a field or rule is at fault, the
//! field. Every refusal of the API goes out through [`Problem`]; internal errors are
//! logged once here and never show their cause to the caller.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::task::ProcedureError;
use crate::store::StoreError;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as a path into the request (`outcome`, `publicity_to`, `limit`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A problem detail (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, in words.
    pub detail: String,
    /// Fields at fault, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem of `status`; `slug` names its type.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("https://yujing.example/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// 400: the request cannot be read.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 400 naming the parameter at fault.
    pub fn bad_parameter(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Problem::bad_request(format!("{field}: {message}")).with_field(field, message)
    }

    /// 401: no valid token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// 403: the caller's role lacks the right.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404: nothing there, or nothing the caller may see (the two look the same).
    pub fn not_found(what: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no {what} here (or not in your region)"),
        )
    }

    /// 409: the move is not possible now.
    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, slug, "Conflict", detail)
    }

    /// 422: the request reads but a field is wrong.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            format!("{field}: {message}"),
        )
        .with_field(field, message)
    }

    /// 500: logged here with its cause; the caller learns nothing of it.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %crate::telemetry::Chain(error), "API request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed on the server's side; it is logged",
        )
    }

    /// 503: the store is unreachable (retry later).
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    /// The same problem naming a field.
    pub fn with_field(mut self, field: &str, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"yujing\""),
            );
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            tracing::warn!(error = %crate::telemetry::Chain(&error), "store unavailable for an API request");
            return Problem::unavailable("the store is unavailable; retry shortly");
        }
        match error {
            StoreError::Conflict(detail) => Problem::conflict("conflict", detail),
            other => Problem::internal(&other),
        }
    }
}

impl From<ProcedureError> for Problem {
    fn from(error: ProcedureError) -> Self {
        match &error {
            ProcedureError::Forbidden { .. } => Problem::forbidden(error.to_string()),
            ProcedureError::IllegalMove { .. } => {
                Problem::conflict("illegal-transition", error.to_string())
            }
            ProcedureError::Stale { .. } => Problem::conflict("stale-version", error.to_string()),
            ProcedureError::Invalid { field, message } => Problem::invalid(field, message.clone()),
        }
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, Problem>;
