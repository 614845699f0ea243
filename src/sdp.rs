//! SDP offer/answer (RFC 3264) for one audio stream: PCMU, PCMA and telephone-event.
//! Offers are parsed with the `sdp` crate; answers are short enough to write directly.

use crate::media::Codec;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SdpError {
    #[error("SDP does not parse: {0}")]
    Syntax(String),
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("SDP audio stream has no connection address")]
    NoAddress,
    #[error("no common codec: we speak PCMU and PCMA")]
    NoCommonCodec,
    #[error(
        "only a media profile we do not speak offered (we speak RTP/AVP, and RTP/SAVP with SDES keys over TLS)"
    )]
    SecureOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    /// Whether we may send media given the peer's direction in its offer.
    pub fn we_may_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// The parts of a peer's SDP we act on.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMedia {
    /// Where to send RTP; `None` for the hold address 0.0.0.0 or port 0.
    pub addr: Option<SocketAddr>,
    /// Audio codecs both sides speak, in the peer's order, with the peer's payload types.
    pub codecs: Vec<(Codec, u8)>,
    pub telephone_event: Option<u8>,
    pub direction: Direction,
    /// Every m-line of the offer (media, proto, first format) and which one is our audio:
    /// the answer must have as many m-lines, the others rejected with port 0 (RFC 3264 §6).
    pub lines: Vec<(String, String, String)>,
    pub audio_line: usize,
    /// The audio line is RTP/SAVP (SRTP, RFC 3711) …
    pub secure: bool,
    /// … keyed by these `a=crypto` values (RFC 4568), in the peer's order.
    pub crypto: Vec<String>,
    /// A WebRTC peer's stream (UDP/TLS/RTP/SAVPF: ICE and DTLS-SRTP, RFC 5763/8842).
    pub dtls: Option<RemoteDtls>,
}

/// What a browser's SDP says of its ICE and DTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDtls {
    /// The `a=fingerprint` value (`sha-256 AB:…`) its certificate must match.
    pub fingerprint: String,
    /// `a=setup`: `active` (it is the DTLS client), `actpass` in an offer.
    pub setup: String,
    pub ice_ufrag: String,
}

/// Our side of a WebRTC stream: ICE-lite credentials and our certificate's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWebRtc {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// `sha-256 AB:…`
    pub fingerprint: String,
}

impl RemoteMedia {
    pub fn primary(&self) -> (Codec, u8) {
        self.codecs[0]
    }
}

/// Parses a peer's SDP (an offer, or the answer to our offer) from a phone or trunk: a WebRTC
/// stream (DTLS-SRTP) is not one we take from them.
pub fn parse(body: &[u8]) -> Result<RemoteMedia, SdpError> {
    parse_with(body, false)
}

/// Parses the SDP of a browser's leg (WebRTC: UDP/TLS/RTP/SAVPF, or plain RTP/AVP).
pub fn parse_webrtc(body: &[u8]) -> Result<RemoteMedia, SdpError> {
    parse_with(body, true)
}

fn is_webrtc_proto(p: &str) -> bool {
    p.eq_ignore_ascii_case("UDP/TLS/RTP/SAVPF") || p.eq_ignore_ascii_case("UDP/TLS/RTP/SAVP")
}

fn parse_with(body: &[u8], webrtc: bool) -> Result<RemoteMedia, SdpError> {
    let desc = sdp::SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| SdpError::Syntax(e.to_string()))?;
    let is_avp = |m: &sdp::description::media::MediaDescription| {
        let p = m.media_name.protos.join("/");
        p.eq_ignore_ascii_case("RTP/AVP")
            || p.eq_ignore_ascii_case("RTP/SAVP")
            || (webrtc && is_webrtc_proto(&p))
    };
    let candidates = |m: &&sdp::description::media::MediaDescription| {
        m.media_name.media == "audio" && m.media_name.port.value != 0
    };
    let (audio_line, audio) = match desc
        .media_descriptions
        .iter()
        .enumerate()
        .find(|(_, m)| candidates(m) && is_avp(m))
    {
        Some(x) => x,
        None if desc.media_descriptions.iter().any(|m| candidates(&m)) => {
            return Err(SdpError::SecureOnly);
        }
        None => return Err(SdpError::NoAudio),
    };
    let lines = desc
        .media_descriptions
        .iter()
        .map(|m| {
            (
                m.media_name.media.clone(),
                m.media_name.protos.join("/"),
                m.media_name
                    .formats
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "0".into()),
            )
        })
        .collect();
    let conn = audio
        .connection_information
        .as_ref()
        .or(desc.connection_information.as_ref())
        .and_then(|c| c.address.as_ref())
        .ok_or(SdpError::NoAddress)?;
    // Some UAs (SIPp among them) bracket IPv6 addresses in SDP; RFC 4566 doesn't, accept both.
    let ip: IpAddr = conn
        .address
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| SdpError::NoAddress)?;
    let port = u16::try_from(audio.media_name.port.value).map_err(|_| SdpError::NoAddress)?;
    let addr = if ip.is_unspecified() || port == 0 {
        None
    } else {
        Some(SocketAddr::new(ip, port))
    };

    let rtpmap = |pt: u8| -> Option<String> {
        audio
            .attributes
            .iter()
            .filter(|a| a.key == "rtpmap")
            .find_map(|a| {
                let v = a.value.as_deref()?;
                let (p, name) = v.split_once(' ')?;
                (p.trim().parse::<u8>().ok()? == pt).then(|| name.trim().to_ascii_lowercase())
            })
    };
    let mut codecs = Vec::new();
    let mut telephone_event = None;
    for f in &audio.media_name.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        match (pt, rtpmap(pt).as_deref()) {
            (_, Some(n)) if n.starts_with("pcmu/8000") => codecs.push((Codec::Pcmu, pt)),
            (_, Some(n)) if n.starts_with("pcma/8000") => codecs.push((Codec::Pcma, pt)),
            (_, Some(n)) if n.starts_with("telephone-event/8000") => {
                telephone_event.get_or_insert(pt);
            }
            (0, None) => codecs.push((Codec::Pcmu, 0)),
            (8, None) => codecs.push((Codec::Pcma, 8)),
            _ => {}
        }
    }
    if codecs.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    let dir_of = |attrs: &[sdp::description::common::Attribute]| {
        attrs.iter().find_map(|a| match a.key.as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        })
    };
    let direction = dir_of(&audio.attributes)
        .or_else(|| dir_of(&desc.attributes))
        .unwrap_or(Direction::SendRecv);
    let secure = audio
        .media_name
        .protos
        .join("/")
        .eq_ignore_ascii_case("RTP/SAVP");
    let crypto = audio
        .attributes
        .iter()
        .filter(|a| a.key == "crypto")
        .filter_map(|a| a.value.clone())
        .collect();
    let attr = |key: &str| -> Option<String> {
        audio
            .attributes
            .iter()
            .chain(desc.attributes.iter())
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
    };
    let dtls = if is_webrtc_proto(&audio.media_name.protos.join("/")) {
        Some(RemoteDtls {
            fingerprint: attr("fingerprint").unwrap_or_default(),
            setup: attr("setup").unwrap_or_default(),
            ice_ufrag: attr("ice-ufrag").unwrap_or_default(),
        })
    } else {
        None
    };
    Ok(RemoteMedia {
        dtls,
        addr,
        codecs,
        telephone_event,
        direction,
        lines,
        audio_line,
        secure,
        crypto,
    })
}

/// Our side of a session: address, port, and the version counter RFC 3264 §8 asks for.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    pub ip: IpAddr,
    pub port: u16,
    pub session_id: u64,
    pub version: u64,
    /// SRTP with SDES keys (RFC 4568): the `a=crypto` lines of our SDP (several in an offer,
    /// the one agreed in an answer) and the peer's agreed key. Empty: plain RTP/AVP.
    pub crypto: Vec<crate::media::sdes::CryptoAttr>,
    pub theirs: Option<crate::media::sdes::CryptoAttr>,
    /// Keys offered on RTP/AVP (best-effort SRTP, a trunk's `srtp = "optional"`): a plain
    /// answer keeps the call plain.
    pub best_effort: bool,
    /// A browser's leg: ICE-lite and DTLS-SRTP instead of SDES (`crypto` stays empty).
    pub webrtc: Option<LocalWebRtc>,
}

impl LocalMedia {
    /// A plain RTP endpoint.
    pub fn plain(ip: IpAddr, port: u16, session_id: u64) -> LocalMedia {
        LocalMedia {
            ip,
            port,
            session_id,
            version: 1,
            crypto: Vec::new(),
            theirs: None,
            best_effort: false,
            webrtc: None,
        }
    }
}

/// Answer to `offer`: every common codec in the caller's order (we send the first), and
/// telephone-event if offered.
pub fn answer(local: &LocalMedia, offer: &RemoteMedia) -> String {
    let mut fmts: Vec<u8> = offer.codecs.iter().map(|c| c.1).collect();
    fmts.extend(offer.telephone_event);
    let mut maps = String::new();
    for (codec, pt) in &offer.codecs {
        maps.push_str(&format!("a=rtpmap:{pt} {}/8000\r\n", codec.name()));
    }
    if let Some(te) = offer.telephone_event {
        maps.push_str(&format!(
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
        ));
    }
    let audio = render_audio(local, &fmts, &maps, offer.direction.answer(), true);
    let mut media = String::new();
    for (i, (kind, proto, fmt)) in offer.lines.iter().enumerate() {
        if i == offer.audio_line {
            media.push_str(&audio);
        } else {
            media.push_str(&format!("m={kind} 0 {proto} {fmt}\r\n"));
        }
    }
    session(local) + &media
}

/// Our offer, when the INVITE came without SDP (the answer then arrives in the ACK).
pub fn offer(local: &LocalMedia) -> String {
    let maps = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";
    session(local) + &render_audio(local, &[0, 8, 101], maps, Direction::SendRecv, false)
}

/// Our offer to a seat: the caller's codec only (the bridge relays packets as they are, so
/// both legs must speak the same codec), and telephone-event.
pub fn offer_codec(local: &LocalMedia, codec: Codec, pt: u8) -> String {
    let maps = format!(
        "a=rtpmap:{pt} {}/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
        codec.name()
    );
    session(local) + &render_audio(local, &[pt, 101], &maps, Direction::SendRecv, false)
}

fn session(local: &LocalMedia) -> String {
    let ipv = if local.ip.is_ipv4() { "IP4" } else { "IP6" };
    // A lite ICE agent says so at session level (RFC 8839 §5.3).
    let lite = if local.webrtc.is_some() {
        "a=ice-lite\r\n"
    } else {
        ""
    };
    format!(
        "v=0\r\no=hotline {sid} {ver} IN {ipv} {ip}\r\ns=hotline\r\nc=IN {ipv} {ip}\r\nt=0 0\r\n{lite}",
        sid = local.session_id,
        ver = local.version,
        ip = local.ip,
    )
}

fn render_audio(
    local: &LocalMedia,
    fmts: &[u8],
    maps: &str,
    dir: Direction,
    answering: bool,
) -> String {
    let fmts: Vec<String> = fmts.iter().map(|f| f.to_string()).collect();
    let proto = if local.webrtc.is_some() {
        "UDP/TLS/RTP/SAVPF"
    } else if local.crypto.is_empty() || local.best_effort {
        "RTP/AVP"
    } else {
        "RTP/SAVP"
    };
    let mut crypto = String::new();
    for c in &local.crypto {
        crypto.push_str(&format!("a=crypto:{c}\r\n"));
    }
    if let Some(w) = &local.webrtc {
        // One host candidate, rtcp-mux; we are the DTLS server (RFC 5763 §5: an offerer says
        // actpass, and the browser answers active; answering its offer we say passive).
        let setup = if answering { "passive" } else { "actpass" };
        crypto.push_str(&format!(
            "a=mid:0\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\na=fingerprint:{f}\r\n\
             a=setup:{setup}\r\na=rtcp-mux\r\n\
             a=candidate:1 1 UDP 2130706431 {ip} {port} typ host\r\na=end-of-candidates\r\n",
            u = w.ice_ufrag,
            p = w.ice_pwd,
            f = w.fingerprint,
            ip = local.ip,
            port = local.port,
        ));
    }
    format!(
        "m=audio {} {proto} {}\r\n{maps}{crypto}a=ptime:20\r\na={}\r\n",
        local.port,
        fmts.join(" "),
        dir.attr()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_leg_is_offered_ice_lite_and_dtls_and_its_answer_read() {
        let mut local = LocalMedia::plain("127.0.0.1".parse().unwrap(), 20000, 9);
        local.webrtc = Some(LocalWebRtc {
            ice_ufrag: "abcd1234".into(),
            ice_pwd: "p".repeat(24),
            fingerprint: "sha-256 AA:BB".into(),
        });
        let o = offer_codec(&local, Codec::Pcma, 8);
        assert!(o.contains("a=ice-lite\r\n"), "{o}");
        assert!(
            o.contains("m=audio 20000 UDP/TLS/RTP/SAVPF 8 101\r\n"),
            "{o}"
        );
        assert!(
            o.contains("a=setup:actpass\r\n") && o.contains("a=rtcp-mux\r\n"),
            "{o}"
        );
        assert!(o.contains("typ host"), "{o}");
        // A phone's answer may not be DTLS; a browser's is read with its fingerprint.
        let browser = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            a=fingerprint:sha-256 11:22\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8 101\r\n\
            c=IN IP4 0.0.0.0\r\na=ice-ufrag:brws\r\na=ice-pwd:xxxxxxxxxxxxxxxxxxxxxxxx\r\n\
            a=setup:active\r\na=rtcp-mux\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(parse(browser.as_bytes()), Err(SdpError::SecureOnly));
        let m = parse_webrtc(browser.as_bytes()).unwrap();
        let d = m.dtls.clone().unwrap();
        assert_eq!(
            (
                d.fingerprint.as_str(),
                d.setup.as_str(),
                d.ice_ufrag.as_str()
            ),
            ("sha-256 11:22", "active", "brws")
        );
        assert_eq!(m.codecs, vec![(Codec::Pcma, 8)]);
        assert_eq!(m.addr, None);
        let a = answer(&local, &m);
        assert!(a.contains("a=setup:passive\r\n"), "{a}");
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 8 0 18 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

    #[test]
    fn answers_in_callers_order_with_telephone_event() {
        let o = parse(OFFER.as_bytes()).unwrap();
        assert_eq!(o.codecs, vec![(Codec::Pcma, 8), (Codec::Pcmu, 0)]);
        assert_eq!(o.telephone_event, Some(101));
        assert_eq!(o.addr, Some("10.0.0.5:4000".parse().unwrap()));
        let local = LocalMedia::plain("127.0.0.1".parse().unwrap(), 20000, 9);
        let a = answer(&local, &o);
        assert!(a.contains("m=audio 20000 RTP/AVP 8 0 101\r\n"), "{a}");
        let back = parse(a.as_bytes()).unwrap();
        assert_eq!(back.codecs, o.codecs);
    }

    #[test]
    fn no_common_codec_and_hold() {
        let g729 = OFFER.replace("8 0 18 101", "18 101");
        assert_eq!(parse(g729.as_bytes()), Err(SdpError::NoCommonCodec));
        let hold = OFFER.replace("c=IN IP4 10.0.0.5", "c=IN IP4 0.0.0.0") + "a=sendonly\r\n";
        let h = parse(hold.as_bytes()).unwrap();
        assert_eq!(h.addr, None);
        assert_eq!(h.direction, Direction::SendOnly);
        assert!(!h.direction.we_may_send());
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn video_line_is_rejected_in_place_and_dtls_only_refused() {
        let with_video = OFFER.replace(
            "m=audio",
            "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\nm=audio",
        );
        let o = parse(with_video.as_bytes()).unwrap();
        let local = LocalMedia::plain("127.0.0.1".parse().unwrap(), 20000, 9);
        let a = answer(&local, &o);
        let v = a.find("m=video 0 RTP/AVP 96\r\n").expect(&a);
        assert!(
            v < a.find("m=audio 20000").unwrap(),
            "m-lines keep the offer's order"
        );
        let dtls = OFFER.replace("RTP/AVP", "UDP/TLS/RTP/SAVPF");
        assert_eq!(parse(dtls.as_bytes()), Err(SdpError::SecureOnly));
    }

    #[test]
    fn sdes_offer_is_parsed_and_answered_with_our_key() {
        let key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let srtp = format!(
            "{}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{key}\r\n",
            OFFER.replace("RTP/AVP", "RTP/SAVP")
        );
        let o = parse(srtp.as_bytes()).unwrap();
        assert!(o.secure);
        assert_eq!(o.crypto.len(), 2);
        assert!(o.crypto[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
        let mut local = LocalMedia::plain("127.0.0.1".parse().unwrap(), 20000, 9);
        let ours = crate::media::sdes::CryptoAttr::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{key}"
        ))
        .unwrap();
        local.crypto = vec![ours];
        let a = answer(&local, &o);
        assert!(a.contains("m=audio 20000 RTP/SAVP "), "{a}");
        assert!(
            a.contains(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
            )),
            "{a}"
        );
        // Plain: no crypto, RTP/AVP.
        let plain = answer(
            &LocalMedia::plain("127.0.0.1".parse().unwrap(), 20000, 9),
            &o,
        );
        assert!(
            plain.contains("RTP/AVP") && !plain.contains("a=crypto"),
            "{plain}"
        );
    }

    #[test]
    fn ipv6_offer() {
        let v6 = OFFER.replace("IN IP4 10.0.0.5", "IN IP6 ::1");
        let o = parse(v6.as_bytes()).unwrap();
        assert_eq!(o.addr, Some("[::1]:4000".parse().unwrap()));
    }
}
