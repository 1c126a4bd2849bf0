//! Who is calling and what they sent: the bearer token resolved to its account
//! (401 when missing, unknown or revoked), the rights and the region scope checks
//! (403 / 404), and the body, query and cursor extractors that answer in problem
//! details naming the field at fault.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::AppState;
use super::problem::Problem;
use crate::domain::account::{Account, Right, Scope, token_hash};
use crate::domain::ids::RegionCode;
use crate::domain::task::{Move, MoveByName};
use crate::store::api::Keyset;

/// The account behind the request's bearer token.
#[derive(Debug, Clone)]
pub struct Caller(pub Account);

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("send the account's token: Authorization: Bearer <token>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let account = state
            .store
            .account_by_token(&token_hash(token))
            .await?
            .ok_or_else(|| Problem::unauthorized("unknown or revoked token"))?;
        Ok(Caller(account))
    }
}

impl Caller {
    /// 403 unless the caller's role holds `right`.
    pub fn require(&self, right: Right) -> Result<(), Problem> {
        if self.0.role.may(right) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "a {} account may not do this",
                self.0.role
            )))
        }
    }

    /// The caller's scope.
    pub fn scope(&self) -> Scope {
        self.0.scope()
    }

    /// 404 unless `code` lies in the caller's scope (what is outside does not exist
    /// for the caller).
    pub fn see(&self, code: RegionCode, what: &str) -> Result<(), Problem> {
        if self.scope().contains(code) {
            Ok(())
        } else {
            Err(Problem::not_found(what))
        }
    }

    /// A region filter of a list: inside the scope, else 404.
    pub fn narrow(&self, region: Option<&str>) -> Result<Option<Scope>, Problem> {
        let Some(text) = region else {
            return Ok(None);
        };
        let code = RegionCode::parse(text)
            .map_err(|_| Problem::bad_parameter("region", "a 12-digit region code"))?;
        self.see(code, "region")?;
        Ok(Some(Scope { region: code }))
    }
}

/// A JSON body read with its field path in every error (422), bounded by the body
/// limit (413).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Reads a JSON request body: 415 unless it is `application/json`, 413 past the
/// body limit, 400 unless it parses as JSON.
async fn read_json<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<serde_json::Value, Problem> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Problem::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        ));
    }
    let bytes = axum::body::Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    status,
                    "payload-too-large",
                    "Payload too large",
                    "the request body is larger than api.max_body_bytes",
                )
            } else {
                Problem::bad_request(rejection.body_text())
            }
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|error| Problem::bad_request(format!("the body is not JSON: {error}")))
}

/// `T` from `value`, or 422 naming the field at fault.
fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        Problem::invalid(&field, error.into_inner().to_string())
    })
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        from_value(read_json(request, state).await?).map(JsonBody)
    }
}

/// A procedure move as a body; a field at fault is named even inside the move.
#[derive(Debug)]
pub struct MoveBody(pub Move);

impl<S> FromRequest<S> for MoveBody
where
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = read_json(request, state).await?;
        if let Ok(request) = serde_json::from_value::<Move>(value.clone()) {
            return Ok(MoveBody(request));
        }
        // Read again keyed by the move's name, which tells the field at fault.
        let mut fields = match value {
            serde_json::Value::Object(fields) => fields,
            _ => return Err(Problem::invalid("body", "a JSON object with an `action`")),
        };
        let action = match fields.remove("action") {
            Some(serde_json::Value::String(action)) => action,
            _ => {
                return Err(Problem::invalid(
                    "action",
                    "missing: accept, record_visit, propose, approve, return or decide",
                ));
            }
        };
        let keyed = serde_json::json!({ action.clone(): fields });
        match serde_path_to_error::deserialize::<_, MoveByName>(keyed) {
            Ok(_) => Err(Problem::invalid("body", "not a move")),
            Err(error) => {
                let path = error.path().to_string();
                let inner = error.into_inner().to_string();
                let field = match path.split_once('.') {
                    Some((_, rest)) if !rest.is_empty() => rest.to_string(),
                    _ if inner.contains("unknown variant") => "action".to_string(),
                    _ => match inner.split('`').nth(1) {
                        Some(named) if inner.starts_with("missing field") => named.to_string(),
                        _ => "body".to_string(),
                    },
                };
                Err(Problem::invalid(&field, inner))
            }
        }
    }
}

/// Query parameters; a bad one is 400 naming it.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryParams)
            .map_err(|error| {
                let field = error.path().to_string();
                let message = error.into_inner().to_string();
                if field == "." {
                    Problem::bad_request(format!("query string: {message}"))
                } else {
                    Problem::bad_parameter(&field, message)
                }
            })
    }
}

/// The page size asked for (default from the settings, at most 500).
pub fn page_size(limit: Option<u32>, default: u32) -> Result<u32, Problem> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=crate::store::api::MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Problem::bad_parameter("limit", "from 1 to 500")),
    }
}

/// An opaque `next` cursor for a newest-first list (its sort time and id).
pub fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    // Nanoseconds: a cursor must compare equal to the time it was read from.
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let text = format!("{nanos}|{id}");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Reads a cursor made by [`encode_cursor`] (400 when it is not one).
pub fn decode_cursor(cursor: Option<&str>) -> Result<Option<Keyset>, Problem> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bad = || Problem::bad_parameter("cursor", "not a cursor this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (nanos, id) = text.split_once('|').ok_or_else(bad)?;
    let nanos: i64 = nanos.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_nanos(nanos);
    Ok(Some(Keyset {
        at,
        id: id.to_string(),
    }))
}

/// A cursor over row ids (the audit).
pub fn encode_id_cursor(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("id|{id}"))
}

/// Reads a cursor made by [`encode_id_cursor`].
pub fn decode_id_cursor(cursor: Option<&str>) -> Result<Option<i64>, Problem> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bad = || Problem::bad_parameter("cursor", "not a cursor this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("id|")
        .and_then(|id| id.parse().ok())
        .map(Some)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_strangers() {
        let at = DateTime::from_timestamp_nanos(1_714_550_400_123_456_789);
        let cursor = encode_cursor(at, "abc|def");
        let keyset = decode_cursor(Some(&cursor)).unwrap().unwrap();
        assert_eq!(keyset.at, at);
        assert_eq!(keyset.id, "abc|def");
        assert!(decode_cursor(Some("not a cursor")).is_err());
        assert_eq!(
            decode_id_cursor(Some(&encode_id_cursor(42))).unwrap(),
            Some(42)
        );
        assert!(decode_id_cursor(Some(&cursor)).is_err());
    }
}
