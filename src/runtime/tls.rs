//! SIP over TLS (RFC 3261 §26, RFC 5630): the listener on `sip.tls_listen`, with rustls (its
//! `ring` provider: no C toolchain beyond what `ring` itself needs, and a short build on two
//! cores, where aws-lc-rs needs cmake and minutes). After the handshake a connection is served
//! like a TCP one (framing, CRLF keep-alives); its messages reach the core as
//! [`Transport::Tls`], so the registrar and the SDP layer know the signalling was encrypted.
//!
//! The certificate and key are read at start and again on SIGHUP ([`Certificates::reload`]):
//! new handshakes use the new pair, connections already up keep theirs, no call is dropped.
//! A handshake is bounded in time (`tls.handshake_timeout_ms`); one that fails or stalls is
//! logged and counted, and touches nothing else.

use super::StreamEvent;
use super::tcp::{Connections, next_id, serve};
use crate::config::TlsConfig;
use crate::sip::Transport;
use crate::stats::Stats;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not go together: {0}")]
    Mismatch(String),
}

/// The certificate chain and key in `cfg`, as rustls takes them.
pub fn load_pair(
    cfg: &TlsConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| TlsError::Cert {
            path: shown(&cfg.cert),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: shown(&cfg.cert),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: shown(&cfg.cert),
            reason: "no CERTIFICATE block in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| TlsError::Key {
        path: shown(&cfg.key),
        reason: e.to_string(),
    })?;
    Ok((chain, key))
}

/// A server configuration from `cfg`'s files; the key must be the leaf certificate's.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = load_pair(cfg)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Key {
            path: cfg.key.display().to_string(),
            reason: e.to_string(),
        })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(server))
}

/// The acceptor in use; SIGHUP swaps it.
#[derive(Clone)]
pub struct Certificates {
    cfg: TlsConfig,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl Certificates {
    pub fn load(cfg: &TlsConfig) -> Result<Certificates, TlsError> {
        let acceptor = TlsAcceptor::from(server_config(cfg)?);
        Ok(Certificates {
            cfg: cfg.clone(),
            current: Arc::new(RwLock::new(acceptor)),
        })
    }

    /// Re-reads the files; on any error the old pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = TlsAcceptor::from(server_config(&self.cfg)?);
        if let Ok(mut cur) = self.current.write() {
            *cur = acceptor;
        }
        Ok(())
    }

    pub(super) fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current.read().ok().map(|a| a.clone())
    }
}

/// Runs the TLS side (accepting, handshakes, encryption, framing) on a thread of its own with
/// its own runtime: a handshake's signature (about a millisecond with RSA-2048, many in a debug
/// build) and every record's encryption stay off the call thread, whose media clock must not
/// wait. Messages reach the core by the same channel as TCP's.
pub fn spawn(
    listener: std::net::TcpListener,
    certs: Certificates,
    handshake: Duration,
    conns: Connections,
    to_core: mpsc::Sender<StreamEvent>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sip-tls".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, certs, handshake, conns, to_core, stats).await,
                    Err(e) => warn!(error = %e, "SIP TLS listener unusable"),
                }
            })
        })?;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    certs: Certificates,
    handshake: Duration,
    conns: Connections,
    to_core: mpsc::Sender<StreamEvent>,
    stats: Arc<Stats>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "SIP TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(id) = next_id(&conns, addr, "TLS") else {
            continue;
        };
        let Some(acceptor) = certs.acceptor() else {
            continue;
        };
        let (conns, to_core, stats) = (conns.clone(), to_core.clone(), stats.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    debug!(%addr, conn = id, "TLS handshake done");
                    serve(tls, addr, Transport::Tls(id), conns, to_core).await;
                }
                Ok(Err(e)) => {
                    Stats::inc(&stats.tls_handshake_failures);
                    info!(%addr, error = %e, "TLS handshake failed; connection closed");
                }
                Err(_) => {
                    Stats::inc(&stats.tls_handshake_failures);
                    info!(%addr, after_ms = handshake.as_millis() as u64, "TLS handshake not finished in time; connection closed");
                }
            }
        });
    }
}

/// What `hotline check` says about TLS: errors (the daemon would not start, or remote seats
/// could not register) and warnings.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// A certificate this close to its end gets a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);

/// Checks the certificate and key of `cfg` at `now` (readable, matching, within their
/// validity, not within 30 days of the end) and warns about remote seats that could only
/// register in the clear.
pub fn check(cfg: &crate::config::Config, now: std::time::SystemTime) -> Findings {
    let mut f = Findings::default();
    let remote: Vec<&str> = cfg
        .seats
        .iter()
        .filter(|s| s.remote)
        .map(|s| s.id.as_str())
        .collect();
    if cfg.tls_listen().is_none() {
        if !remote.is_empty() {
            f.warnings.push(format!(
                "remote seat(s) {} must register over TLS, but SIP over TLS is off (set sip.tls_listen and [tls] cert and key): they cannot register",
                remote.join(", ")
            ));
        }
        return f;
    }
    if let Err(e) = server_config(&cfg.tls) {
        f.errors.push(format!("tls: {e}"));
        return f;
    }
    let Ok((chain, _)) = load_pair(&cfg.tls) else {
        return f;
    };
    let now_s = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for (i, der) in chain.iter().enumerate() {
        let what = if i == 0 {
            "the certificate".to_string()
        } else {
            format!("chain certificate {i}")
        };
        let cert = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, c)) => c,
            Err(e) => {
                f.errors.push(format!("tls: {what} does not parse: {e}"));
                continue;
            }
        };
        let (from, until) = (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        );
        let subject = cert.subject().to_string();
        if now_s < from {
            f.errors.push(format!(
                "tls: {what} ({subject}) is not valid before {}",
                cert.validity().not_before
            ));
        } else if now_s > until {
            f.errors.push(format!(
                "tls: {what} ({subject}) expired on {}",
                cert.validity().not_after
            ));
        } else if until - now_s < EXPIRY_WARNING.as_secs() as i64 {
            f.warnings.push(format!(
                "tls: {what} ({subject}) expires on {} ({} days from now): renew it and send SIGHUP",
                cert.validity().not_after,
                (until - now_s) / 86400
            ));
        }
    }
    f
}
