//! SIP over TCP: one task per connection reads and frames messages (Content-Length) and hands
//! them to the core; the core answers through the connection's outgoing channel.

use super::StreamMessage;
use crate::sip::framing::{self, FramingError};
use bytes::{Buf, BytesMut};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

pub async fn accept_loop(
    listener: TcpListener,
    conns: Arc<DashMap<u64, mpsc::UnboundedSender<bytes::Bytes>>>,
    to_core: mpsc::Sender<StreamMessage>,
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
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        if conns.len() >= MAX_CONNECTIONS {
            warn!(%addr, limit = MAX_CONNECTIONS, "SIP TCP connection limit reached; refusing");
            continue;
        }
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<bytes::Bytes>();
        let pong = out_tx.clone();
        conns.insert(id, out_tx);
        let conns = conns.clone();
        let to_core = to_core.clone();
        tokio::spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let writer = tokio::spawn(async move {
                while let Some(b) = out_rx.recv().await {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
            });
            let mut buf = BytesMut::with_capacity(8192);
            'read: loop {
                match tokio::time::timeout(IDLE_TIMEOUT, rd.read_buf(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        debug!(%addr, "closing idle SIP TCP connection");
                        break;
                    }
                }
                loop {
                    match framing::next_message(&buf) {
                        Ok(Some((skip, len))) => {
                            buf.advance(skip);
                            let msg = buf.split_to(len).freeze();
                            if to_core
                                .send(StreamMessage {
                                    conn: id,
                                    addr,
                                    bytes: msg,
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
                            debug!(%addr, error = %e, "closing SIP TCP connection");
                            break 'read;
                        }
                    }
                }
            }
            conns.remove(&id);
            writer.abort();
        });
    }
}
