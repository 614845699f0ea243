//! The agent desk in the browser (`/agent`): the page, its SIP stack (JsSIP, bundled by
//! `scripts/bundle-jssip`), and the desk's own API under `/agent/api/`.
//!
//! The agent signs in with the seat's SIP user and password, checked against the seat's HA1
//! (the same credential its phone would use; the password itself is never stored by the
//! daemon, and the page keeps it only in the tab's memory for SIP digest). A sign-in gives a
//! desk session: a random token, bound to that one seat, that expires after
//! `http.desk_session_s` of not being used. With it the page reads the seat's state, its
//! offered or current call and its figures today, and asks for state changes, three-way
//! transfers and the one-key emergency hand-off — the same actions, through the same core
//! code, as `/api/seats/{id}/…` and the phone's feature codes. The page's phone is a SIP
//! registration over the WebSocket at `/sip`, a binding like any other.

use super::http::{ApiAction, AppState, ask};
use crate::core::AgentAction;
use crate::sip::digest::{Algorithm, ha1};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const DESK_HTML: &str = include_str!("desk/desk.html");
const JSSIP_JS: &str = include_str!("desk/jssip.min.js");

/// Script and style are ours and inline (JsSIP from this daemon); connections only back to
/// this daemon (`'self'` covers ws:/wss: of the same origin in current browsers).
const DESK_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; media-src 'self' blob: mediastream:; img-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// A seat the desk can sign in as.
#[derive(Clone)]
pub struct DeskSeat {
    pub id: String,
    pub user: String,
    pub ha1_md5: String,
}

struct Session {
    seat: String,
    last_used: Instant,
}

/// Sign-in and sessions.
pub struct Desk {
    realm: String,
    seats: Vec<DeskSeat>,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    /// What the page lists: transfer targets (number, name, kind) and queue labels.
    pub targets: Vec<serde_json::Value>,
    pub queue_labels: HashMap<String, String>,
}

impl Desk {
    pub fn new(
        realm: String,
        seats: Vec<DeskSeat>,
        ttl: Duration,
        targets: Vec<serde_json::Value>,
        queue_labels: HashMap<String, String>,
    ) -> Desk {
        Desk {
            realm,
            seats,
            ttl,
            sessions: Mutex::new(HashMap::new()),
            targets,
            queue_labels,
        }
    }

    /// The seat whose user and password these are.
    fn check(&self, user: &str, password: &str) -> Option<&DeskSeat> {
        let seat = self.seats.iter().find(|s| s.user == user)?;
        let given = ha1(Algorithm::Md5, user, &self.realm, password);
        let same = given.len() == seat.ha1_md5.len()
            && given
                .bytes()
                .zip(seat.ha1_md5.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
        same.then_some(seat)
    }

    fn open(&self, seat: &str) -> String {
        use rand::RngExt as _;
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(mut s) = self.sessions.lock() {
            let ttl = self.ttl;
            s.retain(|_, x| x.last_used.elapsed() < ttl);
            s.insert(
                token.clone(),
                Session {
                    seat: seat.to_string(),
                    last_used: Instant::now(),
                },
            );
        }
        token
    }

    /// The seat of a live session (and the session is used now), or why not.
    fn seat_of(
        &self,
        headers: &HeaderMap,
    ) -> Result<String, (StatusCode, Json<serde_json::Value>)> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "请先登录", "signed_out"))?;
        let mut sessions = self.sessions.lock().map_err(|_| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "服务暂不可用",
                "unavailable",
            )
        })?;
        match sessions.get_mut(token) {
            Some(s) if s.last_used.elapsed() < self.ttl => {
                s.last_used = Instant::now();
                Ok(s.seat.clone())
            }
            Some(_) => {
                sessions.remove(token);
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "会话已过期，请重新登录",
                    "expired",
                ))
            }
            None => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "会话已失效，请重新登录",
                "expired",
            )),
        }
    }

    fn close(&self, headers: &HeaderMap) {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let (Some(t), Ok(mut s)) = (token, self.sessions.lock()) {
            s.remove(t);
        }
    }
}

fn refuse(code: StatusCode, message: &str, reason: &str) -> (StatusCode, Json<serde_json::Value>) {
    (
        code,
        Json(serde_json::json!({ "error": message, "reason": reason })),
    )
}

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DESK_CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DESK_HTML,
    )
}

pub async fn jssip() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JSSIP_JS,
    )
}

#[derive(Deserialize)]
pub struct SignIn {
    user: String,
    password: String,
}

type DeskResult = Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)>;

/// `POST /agent/api/login {"user", "password"}` → the session token and what the page needs
/// to register its phone.
pub(super) async fn login(
    State(a): State<AppState>,
    axum::extract::ConnectInfo(super::http::Remote(from)): axum::extract::ConnectInfo<
        super::http::Remote,
    >,
    Json(req): Json<SignIn>,
) -> DeskResult {
    let Some(seat) = a.desk.check(&req.user, &req.password).cloned() else {
        warn!(user = %req.user, %from, "desk sign-in refused: wrong user or password");
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "用户名或密码错误",
            "wrong_password",
        ));
    };
    let token = a.desk.open(&seat.id);
    info!(seat = %seat.id, user = %seat.user, %from, "desk signed in");
    Ok(Json(serde_json::json!({
        "token": token,
        "seat": seat.id,
        "user": seat.user,
        "realm": a.desk.realm,
        "session_s": a.desk.ttl.as_secs(),
    })))
}

pub(super) async fn logout(State(a): State<AppState>, headers: HeaderMap) -> StatusCode {
    if let Ok(seat) = a.desk.seat_of(&headers) {
        info!(seat = %seat, "desk signed out");
    }
    a.desk.close(&headers);
    StatusCode::NO_CONTENT
}

/// `GET /agent/api/me`: the seat's state, its call, its figures today, and what it can
/// transfer to.
pub(super) async fn me(State(a): State<AppState>, headers: HeaderMap) -> DeskResult {
    let seat = a.desk.seat_of(&headers)?;
    let view = a
        .seats
        .get(&seat)
        .map(|v| v.value().clone())
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "座席不存在", "no_seat"))?;
    let t = &view.today;
    let rate = if t.offered > 0 {
        Some((t.answered as f64) / (t.offered as f64))
    } else {
        None
    };
    let mut queues: Vec<serde_json::Value> = view
        .seat
        .queues
        .iter()
        .map(|q| {
            let waiting = a.queues.get(q).map(|v| v.waiting).unwrap_or(0);
            serde_json::json!({
                "name": q,
                "label": a.desk.queue_labels.get(q).cloned().unwrap_or_else(|| q.clone()),
                "waiting": waiting,
            })
        })
        .collect();
    queues.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
    Ok(Json(serde_json::json!({
        "seat": view.seat.id,
        "user": view.seat.user,
        "registered": view.registered,
        "state": view.state,
        "state_for_s": view.state_for_s,
        "pause_reason": view.pause_reason,
        "wrap_up_left_s": view.wrap_up_left_s,
        "call": view.call,
        "today": { "offered": t.offered, "answered": t.answered, "answer_rate": rate },
        "queues": queues,
        "targets": a.desk.targets,
    })))
}

#[derive(Deserialize)]
pub struct StateChange {
    action: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The core's answer, for the agent: in Chinese, with the daemon's own words kept beside.
fn desk_error((code, text): (StatusCode, String)) -> (StatusCode, Json<serde_json::Value>) {
    const SAID: [(&str, &str); 11] = [
        ("already logged in", "座席已签入"),
        ("not logged in", "座席未签入"),
        ("on a call or ringing", "通话或振铃中，不能变更状态"),
        ("not paused", "座席未示忙"),
        ("no answered call to transfer", "当前没有可转接的通话"),
        ("not a configured transfer target", "不是已配置的转接号码"),
        ("already under way", "该通话正在转接中"),
        ("no seat of the expert group", "该专家组当前无人签入"),
        ("not an emergency centre", "不是紧急救助号码"),
        ("no capacity", "线路资源不足，请稍后再试"),
        ("cannot dial", "无法呼叫转接目标"),
    ];
    let text = text.trim();
    let message = SAID
        .iter()
        .find(|(en, _)| text.contains(en))
        .map(|(_, zh)| *zh)
        .unwrap_or("操作未成功");
    (
        code,
        Json(serde_json::json!({ "error": message, "reason": "refused", "detail": text })),
    )
}

/// `POST /agent/api/state {"action": "login" | "pause" | "unpause" | "logout", "reason"}`.
pub(super) async fn state(
    State(a): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<StateChange>,
) -> DeskResult {
    let seat = a.desk.seat_of(&headers)?;
    let action = match req.action.as_str() {
        "login" => AgentAction::Login,
        "logout" => AgentAction::Logout,
        "pause" => AgentAction::Pause(
            req.reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "暂停".into()),
        ),
        "unpause" => AgentAction::Unpause,
        _ => return Err(refuse(StatusCode::BAD_REQUEST, "未知操作", "bad_action")),
    };
    ask(&a, seat, ApiAction::State(action), "desk".into())
        .await
        .map_err(desk_error)
}

#[derive(Deserialize)]
pub struct Transfer {
    number: String,
}

/// `POST /agent/api/transfer {"number"}`: three-way transfer of the seat's call.
pub(super) async fn transfer(
    State(a): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<Transfer>,
) -> DeskResult {
    let seat = a.desk.seat_of(&headers)?;
    let action = ApiAction::Transfer {
        number: req.number,
        emergency: false,
    };
    ask(&a, seat, action, "desk".into())
        .await
        .map_err(desk_error)
}

/// `POST /agent/api/handoff {"number"}`: the one-key emergency hand-off (110, 119, 120, 122).
pub(super) async fn handoff(
    State(a): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<Transfer>,
) -> DeskResult {
    let seat = a.desk.seat_of(&headers)?;
    let action = ApiAction::Transfer {
        number: req.number,
        emergency: true,
    };
    ask(&a, seat, action, "desk".into())
        .await
        .map_err(desk_error)
}
