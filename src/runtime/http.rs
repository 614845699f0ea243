//! HTTP: `/healthz` (JSON status), `/metrics` (Prometheus text), `GET /api/seats` (seats,
//! registrations, agent states) and `POST /api/seats/{id}/state` (log in, log out, pause,
//! unpause an agent). `/api/*` needs `Authorization: Bearer <token>` with one of
//! `http.tokens`; with none configured the API is closed. Changes are logged with the token's
//! name. `POST /api/seats/{id}/transfer` and `/handoff` start a three-way transfer or an
//! emergency hand-off of the seat's call. `GET /wallboard` is the ops wallboard page: served without a token because it holds
//! no data; its script reads the token from the URL fragment and fetches `/api/*` with it.

use crate::core::{AgentAction, QueueDirectory, SeatDirectory};
use crate::stats::Stats;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the API asks of a seat.
pub enum ApiAction {
    State(AgentAction),
    /// Three-way transfer of the seat's call to `number`; `emergency` = the one-key hand-off
    /// (only emergency targets).
    Transfer {
        number: String,
        emergency: bool,
    },
}

/// A seat action asked through the API, carried to the core task.
pub struct ApiCommand {
    pub seat: String,
    pub action: ApiAction,
    pub by: String,
    pub reply: oneshot::Sender<Result<serde_json::Value, String>>,
}

#[derive(Clone)]
pub(super) struct AppState {
    stats: Arc<Stats>,
    pub(super) seats: SeatDirectory,
    pub(super) queues: QueueDirectory,
    commands: mpsc::Sender<ApiCommand>,
    /// (name, token)
    tokens: Arc<Vec<(String, String)>>,
    /// The agent desk's sign-in and sessions.
    pub(super) desk: Arc<super::desk::Desk>,
    /// SIP over WebSocket: the connection table and the way to the core.
    sip: Option<SipWs>,
}

/// What `/sip` needs to hand a browser's SIP to the core.
#[derive(Clone)]
pub struct SipWs {
    pub conns: super::tcp::Connections,
    pub to_core: mpsc::Sender<super::StreamEvent>,
}

/// What the HTTP listener serves besides the views.
pub struct Extras {
    pub desk: super::desk::Desk,
    pub sip: Option<SipWs>,
    /// HTTPS beside the plain listener.
    pub https: Option<Https>,
    /// The callback and revisit API (`outreach_api`), merged into the same router.
    pub outreach: Router,
}

/// The HTTPS listener, its certificate and the handshake time limit.
pub struct Https {
    pub listener: std::net::TcpListener,
    pub certs: super::tls::Certificates,
    pub handshake: std::time::Duration,
}

/// The peer of an HTTP connection (plain or TLS), for handlers that log or limit by it.
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Remote
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Remote {
        Remote(*s.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for Remote
{
    fn connect_info(s: axum::serve::IncomingStream<'_, TlsListener>) -> Remote {
        Remote(*s.remote_addr())
    }
}

/// HTTPS: handshakes run concurrently (each bounded in time), finished connections are
/// handed to the server; one that fails or stalls is logged and touches nothing else.
pub struct TlsListener {
    ready: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    fn start(
        tcp: tokio::net::TcpListener,
        certs: super::tls::Certificates,
        handshake: std::time::Duration,
        stats: Arc<Stats>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(acceptor) = certs.acceptor() else {
                    continue;
                };
                let (tx, stats) = (tx.clone(), stats.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            Stats::inc(&stats.tls_handshake_failures);
                            tracing::debug!(%addr, error = %e, "HTTPS handshake failed");
                        }
                        Err(_) => {
                            Stats::inc(&stats.tls_handshake_failures);
                            tracing::debug!(%addr, "HTTPS handshake did not finish in time");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task is gone only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves HTTP on a thread of its own (with its own small runtime), so `/healthz` and
/// `/metrics` answer whatever load the call-control thread carries: they read only shared
/// counters and the views call control publishes.
pub fn spawn(
    listener: std::net::TcpListener,
    stats: Arc<Stats>,
    seats: SeatDirectory,
    queues: QueueDirectory,
    commands: mpsc::Sender<ApiCommand>,
    tokens: std::collections::BTreeMap<String, String>,
    extras: Extras,
) {
    let started = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the HTTP runtime");
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, stats, seats, queues, commands, tokens, extras).await,
                    Err(e) => tracing::error!(error = %e, "HTTP listener unusable"),
                }
            });
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the HTTP thread");
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    seats: SeatDirectory,
    queues: QueueDirectory,
    commands: mpsc::Sender<ApiCommand>,
    tokens: std::collections::BTreeMap<String, String>,
    extras: Extras,
) {
    use super::desk;
    let tls_stats = stats.clone();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/seats", get(api_seats))
        .route("/api/seats/{id}/state", post(api_seat_state))
        .route("/api/seats/{id}/transfer", post(api_seat_transfer))
        .route("/api/seats/{id}/handoff", post(api_seat_handoff))
        .route("/api/queues", get(api_queues))
        .route("/wallboard", get(wallboard))
        .route("/sip", get(sip_websocket))
        .route("/agent", get(desk::page))
        .route("/agent/jssip.js", get(desk::jssip))
        .route("/agent/api/login", post(desk::login))
        .route("/agent/api/logout", post(desk::logout))
        .route("/agent/api/me", get(desk::me))
        .route("/agent/api/state", post(desk::state))
        .route("/agent/api/transfer", post(desk::transfer))
        .route("/agent/api/handoff", post(desk::handoff))
        .with_state(AppState {
            stats,
            seats,
            queues,
            commands,
            tokens: Arc::new(tokens.into_iter().collect()),
            desk: Arc::new(extras.desk),
            sip: extras.sip,
        })
        .merge(extras.outreach);
    if let Some(h) = extras.https {
        let app = app.clone();
        let started = tokio::net::TcpListener::from_std(h.listener)
            .and_then(|l| TlsListener::start(l, h.certs, h.handshake, tls_stats));
        match started {
            Ok(l) => {
                tokio::spawn(async move {
                    let app = app.into_make_service_with_connect_info::<Remote>();
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::error!(error = %e, "HTTPS server stopped");
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "HTTPS listener unusable"),
        }
    }
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<Remote>(),
    )
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

/// The name of the caller's token, or why it may not pass.
fn authorized(a: &AppState, headers: &HeaderMap) -> Result<String, (StatusCode, String)> {
    token_name(&a.tokens, headers)
}

/// The name of the bearer token in `headers` among `tokens` (name, token), or why it may not
/// pass (also for the routes of `outreach_api`).
pub(super) fn token_name(
    tokens: &[(String, String)],
    headers: &HeaderMap,
) -> Result<String, (StatusCode, String)> {
    if tokens.is_empty() {
        return Err((
            StatusCode::UNAUTHORIZED,
            "the API is closed: no http.tokens are configured\n".into(),
        ));
    }
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err((StatusCode::UNAUTHORIZED, "missing bearer token\n".into()));
    };
    // Compared in constant time: the time taken must not tell how much of a token was right.
    tokens
        .iter()
        .find(|(_, t)| {
            t.len() == given.len()
                && t.bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0
        })
        .map(|(name, _)| name.clone())
        .ok_or((StatusCode::UNAUTHORIZED, "wrong bearer token\n".into()))
}

async fn api_seats(
    State(a): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::core::SeatView>>, (StatusCode, String)> {
    authorized(&a, &headers)?;
    let mut seats: Vec<_> = a.seats.iter().map(|e| e.value().clone()).collect();
    seats.sort_by(|x, y| x.seat.id.cmp(&y.seat.id));
    Ok(Json(seats))
}

async fn api_queues(
    State(a): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::core::QueueView>>, (StatusCode, String)> {
    authorized(&a, &headers)?;
    let mut queues: Vec<_> = a.queues.iter().map(|e| e.value().clone()).collect();
    queues.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(Json(queues))
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
    let who = authorized(&a, &headers)?;
    let action = match req.action.as_str() {
        "login" => AgentAction::Login,
        "logout" => AgentAction::Logout,
        "pause" => AgentAction::Pause(req.reason.unwrap_or_else(|| "暂停".into())),
        "unpause" => AgentAction::Unpause,
        other => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}: login, logout, pause, unpause\n"),
            ));
        }
    };
    ask(&a, id, ApiAction::State(action), who).await
}

/// `GET /sip`: SIP over WebSocket (RFC 7118). The browser must ask for the subprotocol `sip`.
async fn sip_websocket(
    State(a): State<AppState>,
    axum::extract::ConnectInfo(Remote(from)): axum::extract::ConnectInfo<Remote>,
    headers: HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(sip) = a.sip.clone() else {
        return (StatusCode::NOT_FOUND, "SIP over WebSocket is off\n").into_response();
    };
    let asked = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(super::ws::SUBPROTOCOL));
    if !asked {
        tracing::warn!(%from, "WebSocket without the subprotocol sip refused");
        return (
            StatusCode::BAD_REQUEST,
            "ask for the WebSocket subprotocol \"sip\" (RFC 7118)\n",
        )
            .into_response();
    }
    // SIP messages are a few KiB and each goes out at once: small buffers (tungstenite's
    // default of 128 KiB each way held ~110 KiB per registered browser seat).
    ws.protocols([super::ws::SUBPROTOCOL])
        .max_message_size(super::ws::MAX_MESSAGE)
        .max_frame_size(super::ws::MAX_MESSAGE)
        .read_buffer_size(super::ws::READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * super::ws::MAX_MESSAGE)
        .on_upgrade(move |socket| super::ws::serve(socket, from, sip.conns, sip.to_core))
}

/// Carries one seat action to the core task and its answer back.
pub(super) async fn ask(
    a: &AppState,
    seat: String,
    action: ApiAction,
    who: String,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let (reply, rx) = oneshot::channel();
    let cmd = ApiCommand {
        seat,
        action,
        by: format!("http api ({who})"),
        reply,
    };
    a.commands
        .send(cmd)
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()))?;
    match rx.await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(e)) if e.starts_with("no seat") || e.contains("not a configured") => {
            Err((StatusCode::NOT_FOUND, e + "\n"))
        }
        Ok(Err(e)) if e.contains("capacity") || e.contains("cannot dial") => {
            Err((StatusCode::SERVICE_UNAVAILABLE, e + "\n"))
        }
        Ok(Err(e)) => Err((StatusCode::CONFLICT, e + "\n")),
        Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())),
    }
}

#[derive(Deserialize)]
struct TransferRequest {
    number: String,
}

/// `POST /api/seats/{id}/transfer {"number": "12366"}`: three-way transfer of the seat's call.
async fn api_seat_transfer(
    State(a): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<TransferRequest>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let who = authorized(&a, &headers)?;
    ask(
        &a,
        id,
        ApiAction::Transfer {
            number: req.number,
            emergency: false,
        },
        who,
    )
    .await
}

/// `POST /api/seats/{id}/handoff {"number": "110"}`: the one-key emergency hand-off.
async fn api_seat_handoff(
    State(a): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<TransferRequest>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let who = authorized(&a, &headers)?;
    ask(
        &a,
        id,
        ApiAction::Transfer {
            number: req.number,
            emergency: true,
        },
        who,
    )
    .await
}

/// The wallboard: a static page, the same bytes for everyone. Open, unlike `/api/*`, because
/// it holds no data (every figure it shows is fetched with the token from `/wallboard#token=…`,
/// and a fragment is never sent to the server, so the token is in no request line or log).
const WALLBOARD_HTML: &str = include_str!("wallboard.html");

/// The page's script and style are inline and ours, and data reaches the DOM only as text; the
/// policy's real job is `connect-src 'self'`: the token can be sent nowhere but this daemon.
const WALLBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn wallboard() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, WALLBOARD_CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // A reload after an upgrade must get the new page, not a cached old one.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        WALLBOARD_HTML,
    )
}

/// The daemon's state for monitors and load balancers: 200 when it takes new calls, 503 while
/// it sheds them for lateness (`overloaded`) or drains after SIGTERM (`draining`).
async fn healthz(State(a): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let s = &a.stats;
    let (status, code) = if Stats::get(&s.draining) == 1 {
        ("draining", StatusCode::SERVICE_UNAVAILABLE)
    } else if Stats::get(&s.overloaded) == 1 {
        ("overloaded", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    (
        code,
        Json(serde_json::json!({
            "status": status,
            "calls_shed": Stats::get(&s.calls_shed),
            "calls_shed_lag": Stats::get(&s.calls_shed_lag),
            "calls_shed_ceiling": Stats::get(&s.calls_shed_ceiling),
            "calls_shed_ports": Stats::get(&s.calls_shed_ports),
            "calls_busy_prompt": Stats::get(&s.calls_busy_prompt),
            "event_loop_lag_us": Stats::get(&s.loop_lag_us),
            "calls_active": Stats::get(&s.calls_active),
            "calls_answered": Stats::get(&s.calls_answered),
            "invites": Stats::get(&s.invites),
            "sip_malformed_answered": Stats::get(&s.malformed_answered),
            "sip_malformed_dropped": Stats::get(&s.malformed_dropped),
            "rtp_sent": Stats::get(&s.rtp_sent),
            "rtp_frames_skipped": Stats::get(&s.rtp_frames_skipped),
        })),
    )
}

async fn metrics(State(a): State<AppState>) -> String {
    let mut out = a.stats.prometheus();
    let mut seats: Vec<_> = a.seats.iter().map(|e| e.value().clone()).collect();
    seats.sort_by(|x, y| x.seat.id.cmp(&y.seat.id));
    let counters: [(&str, &str, fn(&crate::acd::agent::Counters) -> u64); 5] = [
        (
            "hotline_seat_offered_total",
            "Calls offered to the seat",
            |c| c.offered,
        ),
        (
            "hotline_seat_answered_total",
            "Offers the seat answered",
            |c| c.answered,
        ),
        (
            "hotline_seat_missed_total",
            "Offers that rang out (ring-no-answer)",
            |c| c.missed,
        ),
        (
            "hotline_seat_rejected_total",
            "Offers the seat declined",
            |c| c.rejected,
        ),
        (
            "hotline_seat_failed_total",
            "Offers the seat's phone failed",
            |c| c.failed,
        ),
    ];
    for (name, help, get) in counters {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for s in &seats {
            out.push_str(&format!(
                "{name}{{seat=\"{}\",unit=\"{}\"}} {}\n",
                label(&s.seat.id),
                label(&s.seat.unit),
                get(&s.counters)
            ));
        }
    }
    out.push_str("# HELP hotline_seat_registered Whether the seat has a live registration\n# TYPE hotline_seat_registered gauge\n");
    for s in &seats {
        out.push_str(&format!(
            "hotline_seat_registered{{seat=\"{}\"}} {}\n",
            label(&s.seat.id),
            u8::from(s.registered)
        ));
    }
    out.push_str("# HELP hotline_seat_state The seat's agent state (1 for the current one)\n# TYPE hotline_seat_state gauge\n");
    for s in &seats {
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!(
            "hotline_seat_state{{seat=\"{}\",state=\"{state}\"}} 1\n",
            label(&s.seat.id)
        ));
    }
    let mut queues: Vec<_> = a.queues.iter().map(|e| e.value().clone()).collect();
    queues.sort_by(|x, y| x.name.cmp(&y.name));
    out.push_str("# HELP hotline_queue_waiting Callers waiting for a seat\n# TYPE hotline_queue_waiting gauge\n");
    for q in &queues {
        out.push_str(&format!(
            "hotline_queue_waiting{{queue=\"{}\"}} {}\n",
            label(&q.name),
            q.waiting
        ));
    }
    // Who can answer each queue (as on the wallboard): the alert on a seat group with nobody
    // logged in needs the members, so that queues without seats (lines sent on elsewhere) stay
    // quiet.
    type QueueCount = fn(&crate::core::QueueView, &[crate::core::SeatView]) -> usize;
    let staffing: [(&str, &str, QueueCount); 3] = [
        (
            "hotline_queue_members",
            "Seats configured to serve the queue",
            |q, seats| {
                seats
                    .iter()
                    .filter(|s| s.seat.queues.contains(&q.name))
                    .count()
            },
        ),
        (
            "hotline_queue_agents_logged_in",
            "Members logged in (available, busy, in wrap-up or paused)",
            |q, _| q.agents_logged_in,
        ),
        (
            "hotline_queue_agents_available",
            "Members free to take the next caller",
            |q, _| q.agents_available,
        ),
    ];
    for (name, help, get) in staffing {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for q in &queues {
            out.push_str(&format!(
                "{name}{{queue=\"{}\"}} {}\n",
                label(&q.name),
                get(q, &seats)
            ));
        }
    }
    out.push_str("# HELP hotline_queue_longest_wait_seconds The longest current wait\n# TYPE hotline_queue_longest_wait_seconds gauge\n");
    for q in &queues {
        out.push_str(&format!(
            "hotline_queue_longest_wait_seconds{{queue=\"{}\"}} {}\n",
            label(&q.name),
            q.longest_wait_s
        ));
    }
    type QueueFigure = fn(&crate::metrics::figures::QueueFigures) -> f64;
    let today: [(&str, &str, QueueFigure); 14] = [
        (
            "hotline_queue_offered_today",
            "Callers who entered the queue today",
            |f| f.offered as f64,
        ),
        (
            "hotline_queue_answered_today",
            "Callers answered by a seat today",
            |f| f.answered as f64,
        ),
        (
            "hotline_queue_abandoned_today",
            "Callers who hung up while waiting today",
            |f| f.abandoned as f64,
        ),
        (
            "hotline_queue_short_abandoned_today",
            "Abandons within the queue's short_abandon_s today",
            |f| f.short_abandoned as f64,
        ),
        (
            "hotline_queue_timed_out_today",
            "Callers sent on at the maximum wait today",
            |f| f.timed_out as f64,
        ),
        (
            "hotline_queue_service_level_15s",
            "Share answered within 15 s today (short abandons excluded)",
            |f| f.service_level_15s,
        ),
        (
            "hotline_queue_service_level_30s",
            "Share answered within 30 s today (short abandons excluded)",
            |f| f.service_level_30s,
        ),
        (
            "hotline_queue_asa_seconds",
            "Average speed of answer today",
            |f| f.asa_s,
        ),
        (
            "hotline_queue_aht_seconds",
            "Average handle time (talk + wrap-up) today",
            |f| f.aht_s,
        ),
        (
            "hotline_queue_max_wait_seconds",
            "Longest wait of a caller who left the queue today",
            |f| f.longest_wait_s,
        ),
        (
            "hotline_queue_satisfaction_rate",
            "Satisfied and basically satisfied / ratings given today",
            |f| f.survey.satisfaction_rate,
        ),
        (
            "hotline_queue_callbacks_requested_today",
            "Callbacks (keeping the caller's place) asked for today",
            |f| f.callbacks_requested as f64,
        ),
        (
            "hotline_queue_callbacks_answered_today",
            "Callbacks whose citizen answered and was bridged today",
            |f| f.callbacks_answered as f64,
        ),
        (
            "hotline_queue_callbacks_failed_today",
            "Callbacks not answered after their attempts today",
            |f| f.callbacks_failed as f64,
        ),
    ];
    for (name, help, get) in today {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for q in &queues {
            out.push_str(&format!(
                "{name}{{queue=\"{}\"}} {}\n",
                label(&q.name),
                get(&q.today)
            ));
        }
    }
    out.push_str("# HELP hotline_seat_answer_rate_today Answered / offered today (1 when nothing was offered)\n# TYPE hotline_seat_answer_rate_today gauge\n");
    for s in &seats {
        let rate = if s.today.offered == 0 {
            1.0
        } else {
            s.today.answered as f64 / s.today.offered as f64
        };
        out.push_str(&format!(
            "hotline_seat_answer_rate_today{{seat=\"{}\"}} {rate}\n",
            label(&s.seat.id)
        ));
    }
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
