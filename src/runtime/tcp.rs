//! SIP over TCP: one task per connection reads and frames messages (Content-Length) and hands
//! them to the core; the core answers through the connection's outgoing channel.

use super::StreamMessage;
use crate::sip::framing::{self, FramingError};
use bytes::{Buf, BytesMut};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub async fn accept_loop(listener: TcpListener, conns: Arc<DashMap<u64, mpsc::UnboundedSender<bytes::Bytes>>>, to_core: mpsc::Sender<StreamMessage>) {
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
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<bytes::Bytes>();
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
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match framing::next_message(&buf) {
                        Ok(Some((skip, len))) => {
                            buf.advance(skip);
                            let msg = buf.split_to(len).freeze();
                            if to_core.send(StreamMessage { conn: id, addr, bytes: msg }).await.is_err() {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(e @ (FramingError::HeaderTooLong | FramingError::BadContentLength | FramingError::BodyTooLong)) => {
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
