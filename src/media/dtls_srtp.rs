//! DTLS-SRTP (RFC 5763, RFC 5764) for a browser's leg: the daemon is the DTLS server (its SDP
//! says `a=setup:actpass` in an offer, `passive` in an answer; the browser answers `active`),
//! proves itself with a certificate whose fingerprint is in our SDP, checks the browser's
//! certificate against the fingerprint in the browser's SDP, and takes the SRTP master keys
//! from the handshake (the `EXTRACTOR-dtls_srtp` exporter). From then on the leg is an SRTP
//! leg like an SDES one: the same [`SrtpSession`] encrypts on send and decrypts on receipt,
//! so the bridge, mixer, recorder and DTMF see plain G.711.
//!
//! The handshake is the `dtls` crate's (webrtc-rs, the family of the `webrtc-srtp` code the
//! SDES legs already use). It runs as a task fed by a channel: the leg's reader passes on the
//! packets whose first byte says DTLS (RFC 7983: 20–63) and the handshake's flights go out of
//! the leg's own socket. Only the handshake runs there; media never passes through the crate.

use crate::media::sdes::{CryptoAttr, Suite};
use crate::media::srtp::{SrtpError, SrtpSession};
use async_trait::async_trait;
use dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use dtls::conn::DTLSConn;
use dtls::crypto::Certificate;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};
use webrtc_util::KeyingMaterialExporter as _;

/// Why a leg's DTLS-SRTP did not come up.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("cannot make the DTLS certificate: {0}")]
    Certificate(String),
    #[error("the DTLS handshake did not complete within {0:?}")]
    Timeout(Duration),
    #[error("the DTLS handshake failed: {0}")]
    Handshake(String),
    #[error("the browser's certificate does not match the fingerprint in its SDP")]
    FingerprintMismatch,
    #[error("the browser's SDP has no usable a=fingerprint (sha-256)")]
    NoFingerprint,
    #[error("no SRTP profile agreed in the handshake")]
    NoProfile,
    #[error("cannot derive the SRTP keys: {0}")]
    Keys(String),
    #[error("the leg ended first")]
    Gone,
}

/// Whether the first byte says DTLS (RFC 7983 §7: 20–63).
pub fn is_dtls(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| (20..=63).contains(b))
}

/// The daemon's DTLS certificate (ECDSA P-256, made at start; browsers pin it per call by the
/// fingerprint in our SDP, so it needs no CA) and its `a=fingerprint` value.
#[derive(Clone)]
pub struct DtlsIdentity {
    cert: Certificate,
    /// `sha-256 AB:CD:…`
    pub fingerprint: String,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DtlsIdentity {
    pub fn generate() -> Result<DtlsIdentity, DtlsError> {
        let cert = Certificate::generate_self_signed(vec!["hotline".to_string()])
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let der = cert
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Certificate("no certificate made".into()))?;
        let fingerprint = format!("sha-256 {}", sha256_hex(der.as_ref()));
        Ok(DtlsIdentity { cert, fingerprint })
    }
}

/// `AB:CD:…`, the form of RFC 8122's fingerprint.
pub fn sha256_hex(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    let mut s = String::with_capacity(d.len() * 3);
    for (i, b) in d.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// The sha-256 fingerprint from an `a=fingerprint` value (`sha-256 AB:…`), normalised to
/// upper case; other hash functions are not taken (every browser offers sha-256).
pub fn parse_fingerprint(value: &str) -> Option<String> {
    let (alg, hex) = value.trim().split_once(' ')?;
    if !alg.eq_ignore_ascii_case("sha-256") {
        return None;
    }
    let hex = hex.trim().to_ascii_uppercase();
    let ok = hex.len() == 32 * 3 - 1
        && hex
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(hex)
}

/// The SRTP suite of a DTLS-SRTP profile, and its key and salt lengths.
fn suite_of(p: SrtpProtectionProfile) -> Option<Suite> {
    match p {
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Some(Suite::AesCm128HmacSha1_80),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => Some(Suite::AesCm128HmacSha1_32),
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(Suite::AeadAes128Gcm),
        _ => None,
    }
}

const KEY_LEN: usize = 16;

/// The session from the exported keying material (RFC 5764 §4.2: client key, server key,
/// client salt, server salt); the server encrypts with the server's half.
pub fn session_from_material(
    suite: Suite,
    material: &[u8],
    we_are_server: bool,
) -> Result<SrtpSession, SrtpError> {
    let salt = suite.salt_len();
    if material.len() < 2 * (KEY_LEN + salt) {
        return Err(SrtpError::Key("keying material too short".into()));
    }
    let attr = |key: &[u8], salt: &[u8]| -> Result<CryptoAttr, SrtpError> {
        Ok(CryptoAttr {
            tag: 1,
            suite,
            key: key
                .try_into()
                .map_err(|_| SrtpError::Key("key length".into()))?,
            salt: salt.to_vec(),
            lifetime: None,
            window_size_hint: None,
        })
    };
    let (ck, rest) = material.split_at(KEY_LEN);
    let (sk, rest) = rest.split_at(KEY_LEN);
    let (cs, rest) = rest.split_at(salt);
    let ss = &rest[..salt];
    let client = attr(ck, cs)?;
    let server = attr(sk, ss)?;
    if we_are_server {
        SrtpSession::new(&server, &client)
    } else {
        SrtpSession::new(&client, &server)
    }
}

/// Where the handshake's flights go: the leg's socket, to the browser's address.
pub type SendFn = Arc<dyn Fn(&[u8]) -> std::io::Result<usize> + Send + Sync>;

/// The handshake's view of the leg's socket: what the reader passes on, and the socket out.
struct Pipe {
    rx: Mutex<mpsc::Receiver<Vec<u8>>>,
    send: SendFn,
    local: SocketAddr,
}

#[async_trait]
impl webrtc_util::Conn for Pipe {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("connect on a DTLS pipe".into()))
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(p) => {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                Ok(n)
            }
            None => Err(webrtc_util::Error::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionAborted,
            ))),
        }
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let n = self.recv(buf).await?;
        Ok((n, self.local))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        (self.send)(buf).map_err(webrtc_util::Error::from)
    }
    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// A handshake under way: the leg's reader feeds `packets`; the call's answer sends the
/// browser's fingerprint on `expect`.
pub struct Handshake {
    pub packets: mpsc::Sender<Vec<u8>>,
    pub expect: Option<oneshot::Sender<String>>,
}

/// What a finished handshake leaves: the keys, and the connection kept open (dropping it ends
/// the DTLS association) for as long as the leg lasts.
pub struct Secured {
    pub session: SrtpSession,
    pub conn: DTLSConn,
}

/// Serves one leg's DTLS handshake as the server: waits for the browser's ClientHello, checks
/// its certificate against the fingerprint that arrives on `expect` (the browser's SDP
/// answer), and derives the leg's SRTP session. `within` bounds the whole handshake from the
/// moment the fingerprint is known.
pub async fn serve(
    identity: DtlsIdentity,
    packets: mpsc::Receiver<Vec<u8>>,
    send: SendFn,
    local: SocketAddr,
    expect: oneshot::Receiver<String>,
    within: Duration,
) -> Result<Secured, DtlsError> {
    handshake(identity, packets, send, local, expect, within, false).await
}

/// The other side of [`serve`]: the DTLS client of a WebRTC peer whose SDP said
/// `setup:actpass`/`passive` (the load tool's browser seats; an offer we would answer).
pub async fn connect(
    identity: DtlsIdentity,
    packets: mpsc::Receiver<Vec<u8>>,
    send: SendFn,
    local: SocketAddr,
    expect: oneshot::Receiver<String>,
    within: Duration,
) -> Result<Secured, DtlsError> {
    handshake(identity, packets, send, local, expect, within, true).await
}

async fn handshake(
    identity: DtlsIdentity,
    packets: mpsc::Receiver<Vec<u8>>,
    send: SendFn,
    local: SocketAddr,
    expect: oneshot::Receiver<String>,
    within: Duration,
    client: bool,
) -> Result<Secured, DtlsError> {
    let pipe = Arc::new(Pipe {
        rx: Mutex::new(packets),
        send,
        local,
    });
    let config = Config {
        certificates: vec![identity.cert.clone()],
        srtp_protection_profiles: vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
        ],
        extended_master_secret: ExtendedMasterSecretType::Require,
        // The browser's certificate is self-signed: it is checked against its SDP's
        // fingerprint below, not against a CA.
        client_auth: ClientAuthType::RequireAnyClientCert,
        insecure_skip_verify: true,
        ..Default::default()
    };
    let handshake = DTLSConn::new(pipe, config, client, None);
    let expected = tokio::time::timeout(within * 4, expect)
        .await
        .map_err(|_| DtlsError::Timeout(within))?
        .map_err(|_| DtlsError::Gone)?;
    let expected = parse_fingerprint(&expected).ok_or(DtlsError::NoFingerprint)?;
    let conn = tokio::time::timeout(within, handshake)
        .await
        .map_err(|_| DtlsError::Timeout(within))?
        .map_err(|e| DtlsError::Handshake(e.to_string()))?;
    let state = conn.connection_state().await;
    let theirs = state
        .peer_certificates
        .first()
        .map(|der| sha256_hex(der))
        .ok_or(DtlsError::FingerprintMismatch)?;
    if theirs != expected {
        return Err(DtlsError::FingerprintMismatch);
    }
    let suite = suite_of(conn.selected_srtpprotection_profile()).ok_or(DtlsError::NoProfile)?;
    let material = state
        .export_keying_material("EXTRACTOR-dtls_srtp", &[], 2 * (KEY_LEN + suite.salt_len()))
        .await
        .map_err(|e| DtlsError::Keys(e.to_string()))?;
    let session = session_from_material(suite, &material, !client)
        .map_err(|e| DtlsError::Keys(e.to_string()))?;
    Ok(Secured { session, conn })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_parsed_and_compared_in_one_form() {
        let id = DtlsIdentity::generate().unwrap();
        assert!(id.fingerprint.starts_with("sha-256 "));
        let lower = id.fingerprint.to_ascii_lowercase();
        assert_eq!(
            parse_fingerprint(&lower).as_deref(),
            id.fingerprint.strip_prefix("sha-256 ")
        );
        assert_eq!(parse_fingerprint("sha-1 AB:CD"), None);
        assert_eq!(parse_fingerprint("sha-256 AB:CD"), None);
        assert!(is_dtls(&[22, 254, 253]) && !is_dtls(&[128, 0]) && !is_dtls(&[0, 1]));
    }

    #[test]
    fn the_server_encrypts_with_the_server_half_of_the_material() {
        let material: Vec<u8> = (0..60u8).collect();
        let suite = Suite::AesCm128HmacSha1_80;
        let mut server = session_from_material(suite, &material, true).unwrap();
        let mut client = session_from_material(suite, &material, false).unwrap();
        let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xff, 0xfe];
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        server.protect_rtp(&rtp, &mut wire).unwrap();
        client.unprotect_rtp(&wire, &mut back).unwrap();
        assert_eq!(back, rtp);
        client.protect_rtp(&rtp, &mut wire).unwrap();
        assert!(client.unprotect_rtp(&wire, &mut back).is_err());
        server.unprotect_rtp(&wire, &mut back).unwrap();
        assert_eq!(back, rtp);
        assert!(session_from_material(suite, &material[..20], true).is_err());
    }

    /// A whole handshake against the crate's own client over a pair of channels: the keys on
    /// both sides agree, and a client whose certificate is not the one announced is refused.
    #[tokio::test]
    async fn a_handshake_keys_both_sides_alike_and_checks_the_fingerprint() {
        for honest in [true, false] {
            let server_id = DtlsIdentity::generate().unwrap();
            let client_cert = Certificate::generate_self_signed(vec!["browser".into()]).unwrap();
            let announced = if honest {
                format!(
                    "sha-256 {}",
                    sha256_hex(client_cert.certificate[0].as_ref())
                )
            } else {
                DtlsIdentity::generate().unwrap().fingerprint
            };
            let (to_server, server_rx) = mpsc::channel::<Vec<u8>>(64);
            let (to_client, client_rx) = mpsc::channel::<Vec<u8>>(64);
            let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let send_to_client: SendFn = Arc::new(move |b: &[u8]| {
                let _ = to_client.try_send(b.to_vec());
                Ok(b.len())
            });
            let send_to_server: SendFn = Arc::new(move |b: &[u8]| {
                let _ = to_server.try_send(b.to_vec());
                Ok(b.len())
            });
            let (tx, rx) = oneshot::channel();
            tx.send(announced).unwrap();
            let server = tokio::spawn(serve(
                server_id.clone(),
                server_rx,
                send_to_client,
                local,
                rx,
                Duration::from_secs(5),
            ));
            let client_pipe = Arc::new(Pipe {
                rx: Mutex::new(client_rx),
                send: send_to_server,
                local,
            });
            let client_cfg = Config {
                certificates: vec![client_cert],
                srtp_protection_profiles: vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
                extended_master_secret: ExtendedMasterSecretType::Require,
                insecure_skip_verify: true,
                ..Default::default()
            };
            let client = tokio::time::timeout(
                Duration::from_secs(5),
                DTLSConn::new(client_pipe, client_cfg, true, None),
            )
            .await
            .unwrap()
            .unwrap();
            let server = server.await.unwrap();
            if !honest {
                assert!(matches!(server, Err(DtlsError::FingerprintMismatch)));
                continue;
            }
            let mut server = server.unwrap();
            let state = client.connection_state().await;
            let material = state
                .export_keying_material("EXTRACTOR-dtls_srtp", &[], 60)
                .await
                .unwrap();
            let mut browser =
                session_from_material(Suite::AesCm128HmacSha1_80, &material, false).unwrap();
            let rtp = [0x80u8, 0, 0, 7, 0, 0, 0, 160, 9, 9, 9, 9, 0x55];
            let (mut wire, mut back) = (Vec::new(), Vec::new());
            server.session.protect_rtp(&rtp, &mut wire).unwrap();
            browser.unprotect_rtp(&wire, &mut back).unwrap();
            assert_eq!(back, rtp);
        }
    }
}
