//! HTTP: `/healthz` (JSON status), `/metrics` (Prometheus text), `/api/seats` (seats and
//! their registrations).

use crate::core::SeatDirectory;
use crate::stats::Stats;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    stats: Arc<Stats>,
    seats: SeatDirectory,
}

pub async fn serve(listener: tokio::net::TcpListener, stats: Arc<Stats>, seats: SeatDirectory) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/seats", get(api_seats))
        .with_state(AppState { stats, seats });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn api_seats(State(a): State<AppState>) -> Json<Vec<crate::core::SeatView>> {
    let mut seats: Vec<_> = a.seats.iter().map(|e| e.value().clone()).collect();
    seats.sort_by(|x, y| x.seat.id.cmp(&y.seat.id));
    Json(seats)
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
