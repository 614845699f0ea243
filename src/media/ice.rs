//! ICE-lite (RFC 8445 §2.5, RFC 5245 Appendix A) for a browser's leg: the daemon has one host
//! candidate (the leg's RTP port, rtcp-mux) and only answers the browser's connectivity
//! checks. A check is a STUN Binding request (RFC 5389) whose USERNAME starts with our
//! ufrag and whose MESSAGE-INTEGRITY is keyed with our password; the answer carries the
//! source we saw (XOR-MAPPED-ADDRESS), integrity and a fingerprint. The source of a valid
//! check is where the leg's media goes from then on (the browser, as controlling agent,
//! nominates it; a lite agent simply follows).
//!
//! Sans-IO: a packet and its source in, the answer to send out. STUN encoding and integrity
//! are the `stun` crate's (webrtc-rs, the family of the SRTP and DTLS code we use).

use std::net::SocketAddr;
use stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;

/// Why a STUN packet gets no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IceError {
    #[error("not a STUN message: {0}")]
    Malformed(String),
    #[error("not a Binding request")]
    NotBindingRequest,
    #[error("USERNAME is missing or not ours")]
    WrongUser,
    #[error("MESSAGE-INTEGRITY does not match our password")]
    Integrity,
    #[error("cannot encode the answer: {0}")]
    Encode(String),
}

/// Our ICE credentials for one leg (RFC 8445 §5.3: ufrag ≥ 4, password ≥ 22 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceLite {
    pub ufrag: String,
    pub pwd: String,
}

/// An answered connectivity check.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// The Binding success response to send back to the source.
    pub response: Vec<u8>,
    /// The browser nominated this pair (USE-CANDIDATE).
    pub nominated: bool,
}

/// Whether the first byte says STUN (RFC 7983 §7: 0–3).
pub fn is_stun(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| *b < 4) && packet.len() >= 20
}

impl IceLite {
    /// Fresh random credentials from an alphabet every ICE stack takes (ice-char).
    pub fn generate<R: rand::RngExt + ?Sized>(rng: &mut R) -> IceLite {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        let ufrag = pick(8);
        let pwd = pick(24);
        IceLite { ufrag, pwd }
    }

    /// Answers the connectivity check `packet` from `src`.
    pub fn check(&self, packet: &[u8], src: SocketAddr) -> Result<Checked, IceError> {
        let mut req = Message::new();
        req.unmarshal_binary(packet)
            .map_err(|e| IceError::Malformed(e.to_string()))?;
        if req.typ != BINDING_REQUEST {
            return Err(IceError::NotBindingRequest);
        }
        let user =
            TextAttribute::get_from_as(&req, ATTR_USERNAME).map_err(|_| IceError::WrongUser)?;
        // "our-ufrag:their-ufrag" (RFC 8445 §7.2.2): the first part must be ours.
        if user.text.split(':').next() != Some(self.ufrag.as_str()) {
            return Err(IceError::WrongUser);
        }
        let integrity = MessageIntegrity::new_short_term_integrity(self.pwd.clone());
        integrity.check(&mut req).map_err(|_| IceError::Integrity)?;
        let nominated = req.contains(ATTR_USE_CANDIDATE);
        let mut res = Message::new();
        let setters: [Box<dyn Setter>; 5] = [
            Box::new(req),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: src.ip(),
                port: src.port(),
            }),
            Box::new(integrity),
            Box::new(FINGERPRINT),
        ];
        res.build(&setters)
            .map_err(|e| IceError::Encode(e.to_string()))?;
        Ok(Checked {
            response: res.raw,
            nominated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::message::Getter;

    fn request(user: &str, pwd: &str, nominate: bool) -> Vec<u8> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(stun::agent::TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, user.to_string())),
        ];
        if nominate {
            setters.push(Box::new(stun::attributes::RawAttribute {
                typ: ATTR_USE_CANDIDATE,
                length: 0,
                value: vec![],
            }));
        }
        setters.push(Box::new(MessageIntegrity::new_short_term_integrity(
            pwd.to_string(),
        )));
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters).unwrap();
        m.raw
    }

    #[test]
    fn answers_a_valid_check_with_the_source_it_saw() {
        let ice = IceLite::generate(&mut rand::rng());
        assert!(ice.ufrag.len() >= 4 && ice.pwd.len() >= 22);
        let src: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let req = request(&format!("{}:browser", ice.ufrag), &ice.pwd, true);
        assert!(is_stun(&req));
        let answered = ice.check(&req, src).unwrap();
        assert!(answered.nominated);
        let mut res = Message::new();
        res.unmarshal_binary(&answered.response).unwrap();
        assert_eq!(res.typ, BINDING_SUCCESS);
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&res).unwrap();
        assert_eq!((mapped.ip, mapped.port), (src.ip(), src.port()));
        // The browser checks the answer with the same password.
        MessageIntegrity::new_short_term_integrity(ice.pwd.clone())
            .check(&mut res)
            .unwrap();
        FINGERPRINT.check(&res).unwrap();
    }

    #[test]
    fn refuses_checks_not_meant_for_us() {
        let ice = IceLite::generate(&mut rand::rng());
        let src: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let wrong_user = request("someoneelse:browser", &ice.pwd, false);
        assert_eq!(ice.check(&wrong_user, src), Err(IceError::WrongUser));
        let wrong_pwd = request(
            &format!("{}:b", ice.ufrag),
            "not-the-password-at-all!",
            false,
        );
        assert_eq!(ice.check(&wrong_pwd, src), Err(IceError::Integrity));
        assert!(matches!(
            ice.check(&[0u8, 1, 0, 0], src),
            Err(IceError::Malformed(_))
        ));
        let plain = request(&format!("{}:b", ice.ufrag), &ice.pwd, false);
        assert!(!ice.check(&plain, src).unwrap().nominated);
    }
}
