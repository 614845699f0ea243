//! Reading requests and writing responses and requests.
//!
//! Parsing is rsipstack's. What we add: the mandatory-header check of RFC 3261 §8.2 (one place
//! that turns a missing or broken header into a 400 with the reason), responses that copy the
//! request's Via/From/To/Call-ID/CSeq verbatim with `received`/`rport` filled in (RFC 3581), and
//! a best-effort 400/501 for messages the parser refuses.

use super::Method;
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Request, SipMessage};
use std::fmt::Write as _;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("unparseable message: {0}")]
    Parse(String),
    #[error("missing or malformed {0} header")]
    BadHeader(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
}

pub fn parse(data: &[u8]) -> Result<SipMessage, MessageError> {
    rsipstack::sip::parser::parse_message(data).map_err(|e| MessageError::Parse(e.to_string()))
}

/// What call control needs of every request, checked once.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: Method,
    pub call_id: String,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    pub cseq: u32,
    pub branch: String,
    /// User part of the Request-URI: the dialled number.
    pub ruri_user: String,
    pub max_forwards: Option<u32>,
}

pub fn request_info(req: &Request) -> Result<RequestInfo, MessageError> {
    let via = req
        .via_header()
        .map_err(|_| MessageError::BadHeader("Via"))?;
    let via = rsipstack::sip::typed::Via::parse(via.value())
        .map_err(|_| MessageError::BadHeader("Via"))?;
    let branch = via
        .branch()
        .map(|b| b.to_string())
        .filter(|b| !b.is_empty())
        .ok_or(MessageError::BadHeader("Via branch"))?;
    let call_id = req
        .call_id_header()
        .map_err(|_| MessageError::BadHeader("Call-ID"))?
        .value()
        .trim()
        .to_string();
    if call_id.is_empty() {
        return Err(MessageError::BadHeader("Call-ID"));
    }
    let from = req
        .from_header()
        .map_err(|_| MessageError::BadHeader("From"))?;
    let from_tag = from
        .tag()
        .map_err(|_| MessageError::BadHeader("From"))?
        .map(|t| t.value().to_string());
    let to = req.to_header().map_err(|_| MessageError::BadHeader("To"))?;
    let to_tag = to
        .tag()
        .map_err(|_| MessageError::BadHeader("To"))?
        .map(|t| t.value().to_string());
    let cseq = req
        .cseq_header()
        .map_err(|_| MessageError::BadHeader("CSeq"))?;
    let cseq = rsipstack::sip::typed::CSeq::parse(cseq.value())
        .map_err(|_| MessageError::BadHeader("CSeq"))?;
    // CANCEL and ACK carry the INVITE's CSeq number with their own method.
    if cseq.method != req.method {
        return Err(MessageError::CSeqMismatch);
    }
    // rsipstack takes what is there; a datagram shorter than its Content-Length was cut in
    // transit and must be refused (RFC 3261 §18.3), not served with half a body.
    if let Some(Header::ContentLength(l)) = req
        .headers
        .iter()
        .find(|h| matches!(h, Header::ContentLength(_)))
    {
        let declared: usize = l
            .value()
            .trim()
            .parse()
            .map_err(|_| MessageError::BadHeader("Content-Length"))?;
        if declared > req.body.len() {
            return Err(MessageError::BadHeader(
                "Content-Length (longer than the body)",
            ));
        }
    }
    let max_forwards = match req.max_forwards_header() {
        Ok(h) => Some(
            h.value()
                .trim()
                .parse()
                .map_err(|_| MessageError::BadHeader("Max-Forwards"))?,
        ),
        Err(_) => None,
    };
    Ok(RequestInfo {
        method: req.method,
        call_id,
        from_tag,
        to_tag,
        cseq: cseq.seq,
        branch,
        ruri_user: req.uri.user().unwrap_or("").to_string(),
        max_forwards,
    })
}

/// What a UAC needs of a response, checked once.
#[derive(Debug, Clone)]
pub struct ResponseInfo {
    pub code: u16,
    pub branch: String,
    pub cseq: u32,
    pub method: Method,
    /// The To header, verbatim (an ACK of a failure copies it).
    pub to: String,
    pub to_tag: Option<String>,
    /// The Contact URI (the remote target once a dialog is up).
    pub contact: Option<String>,
    /// Record-Route values, in the order received.
    pub record_route: Vec<String>,
    /// A 401/407 challenge: header name and value.
    pub challenge: Option<(&'static str, String)>,
    pub body: bytes::Bytes,
}

/// The fields of a response a UAC needs; `None` when Via (branch), CSeq or To are unusable.
pub fn response_info(resp: &rsipstack::sip::Response) -> Option<ResponseInfo> {
    let via = resp.via_header().ok()?;
    let via = rsipstack::sip::typed::Via::parse(via.value()).ok()?;
    let branch = via.branch().map(|b| b.to_string())?;
    let cseq = resp.cseq_header().ok()?;
    let cseq = rsipstack::sip::typed::CSeq::parse(cseq.value()).ok()?;
    let to = resp.to_header().ok()?.value().to_string();
    let to_tag = tag_of(&to);
    let mut contact = None;
    let mut record_route = Vec::new();
    let mut challenge = None;
    for h in resp.headers.iter() {
        match h {
            Header::Contact(c) if contact.is_none() => {
                contact = Some(addr_spec(c.value()).to_string())
            }
            Header::RecordRoute(r) => record_route.push(r.value().to_string()),
            Header::WwwAuthenticate(v) if challenge.is_none() => {
                challenge = Some(("WWW-Authenticate", v.value().to_string()))
            }
            Header::ProxyAuthenticate(v) if challenge.is_none() => {
                challenge = Some(("Proxy-Authenticate", v.value().to_string()))
            }
            _ => {}
        }
    }
    Some(ResponseInfo {
        code: resp.status_code.code(),
        branch,
        cseq: cseq.seq,
        method: cseq.method,
        to,
        to_tag,
        contact,
        record_route,
        challenge,
        body: bytes::Bytes::copy_from_slice(&resp.body),
    })
}

/// The `tag` parameter of a From/To value (after the name-addr's closing `>`).
pub fn tag_of(name_addr: &str) -> Option<String> {
    let params = match name_addr.rfind('>') {
        Some(i) => &name_addr[i..],
        None => name_addr,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("tag") && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// The user part of a From/To value's URI (empty when it has none).
pub fn user_of(name_addr: &str) -> &str {
    let uri = addr_spec(name_addr);
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or(uri);
    match rest.split_once('@') {
        Some((user, _)) => user.split(';').next().unwrap_or(""),
        None => "",
    }
}

/// Header value of the first header named `name` (long or compact form), verbatim.
pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

/// All values of the Via headers, top first.
pub fn vias(req: &Request) -> impl Iterator<Item = &str> {
    req.headers.iter().filter_map(|h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })
}

/// Sets `received` and fills `rport` in the top Via (RFC 3261 §18.2.1, RFC 3581 §4). A
/// header line may carry several comma-separated Vias: only the first is ours to stamp.
fn stamp_top_via(via: &str, src: SocketAddr) -> String {
    let (top, rest) = match via.find(',') {
        Some(i) => (&via[..i], Some(&via[i..])),
        None => (via, None),
    };
    let mut out = String::with_capacity(via.len() + 40);
    let mut rport = false;
    for (i, part) in top.split(';').enumerate() {
        let p = part.trim();
        if i > 0 {
            let name = p.split('=').next().unwrap_or("");
            if name.eq_ignore_ascii_case("rport") {
                rport = true;
                continue;
            }
            if name.eq_ignore_ascii_case("received") {
                continue; // replaced below with what we saw
            }
            out.push(';');
        }
        out.push_str(p);
    }
    let _ = write!(out, ";received={}", src.ip());
    if rport {
        let _ = write!(out, ";rport={}", src.port());
    }
    if let Some(rest) = rest {
        out.push_str(rest);
    }
    out
}

/// A response to `req`. `to_tag` is added to To unless it has one already.
pub struct ResponseSpec<'a> {
    pub code: u16,
    pub reason: &'a str,
    pub to_tag: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<(&'a str, &'a [u8])>,
}

impl<'a> ResponseSpec<'a> {
    pub fn new(code: u16, reason: &'a str) -> Self {
        ResponseSpec {
            code,
            reason,
            to_tag: None,
            headers: &[],
            body: None,
        }
    }
}

pub fn response(req: &Request, src: SocketAddr, server: &str, spec: &ResponseSpec) -> Vec<u8> {
    let vias: Vec<&str> = vias(req).collect();
    let from = header(req, "From").unwrap_or("");
    let to = header(req, "To").unwrap_or("");
    let call_id = header(req, "Call-ID").unwrap_or("");
    let cseq = header(req, "CSeq").unwrap_or("");
    // RFC 3261 §12.1.1: a response that makes (or confirms) a dialog carries the request's
    // Record-Route, so the caller's ACK, BYE and re-INVITEs follow the proxies.
    if req.method == crate::sip::Method::Invite && (101..300).contains(&spec.code) {
        let rr: Vec<(&str, &str)> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::RecordRoute(r) => Some(("Record-Route", r.value())),
                _ => None,
            })
            .collect();
        if !rr.is_empty() {
            let headers: Vec<(&str, &str)> =
                rr.iter().chain(spec.headers.iter()).copied().collect();
            let spec = ResponseSpec {
                headers: &headers,
                ..*spec
            };
            return build_response(&vias, from, to, call_id, cseq, src, server, &spec);
        }
    }
    build_response(&vias, from, to, call_id, cseq, src, server, spec)
}

#[allow(clippy::too_many_arguments)]
fn build_response(
    vias: &[&str],
    from: &str,
    to: &str,
    call_id: &str,
    cseq: &str,
    src: SocketAddr,
    server: &str,
    spec: &ResponseSpec,
) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "SIP/2.0 {} {}\r\n", spec.code, spec.reason);
    for (i, v) in vias.iter().enumerate() {
        if i == 0 {
            let _ = write!(s, "Via: {}\r\n", stamp_top_via(v, src));
        } else {
            let _ = write!(s, "Via: {v}\r\n");
        }
    }
    let _ = write!(s, "From: {from}\r\n");
    match spec.to_tag {
        Some(tag) if !has_tag(to) => {
            let _ = write!(s, "To: {to};tag={tag}\r\n");
        }
        _ => {
            let _ = write!(s, "To: {to}\r\n");
        }
    }
    let _ = write!(s, "Call-ID: {call_id}\r\nCSeq: {cseq}\r\n");
    for (name, value) in spec.headers {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    let _ = write!(s, "Server: {server}\r\n");
    let body: &[u8] = match spec.body {
        Some((ctype, body)) => {
            let _ = write!(s, "Content-Type: {ctype}\r\n");
            body
        }
        None => &[],
    };
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

fn has_tag(name_addr: &str) -> bool {
    // A tag is a header parameter: after the closing '>' when there is one.
    let params = match name_addr.rfind('>') {
        Some(i) => &name_addr[i..],
        None => name_addr,
    };
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
}

/// The head of a request found as text, without the parser: what a response needs.
pub(crate) struct TextHead<'a> {
    pub method: &'a str,
    pub vias: Vec<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub cseq: Option<&'a str>,
}

/// A request's head as text (long and compact header names); `None` when it does not look
/// like a SIP request at all.
pub(crate) fn text_head(data: &[u8]) -> Option<TextHead<'_>> {
    let text = std::str::from_utf8(data).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let mut parts = start.split(' ');
    let method = parts.next()?;
    let _uri = parts.next()?;
    if parts.next()? != "SIP/2.0" || method.is_empty() || !method.bytes().all(is_token_char) {
        return None;
    }
    let mut h = TextHead {
        method,
        vias: Vec::new(),
        from: None,
        to: None,
        call_id: None,
        cseq: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        let is = |long: &str, short: &str| {
            name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short)
        };
        if is("via", "v") {
            h.vias.push(value);
        } else if is("from", "f") {
            h.from = Some(value);
        } else if is("to", "t") {
            h.to = Some(value);
        } else if is("call-id", "i") {
            h.call_id = Some(value);
        } else if name.eq_ignore_ascii_case("cseq") {
            h.cseq = Some(value);
        }
    }
    Some(h)
}

/// A response built from a request's text head alone (no parse, no transaction): for messages
/// the parser refused, and for new calls shed under overload. `None` when the head lacks what
/// a response needs.
pub(crate) fn stateless_response(
    head: &TextHead,
    src: SocketAddr,
    server: &str,
    spec: &ResponseSpec,
) -> Option<Vec<u8>> {
    if head.vias.is_empty() {
        return None;
    }
    Some(build_response(
        &head.vias,
        head.from?,
        head.to?,
        head.call_id?,
        head.cseq?,
        src,
        server,
        spec,
    ))
}

/// For a message the parser refused: if it looks like a request (not ACK) and the headers a
/// response needs can be found as text, a response with `code` (400, or 501 for an unknown
/// method) is built; otherwise `None` and the message is dropped.
pub fn fallback_response(
    data: &[u8],
    src: SocketAddr,
    server: &str,
    reason: &str,
) -> Option<Vec<u8>> {
    let head = text_head(data)?;
    if head.method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    let known = head.method.parse::<Method>().is_ok();
    let (code, why) = if known {
        (400, reason)
    } else {
        (501, "Not Implemented")
    };
    let spec = ResponseSpec::new(
        code,
        if known {
            "Bad Request"
        } else {
            "Not Implemented"
        },
    );
    let warn = format!("399 hotline \"{}\"", why.replace('"', "'"));
    let hdrs = [("Warning", warn.as_str())];
    let spec = ResponseSpec {
        headers: &hdrs,
        ..spec
    };
    stateless_response(&head, src, server, &spec)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Fields for a request we send inside a dialog (BYE).
pub struct InDialogRequest<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub via_transport: &'a str,
    pub via_host: &'a str,
    pub branch: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub routes: &'a [String],
    pub user_agent: &'a str,
    pub extra: &'a [(&'a str, &'a str)],
}

/// A request with a body; the body's Content-Type goes in `r.extra`.
pub fn request_with_body(r: &InDialogRequest, body: &[u8]) -> Vec<u8> {
    let mut head = in_dialog_request(r);
    // in_dialog_request ends with "Content-Length: 0\r\n\r\n": restate it with the body.
    let tail = b"Content-Length: 0\r\n\r\n";
    head.truncate(head.len() - tail.len());
    head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    head.extend_from_slice(body);
    head
}

pub fn in_dialog_request(r: &InDialogRequest) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "{m} {t} SIP/2.0\r\nVia: SIP/2.0/{vt} {vh};branch={b};rport\r\nMax-Forwards: 70\r\n\
         From: {f}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: {n} {m}\r\n",
        m = r.method,
        t = r.target,
        vt = r.via_transport,
        vh = r.via_host,
        b = r.branch,
        f = r.from,
        to = r.to,
        c = r.call_id,
        n = r.cseq
    );
    for route in r.routes {
        let _ = write!(s, "Route: {route}\r\n");
    }
    for (name, value) in r.extra {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    let _ = write!(
        s,
        "User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
        r.user_agent
    );
    s.into_bytes()
}

/// The URI inside a name-addr (`"x" <sip:a@b>;p` → `sip:a@b`), or the value itself.
pub fn addr_spec(name_addr: &str) -> &str {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(a), Some(b)) if a < b => &name_addr[a + 1..b],
        _ => name_addr.split(';').next().unwrap_or(name_addr).trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP [::1]:5070;branch=z9hG4bK-1;rport\r\n\
        f: \"Zhang\" <sip:13800001111@[::1]>;tag=abc\r\n\
        t: <sip:12345@127.0.0.1>\r\n\
        i: call-1@host\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        m: <sip:13800001111@[::1]:5070>\r\n\
        l: 0\r\n\r\n";

    #[test]
    fn compact_headers_and_ipv6_parse_and_respond() {
        let SipMessage::Request(req) = parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        let info = request_info(&req).unwrap();
        assert_eq!(info.call_id, "call-1@host");
        assert_eq!(info.from_tag.as_deref(), Some("abc"));
        assert_eq!(info.to_tag, None);
        assert_eq!(info.branch, "z9hG4bK-1");
        assert_eq!(info.ruri_user, "12345");
        let src: SocketAddr = "[::1]:5070".parse().unwrap();
        let spec = ResponseSpec {
            to_tag: Some("t1"),
            ..ResponseSpec::new(180, "Ringing")
        };
        let r = String::from_utf8(response(&req, src, "hotline", &spec)).unwrap();
        assert!(r.starts_with("SIP/2.0 180 Ringing\r\n"));
        assert!(
            r.contains("Via: SIP/2.0/UDP [::1]:5070;branch=z9hG4bK-1;received=::1;rport=5070\r\n"),
            "{r}"
        );
        let src4: SocketAddr = "192.0.2.9:7000".parse().unwrap();
        assert_eq!(
            stamp_top_via(
                "SIP/2.0/UDP h;branch=z9hG4bK1;received=10.0.0.1;rport, SIP/2.0/UDP p;branch=x",
                src4
            ),
            "SIP/2.0/UDP h;branch=z9hG4bK1;received=192.0.2.9;rport=7000, SIP/2.0/UDP p;branch=x"
        );
        // multi-byte characters in parameters must not panic
        let _ = stamp_top_via("SIP/2.0/UDP h;branch=z9hG4bK1;abcdefgh€;x€€€€€€€€€", src4);
        assert!(r.contains("To: <sip:12345@127.0.0.1>;tag=t1\r\n"));
        assert!(r.contains("Call-ID: call-1@host\r\n"));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
        // and the response parses back
        assert!(matches!(parse(r.as_bytes()), Ok(SipMessage::Response(_))));
    }

    #[test]
    fn missing_headers_and_cseq_mismatch_are_reported() {
        let no_callid = INVITE.replace("i: call-1@host\r\n", "");
        let SipMessage::Request(req) = parse(no_callid.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(
            request_info(&req).unwrap_err(),
            MessageError::BadHeader("Call-ID")
        );
        let bad = INVITE.replace("1 INVITE", "1 BYE");
        let SipMessage::Request(req) = parse(bad.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(request_info(&req).unwrap_err(), MessageError::CSeqMismatch);
    }

    #[test]
    fn fallback_answers_unknown_methods_with_501_and_drops_garbage() {
        let src: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let foo = INVITE
            .replace("INVITE sip", "FOO sip")
            .replace("1 INVITE", "1 FOO");
        assert!(parse(foo.as_bytes()).is_err());
        let r =
            String::from_utf8(fallback_response(foo.as_bytes(), src, "h", "x").unwrap()).unwrap();
        assert!(r.starts_with("SIP/2.0 501 "), "{r}");
        assert!(fallback_response(b"\x00\x01garbage", src, "h", "x").is_none());
        let ack = INVITE.replace("INVITE sip", "ACK sip");
        assert!(fallback_response(ack.as_bytes(), src, "h", "x").is_none());
    }

    #[test]
    fn to_tag_detection() {
        assert!(has_tag("<sip:a@b>;tag=1"));
        assert!(!has_tag("<sip:a@b;tag=1>"));
        assert_eq!(
            addr_spec("\"x\" <sip:a@b:5060;transport=tcp>;tag=1"),
            "sip:a@b:5060;transport=tcp"
        );
    }
}
