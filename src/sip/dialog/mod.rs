//! Dialogs (RFC 3261 §12) and the INVITE session that lives in one ([`invite`]).
//!
//! A [`Dialog`] is what both ends of a call agree on: Call-ID, the two tags, the CSeq counters,
//! the route set and the remote target; it builds the requests we send in it. It knows
//! nothing of INVITE: [`invite::InviteSession`] is the one state machine for every call leg,
//! UAS or UAC.

pub mod invite;

use super::Peer;
use super::message::{self, InDialogRequest};
use bytes::Bytes;
use std::sync::Arc;

/// How the router finds a dialog: its Call-ID and our own tag (unique, since we make it), so
/// a dialog is known from the moment its session exists, before the far end's tag is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogKey {
    pub call_id: String,
    pub local_tag: String,
}

/// Our half of a dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// The far end's tag: known from its INVITE (UAS) or its first response (UAC).
    pub remote_tag: Option<String>,
    /// From of our requests (with our tag).
    local: String,
    /// To of our requests (with the far end's tag once known).
    remote: String,
    /// CSeq of our last request.
    pub local_cseq: u32,
    /// CSeq of the far end's last request.
    pub remote_cseq: Option<u32>,
    /// Route headers of our in-dialog requests, in order.
    pub route_set: Vec<String>,
    /// The far end's Contact: Request-URI of our in-dialog requests.
    pub remote_target: String,
    /// Where our messages go (the flow the far end uses: its source address and transport).
    pub peer: Peer,
    /// Our host:port for Via.
    pub via_host: String,
    /// Our Contact (name-addr).
    pub contact: String,
    pub user_agent: Arc<str>,
}

/// What a dialog is made of when it starts.
pub struct DialogParams {
    pub call_id: String,
    pub local_tag: String,
    /// From of our requests, without the tag.
    pub local_uri: String,
    /// To of our requests: the far end's name-addr, verbatim (with its tag if any).
    pub remote: String,
    pub remote_tag: Option<String>,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub peer: Peer,
    pub via_host: String,
    pub contact: String,
    pub user_agent: Arc<str>,
}

impl Dialog {
    pub fn new(p: DialogParams) -> Dialog {
        Dialog {
            local: format!("{};tag={}", p.local_uri, p.local_tag),
            call_id: p.call_id,
            local_tag: p.local_tag,
            remote_tag: p.remote_tag,
            remote: p.remote,
            local_cseq: 0,
            remote_cseq: None,
            route_set: p.route_set,
            remote_target: p.remote_target,
            peer: p.peer,
            via_host: p.via_host,
            contact: p.contact,
            user_agent: p.user_agent,
        }
    }

    pub fn key(&self) -> DialogKey {
        DialogKey {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
        }
    }

    /// From of our requests.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// To of our requests.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The far end's tag, learnt from a response (UAC): To of our later requests carries it.
    pub fn set_remote_tag(&mut self, tag: &str) {
        if self.remote_tag.as_deref() == Some(tag) {
            return;
        }
        let base = match self.remote.find(";tag=") {
            Some(i) if self.remote[..i].contains('>') || !self.remote.contains('<') => {
                &self.remote[..i]
            }
            _ => self.remote.as_str(),
        };
        self.remote = format!("{base};tag={tag}");
        self.remote_tag = Some(tag.to_string());
    }

    /// A new request in the dialog (next CSeq) with `extra` headers and `body` (whose
    /// Content-Type is in `extra`).
    pub fn request(
        &mut self,
        method: &str,
        branch: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Bytes {
        self.local_cseq += 1;
        let cseq = self.local_cseq;
        self.build(
            method,
            &self.remote_target.clone(),
            branch,
            cseq,
            extra,
            body,
        )
    }

    /// A request with a given CSeq and Request-URI (ACK, CANCEL and INVITE retransmissions
    /// reuse theirs).
    pub fn build(
        &self,
        method: &str,
        target: &str,
        branch: &str,
        cseq: u32,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Bytes {
        self.build_to(method, target, &self.remote, branch, cseq, extra, body)
    }

    /// As `build`, with the To header given (the ACK of a failure copies the response's To).
    #[allow(clippy::too_many_arguments)]
    pub fn build_to(
        &self,
        method: &str,
        target: &str,
        to: &str,
        branch: &str,
        cseq: u32,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Bytes {
        let r = InDialogRequest {
            method,
            target,
            via_transport: self.peer.transport.via_name(),
            via_host: &self.via_host,
            branch,
            from: &self.local,
            to,
            call_id: &self.call_id,
            cseq,
            routes: &self.route_set,
            user_agent: &self.user_agent,
            extra,
        };
        if body.is_empty() {
            Bytes::from(message::in_dialog_request(&r))
        } else {
            Bytes::from(message::request_with_body(&r, body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn dialog() -> Dialog {
        Dialog::new(DialogParams {
            call_id: "c1".into(),
            local_tag: "ours".into(),
            local_uri: "<sip:hotline@127.0.0.1:5060>".into(),
            remote: "<sip:12366@gw>".into(),
            remote_tag: None,
            remote_target: "sip:12366@127.0.0.1:5070".into(),
            route_set: vec!["<sip:proxy;lr>".into()],
            peer: Peer {
                transport: Transport::Udp,
                addr: "127.0.0.1:5070".parse().unwrap(),
            },
            via_host: "127.0.0.1:5060".into(),
            contact: "<sip:hotline@127.0.0.1:5060>".into(),
            user_agent: Arc::from("test"),
        })
    }

    #[test]
    fn requests_carry_the_tags_the_route_set_and_the_next_cseq() {
        let mut d = dialog();
        d.set_remote_tag("theirs");
        d.set_remote_tag("theirs");
        let bye = String::from_utf8(d.request("BYE", "z9hG4bKb", &[], &[]).to_vec()).unwrap();
        assert!(
            bye.starts_with("BYE sip:12366@127.0.0.1:5070 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(bye.contains("From: <sip:hotline@127.0.0.1:5060>;tag=ours\r\n"));
        assert!(bye.contains("To: <sip:12366@gw>;tag=theirs\r\n"), "{bye}");
        assert!(bye.contains("CSeq: 1 BYE\r\nRoute: <sip:proxy;lr>\r\n"));
        let n = String::from_utf8(d.request("NOTIFY", "z9hG4bKn", &[], b"x").to_vec()).unwrap();
        assert!(n.contains("CSeq: 2 NOTIFY") && n.ends_with("Content-Length: 1\r\n\r\nx"));
    }
}
