//! SIP over stream transports, TCP and TLS (RFC 3261 §18.3, §26): one task per connection
//! reads and frames messages (Content-Length) and hands them to the core; the core answers
//! through the connection's outgoing channel. When a connection ends the core is told, so the
//! bindings made over it end with it (RFC 5626 §4.4.1: a flow that fails is gone).

use super::StreamEvent;
use crate::sip::Transport;
use crate::sip::framing::{self, FramingError};
use bytes::{Buf, BytesMut};
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Connections beyond this are refused, so idle sockets can't use up the file descriptors
/// that RTP needs.
const MAX_CONNECTIONS: usize = 4096;
/// A connection with nothing received for this long is closed. Phones keep theirs open with
/// re-REGISTERs or CRLF keep-alives well within it.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The open stream connections, by number: where the core's messages for each go.
pub type Connections = Arc<DashMap<u64, mpsc::UnboundedSender<bytes::Bytes>>>;

/// A new connection's number, or `None` when too many are open.
pub fn next_id(conns: &Connections, addr: SocketAddr, kind: &str) -> Option<u64> {
    if conns.len() >= MAX_CONNECTIONS {
        warn!(%addr, limit = MAX_CONNECTIONS, kind, "SIP connection limit reached; refusing");
        return None;
    }
    Some(NEXT_CONN.fetch_add(1, Ordering::Relaxed))
}

pub async fn accept_loop(
    listener: TcpListener,
    conns: Connections,
    to_core: mpsc::Sender<StreamEvent>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(id) = next_id(&conns, addr, "TCP") else {
            continue;
        };
        tokio::spawn(serve(
            stream,
            addr,
            Transport::Tcp(id),
            conns.clone(),
            to_core.clone(),
        ));
    }
}

/// Reads SIP messages from one connection (plain or after its TLS handshake) until it ends.
pub async fn serve<S>(
    stream: S,
    addr: SocketAddr,
    transport: Transport,
    conns: Connections,
    to_core: mpsc::Sender<StreamEvent>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Some(id) = transport.connection() else {
        return;
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<bytes::Bytes>();
    let pong = out_tx.clone();
    conns.insert(id, out_tx);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = BytesMut::with_capacity(8192);
    'read: loop {
        match tokio::time::timeout(IDLE_TIMEOUT, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => {
                debug!(%addr, transport = transport.via_name(), "closing idle SIP connection");
                break;
            }
        }
        loop {
            match framing::next_message(&buf) {
                Ok(Some((skip, len))) => {
                    buf.advance(skip);
                    let bytes = buf.split_to(len).freeze();
                    if to_core
                        .send(StreamEvent::Message {
                            transport,
                            addr,
                            bytes,
                        })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Ok(None) => {
                    // RFC 5626 §3.5.1: a double-CRLF ping gets a single-CRLF pong.
                    let ka = framing::keepalive_len(&buf);
                    if ka > 0 {
                        if ka >= 4 && &buf[..4] == b"\r\n\r\n" {
                            let _ = pong.send(bytes::Bytes::from_static(b"\r\n"));
                        }
                        buf.advance(ka);
                    }
                    break;
                }
                Err(
                    e @ (FramingError::HeaderTooLong
                    | FramingError::BadContentLength
                    | FramingError::BodyTooLong),
                ) => {
                    // The stream can't be resynchronised: close it (RFC 3261 §18.3).
                    debug!(%addr, error = %e, "closing SIP connection");
                    break 'read;
                }
            }
        }
    }
    conns.remove(&id);
    drop(pong);
    // Let what the core already queued (say, the answer to a last request) go out.
    if tokio::time::timeout(std::time::Duration::from_millis(200), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    let _ = to_core.send(StreamEvent::Closed { transport, addr }).await;
}
