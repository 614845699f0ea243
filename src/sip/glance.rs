//! A look at a datagram without parsing it: is it a new call (an INVITE with no To tag), or
//! the ACK of one of our stateless refusals? Overload control decides on this before any
//! state is made, and answers a shed call from the text alone, so shedding costs a fraction
//! of serving.

use super::message::{self, ResponseSpec};
use std::net::SocketAddr;

/// The To tag of our stateless refusals: their ACKs are recognised by it and dropped.
pub const REFUSAL_TAG: &str = "hotline-refused";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glance<'a> {
    /// An INVITE with no To tag: a new call to this Request-URI user; the top Via's branch
    /// (its retransmissions carry the same).
    NewInvite {
        user: &'a str,
        branch: &'a str,
    },
    /// The ACK of one of our stateless refusals.
    RefusalAck,
    Other,
}

/// What the datagram is, from its first bytes and a few header lines.
pub fn glance(data: &[u8]) -> Glance<'_> {
    let invite = data.starts_with(b"INVITE ");
    if !invite && !data.starts_with(b"ACK ") {
        return Glance::Other;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Glance::Other;
    };
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("");
    let (mut to, mut via) = (None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if to.is_none() && (name.eq_ignore_ascii_case("to") || name.eq_ignore_ascii_case("t")) {
            to = Some(value.trim());
        } else if via.is_none()
            && (name.eq_ignore_ascii_case("via") || name.eq_ignore_ascii_case("v"))
        {
            via = Some(value.trim());
        }
    }
    let Some(to) = to else {
        return Glance::Other;
    };
    let tag = message::tag_of(to);
    if !invite {
        return match tag {
            Some(t) if t == REFUSAL_TAG => Glance::RefusalAck,
            _ => Glance::Other,
        };
    }
    if tag.is_some() {
        return Glance::Other;
    }
    let uri = start.split(' ').nth(1).unwrap_or("");
    let user = uri
        .split_once(':')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_once('@')
        .map(|(u, _)| u.split(';').next().unwrap_or(u))
        .unwrap_or("");
    let branch = via
        .and_then(|v| v.split(',').next())
        .and_then(|v| {
            v.split(';').find_map(|p| {
                let (k, val) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("branch").then(|| val.trim())
            })
        })
        .unwrap_or("");
    Glance::NewInvite { user, branch }
}

/// The 503 of a shed call, built from the INVITE's text: Retry-After, a Warning saying why,
/// and our refusal tag in To. `None` when the text lacks what a response needs.
pub fn refusal(
    data: &[u8],
    src: SocketAddr,
    server: &str,
    retry_after_s: u32,
    why: &str,
) -> Option<Vec<u8>> {
    let head = message::text_head(data)?;
    let retry = retry_after_s.to_string();
    let warning = format!("399 hotline \"{why}\"");
    let hdrs = [
        ("Retry-After", retry.as_str()),
        ("Warning", warning.as_str()),
    ];
    let spec = ResponseSpec {
        to_tag: Some(REFUSAL_TAG),
        headers: &hdrs,
        ..ResponseSpec::new(503, "Service Unavailable")
    };
    message::stateless_response(&head, src, server, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:12345@127.0.0.1:5060;user=phone SIP/2.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-77;rport\r\n\
        f: <sip:138@127.0.0.1>;tag=a\r\nt: <sip:12345@127.0.0.1>\r\ni: c1\r\nCSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn new_invites_and_refusal_acks_are_told_from_text() {
        assert_eq!(
            glance(INVITE.as_bytes()),
            Glance::NewInvite {
                user: "12345",
                branch: "z9hG4bK-77"
            }
        );
        let re = INVITE.replace("t: <sip:12345@127.0.0.1>", "t: <sip:12345@127.0.0.1>;tag=x");
        assert_eq!(glance(re.as_bytes()), Glance::Other, "a re-INVITE");
        assert_eq!(glance(b"BYE sip:x SIP/2.0\r\n\r\n"), Glance::Other);
        assert_eq!(glance(b"INVITE \xff\xfe"), Glance::Other);
        let src: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let r =
            String::from_utf8(refusal(INVITE.as_bytes(), src, "h", 10, "event loop late").unwrap())
                .unwrap();
        assert!(r.starts_with("SIP/2.0 503 Service Unavailable\r\n"), "{r}");
        assert!(
            r.contains("Retry-After: 10\r\n") && r.contains(";tag=hotline-refused\r\n"),
            "{r}"
        );
        assert!(r.contains("received=127.0.0.1;rport=5070"), "{r}");
        let ack = format!(
            "ACK sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-77\r\n\
             To: <sip:12345@127.0.0.1>;tag={REFUSAL_TAG}\r\n\r\n"
        );
        assert_eq!(glance(ack.as_bytes()), Glance::RefusalAck);
        // Garbage never panics.
        for cut in 0..INVITE.len() {
            let _ = glance(&INVITE.as_bytes()[..cut]);
            let _ = refusal(&INVITE.as_bytes()[..cut], src, "h", 1, "x");
        }
    }
}
