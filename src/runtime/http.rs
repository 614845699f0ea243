//! HTTP: `/healthz` (JSON status), `/metrics` (Prometheus text), `GET /api/seats` (seats,
//! registrations, agent states) and `POST /api/seats/{id}/state` (log in, log out, pause,
//! unpause an agent). With `http.token` set, `/api/*` needs `Authorization: Bearer <token>`.

use crate::core::{AgentAction, SeatDirectory};
use crate::stats::Stats;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// An agent state change asked through the API, carried to the core task.
pub struct ApiCommand {
    pub seat: String,
    pub action: AgentAction,
    pub by: String,
    pub reply: oneshot::Sender<Result<crate::acd::agent::State, String>>,
}

#[derive(Clone)]
struct AppState {
    stats: Arc<Stats>,
    seats: SeatDirectory,
    commands: mpsc::Sender<ApiCommand>,
    token: Option<Arc<str>>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    seats: SeatDirectory,
    commands: mpsc::Sender<ApiCommand>,
    token: Option<String>,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/seats", get(api_seats))
        .route("/api/seats/{id}/state", post(api_seat_state))
        .with_state(AppState { stats, seats, commands, token: token.map(Arc::from) });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

fn authorized(a: &AppState, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let Some(token) = &a.token else { return Ok(()) };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token.as_ref()) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n".into()))
    }
}

async fn api_seats(State(a): State<AppState>, headers: HeaderMap) -> Result<Json<Vec<crate::core::SeatView>>, (StatusCode, String)> {
    authorized(&a, &headers)?;
    let mut seats: Vec<_> = a.seats.iter().map(|e| e.value().clone()).collect();
    seats.sort_by(|x, y| x.seat.id.cmp(&y.seat.id));
    Ok(Json(seats))
}

#[derive(Deserialize)]
struct StateChange {
    action: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn api_seat_state(
    State(a): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<StateChange>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    authorized(&a, &headers)?;
    let action = match req.action.as_str() {
        "login" => AgentAction::Login,
        "logout" => AgentAction::Logout,
        "pause" => AgentAction::Pause(req.reason.unwrap_or_else(|| "暂停".into())),
        "unpause" => AgentAction::Unpause,
        other => return Err((StatusCode::BAD_REQUEST, format!("unknown action {other:?}: login, logout, pause, unpause\n"))),
    };
    let (reply, rx) = oneshot::channel();
    let cmd = ApiCommand { seat: id, action, by: "http api".into(), reply };
    a.commands.send(cmd).await.map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()))?;
    match rx.await {
        Ok(Ok(state)) => Ok(Json(serde_json::json!({ "state": state }))),
        Ok(Err(e)) if e.starts_with("no seat") => Err((StatusCode::NOT_FOUND, e + "\n")),
        Ok(Err(e)) => Err((StatusCode::CONFLICT, e + "\n")),
        Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())),
    }
}

async fn healthz(State(a): State<AppState>) -> Json<serde_json::Value> {
    let s = &a.stats;
    Json(serde_json::json!({
        "status": "ok",
        "calls_active": Stats::get(&s.calls_active),
        "calls_answered": Stats::get(&s.calls_answered),
        "invites": Stats::get(&s.invites),
        "sip_malformed_answered": Stats::get(&s.malformed_answered),
        "sip_malformed_dropped": Stats::get(&s.malformed_dropped),
        "rtp_sent": Stats::get(&s.rtp_sent),
        "rtp_frames_skipped": Stats::get(&s.rtp_frames_skipped),
    }))
}

async fn metrics(State(a): State<AppState>) -> String {
    a.stats.prometheus()
}
