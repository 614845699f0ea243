//! Connections to trunks over TCP or TLS: the daemon opens one per trunk, keeps it open and
//! opens it again (after 1 s, doubling to 30 s) when it drops, as a phone keeps its flow to its
//! registrar (RFC 5626). Requests to the trunk and its requests to us share it. The core is
//! told when a link comes up or goes down, so a call to a trunk whose link is down fails at
//! once instead of after 32 s of INVITE retransmission.
//!
//! TLS: the trunk's certificate must chain to the authorities in its `ca` file and be for its
//! `server_name` (default: its address); an expired, untrusted or mismatched certificate is
//! refused, logged with the reason, and retried later, with no effect on calls in progress.

use super::StreamEvent;
use super::tcp::{Connections, serve};
use crate::config::{Config, TrunkTransport};
use crate::sip::Transport;
use crate::stats::Stats;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// One trunk reached over a stream.
struct Link {
    name: String,
    addr: SocketAddr,
    transport: Transport,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("trunks.{name}: cannot read its ca {path}: {reason}")]
    Ca {
        name: String,
        path: String,
        reason: String,
    },
    #[error("trunks.{name}: server_name {value:?} is not a DNS name or an IP address")]
    ServerName { name: String, value: String },
}

/// The client side of TLS for a trunk: its authorities and the name to check.
fn connector(
    name: &str,
    t: &crate::config::TrunkConfig,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), LinkError> {
    let ca_err = |reason: String| LinkError::Ca {
        name: name.to_string(),
        path: t.ca.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&t.ca).map_err(|e| ca_err(e.to_string()))? {
        roots
            .add(c.map_err(|e| ca_err(e.to_string()))?)
            .map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no CERTIFICATE block in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let wanted = if t.server_name.is_empty() {
        t.address.ip().to_string()
    } else {
        t.server_name.clone()
    };
    let server = ServerName::try_from(wanted.clone()).map_err(|_| LinkError::ServerName {
        name: name.to_string(),
        value: wanted,
    })?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), server))
}

/// Checks every trunk's TLS settings (for `hotline check` and at start).
pub fn check(cfg: &Config) -> Vec<String> {
    cfg.trunks
        .iter()
        .filter(|(_, t)| t.transport == TrunkTransport::Tls)
        .filter_map(|(n, t)| connector(n, t).err().map(|e| e.to_string()))
        .collect()
}

/// Starts a thread (its own runtime, like the TLS listener's) that keeps every TCP and TLS
/// trunk's link up. Nothing is started when every trunk is UDP.
pub fn spawn(
    cfg: &Config,
    conns: Connections,
    to_core: mpsc::Sender<StreamEvent>,
    stats: Arc<Stats>,
) -> Result<(), LinkError> {
    let mut links = Vec::new();
    for (name, t) in &cfg.trunks {
        let Some(transport) = cfg.trunk_transport(name) else {
            continue;
        };
        if transport.connection().is_none() {
            continue;
        }
        let tls = match t.transport {
            TrunkTransport::Tls => Some(connector(name, t)?),
            _ => None,
        };
        links.push(Link {
            name: name.clone(),
            addr: t.address,
            transport,
            tls,
        });
    }
    if links.is_empty() {
        return Ok(());
    }
    let started = std::thread::Builder::new()
        .name("sip-trunks".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return warn!(error = %e, "no runtime for the trunk links"),
            };
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for l in links {
                    tasks.spawn(keep(l, conns.clone(), to_core.clone(), stats.clone()));
                }
                while tasks.join_next().await.is_some() {}
            });
        });
    if let Err(e) = started {
        warn!(error = %e, "cannot start the trunk links' thread");
    }
    Ok(())
}

/// Keeps one link up for good.
async fn keep(l: Link, conns: Connections, to_core: mpsc::Sender<StreamEvent>, stats: Arc<Stats>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect(&l).await {
            Ok(stream) => {
                info!(trunk = %l.name, addr = %l.addr, transport = l.transport.via_name(), "trunk link up");
                backoff = Duration::from_secs(1);
                let up = StreamEvent::Up {
                    transport: l.transport,
                    addr: l.addr,
                };
                if to_core.send(up).await.is_err() {
                    return;
                }
                match stream {
                    Stream::Tcp(s) => {
                        serve(s, l.addr, l.transport, conns.clone(), to_core.clone()).await
                    }
                    Stream::Tls(s) => {
                        serve(*s, l.addr, l.transport, conns.clone(), to_core.clone()).await
                    }
                }
                warn!(trunk = %l.name, "trunk link closed; opening it again");
            }
            Err(why) => {
                if l.tls.is_some() {
                    Stats::inc(&stats.tls_handshake_failures);
                }
                warn!(trunk = %l.name, addr = %l.addr, error = %why, retry_s = backoff.as_secs(), "trunk link not up");
            }
        }
        if to_core.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(l: &Link) -> Result<Stream, String> {
    let limit = Duration::from_secs(5);
    let tcp = tokio::time::timeout(limit, TcpStream::connect(l.addr))
        .await
        .map_err(|_| "no connection within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    match &l.tls {
        None => Ok(Stream::Tcp(tcp)),
        Some((connector, name)) => {
            let s = tokio::time::timeout(limit, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| "TLS handshake not finished within 5 s".to_string())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(Stream::Tls(Box::new(s)))
        }
    }
}
