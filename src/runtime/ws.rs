//! SIP over WebSocket (RFC 7118) at `/sip` on the HTTP listener: a browser's SIP stack
//! (JsSIP in the agent desk) connects with the subprotocol `sip`, and each WebSocket message
//! is one SIP message. A connection is numbered like a TCP or TLS one and its messages reach
//! the core as [`Transport::Ws`]: the registrar binds the seat to the connection, requests to
//! the seat go back over it, and when it closes the binding ends with it (and a call it
//! carried is handled as a seat lost, see the core).
//!
//! The server pings every [`PING_EVERY`]; a connection silent for [`DEAD_AFTER`] (no message,
//! no pong) is closed, so a browser that vanished without a FIN (a laptop lid, a dead
//! network) frees its seat within a minute instead of at the next registration.

use super::StreamEvent;
use super::tcp::{Connections, next_id};
use crate::sip::Transport;
use axum::extract::ws::{Message, WebSocket};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info};

/// The subprotocol of RFC 7118 §4.
pub const SUBPROTOCOL: &str = "sip";
/// Largest SIP message taken from a browser.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// What the WebSocket reads into at a time (a SIP message larger than this still arrives whole).
pub const READ_BUFFER: usize = 8 * 1024;
const PING_EVERY: Duration = Duration::from_secs(20);
const DEAD_AFTER: Duration = Duration::from_secs(60);

/// Serves one upgraded connection until it ends.
pub async fn serve(
    mut socket: WebSocket,
    addr: SocketAddr,
    conns: Connections,
    to_core: mpsc::Sender<StreamEvent>,
) {
    let Some(id) = next_id(&conns, addr, "WS") else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    let transport = Transport::Ws(id);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<bytes::Bytes>();
    conns.insert(id, out_tx);
    info!(%addr, conn = id, "SIP WebSocket connected");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let why = loop {
        tokio::select! {
            m = socket.recv() => {
                heard = tokio::time::Instant::now();
                let bytes = match m {
                    Some(Ok(Message::Text(t))) => bytes::Bytes::from(t.as_str().to_owned()),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) => break "closed by the browser",
                    Some(Err(_)) | None => break "connection lost",
                };
                // A keep-alive some stacks send as a bare CRLF.
                if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                let ev = StreamEvent::Message { transport, addr, bytes };
                if to_core.send(ev).await.is_err() {
                    break "daemon stopping";
                }
            }
            o = out_rx.recv() => {
                let Some(b) = o else { break "daemon stopping" };
                let msg = match std::str::from_utf8(&b) {
                    Ok(s) => Message::Text(s.into()),
                    Err(_) => Message::Binary(b),
                };
                if socket.send(msg).await.is_err() {
                    break "send failed";
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= DEAD_AFTER {
                    break "no answer to pings";
                }
                if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    break "send failed";
                }
            }
        }
    };
    conns.remove(&id);
    info!(%addr, conn = id, why, "SIP WebSocket ended; its registrations end with it");
    let _ = socket.send(Message::Close(None)).await;
    if to_core
        .send(StreamEvent::Closed { transport, addr })
        .await
        .is_err()
    {
        debug!("core gone before the WebSocket's end was told");
    }
}
