//! HTTP: `/healthz` (JSON status) and `/metrics` (Prometheus text).

use crate::stats::Stats;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub async fn serve(listener: tokio::net::TcpListener, stats: Arc<Stats>) {
    let app = Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(stats);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn healthz(State(s): State<Arc<Stats>>) -> Json<serde_json::Value> {
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

async fn metrics(State(s): State<Arc<Stats>>) -> String {
    s.prometheus()
}
