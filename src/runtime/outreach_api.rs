//! The API of revisits and of callers' numbers (bearer token, like every `/api/*`):
//! - `POST /api/revisits` with a JSON array of `{"case","number","unit","due"}`: 202 with
//!   `{"accepted": N}`, or 400 with the reason for each bad case and nothing stored;
//! - `GET /api/revisits/{case}`: `{"case","state","attempts","rating",…}` (404 if unknown);
//! - `GET /api/calls`: the calls in progress, numbers masked (`anonymous` when confidential);
//! - `GET /api/calls/{call_id}/number`: the full number, logged and stored with the token's
//!   name that read it.
//!
//! Requests go to call control as [`OutreachCommand`]s over a channel of their own.

use super::http::token_name;
use crate::revisit::NewCase;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the API asks of call control.
pub enum OutreachCommand {
    Revisits {
        cases: Vec<NewCase>,
        reply: oneshot::Sender<Result<usize, crate::core::RevisitError>>,
    },
    Revisit {
        case: String,
        reply: oneshot::Sender<Option<crate::core::RevisitView>>,
    },
    Calls {
        reply: oneshot::Sender<Vec<crate::core::CallView>>,
    },
    Number {
        call_id: String,
        by: String,
        reply: oneshot::Sender<Result<serde_json::Value, crate::core::NumberReadError>>,
    },
}

#[derive(Clone)]
struct ApiState {
    tokens: Arc<Vec<(String, String)>>,
    commands: mpsc::Sender<OutreachCommand>,
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn error(code: StatusCode, msg: impl Into<String>) -> Reply {
    (code, Json(serde_json::json!({ "error": msg.into() })))
}

/// The routes, to be merged into the HTTP server's.
pub fn router(
    tokens: &std::collections::BTreeMap<String, String>,
    commands: mpsc::Sender<OutreachCommand>,
) -> Router {
    Router::new()
        .route("/api/revisits", post(post_revisits))
        .route("/api/revisits/{case}", get(get_revisit))
        .route("/api/calls", get(get_calls))
        .route("/api/calls/{call_id}/number", get(get_number))
        .with_state(ApiState {
            tokens: Arc::new(tokens.clone().into_iter().collect()),
            commands,
        })
}

fn auth(a: &ApiState, headers: &HeaderMap) -> Result<String, Reply> {
    token_name(&a.tokens, headers).map_err(|(c, m)| error(c, m.trim()))
}

async fn ask<T>(
    a: &ApiState,
    cmd: impl FnOnce(oneshot::Sender<T>) -> OutreachCommand,
) -> Result<T, Reply> {
    let (tx, rx) = oneshot::channel();
    a.commands
        .send(cmd(tx))
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    rx.await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
}

async fn post_revisits(State(a): State<ApiState>, headers: HeaderMap, body: String) -> Reply {
    let who = match auth(&a, &headers) {
        Ok(w) => w,
        Err(e) => return e,
    };
    // Parsed here (not by an extractor) so a malformed body gets a reason too.
    let cases: Vec<NewCase> = match serde_json::from_str(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    serde_json::json!({ "error": "not a JSON array of cases", "reasons": [e.to_string()] }),
                ),
            );
        }
    };
    match ask(&a, |reply| OutreachCommand::Revisits { cases, reply }).await {
        Ok(Ok(n)) => {
            tracing::info!(by = %who, accepted = n, "revisit cases posted");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "accepted": n })),
            )
        }
        Ok(Err(crate::core::RevisitError::BadCases(reasons))) => (
            StatusCode::BAD_REQUEST,
            Json(
                serde_json::json!({ "error": "bad cases; nothing was stored", "reasons": reasons }),
            ),
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => e,
    }
}

async fn get_revisit(
    State(a): State<ApiState>,
    headers: HeaderMap,
    Path(case): Path<String>,
) -> Reply {
    if let Err(e) = auth(&a, &headers) {
        return e;
    }
    match ask(&a, |reply| OutreachCommand::Revisit {
        case: case.clone(),
        reply,
    })
    .await
    {
        Ok(Some(v)) => (
            StatusCode::OK,
            Json(serde_json::to_value(v).unwrap_or_default()),
        ),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no case {case:?}")),
        Err(e) => e,
    }
}

async fn get_calls(State(a): State<ApiState>, headers: HeaderMap) -> Reply {
    if let Err(e) = auth(&a, &headers) {
        return e;
    }
    match ask(&a, |reply| OutreachCommand::Calls { reply }).await {
        Ok(v) => (
            StatusCode::OK,
            Json(serde_json::to_value(v).unwrap_or_default()),
        ),
        Err(e) => e,
    }
}

async fn get_number(
    State(a): State<ApiState>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Reply {
    let who = match auth(&a, &headers) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let by = format!("http api ({who})");
    match ask(&a, |reply| OutreachCommand::Number { call_id, by, reply }).await {
        Ok(Ok(v)) => (StatusCode::OK, Json(v)),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => e,
    }
}
