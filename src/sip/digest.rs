//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616; SHA-256 for SIP: RFC 8760).
//!
//! Nonces are stateless: the issue time and an HMAC of it under a per-process secret, so any
//! nonce we issued can be checked and dated without a table. Replay protection is the one
//! piece of state: for each nonce in use, the highest nonce-count (`nc`) seen; a request must
//! carry a higher one.
//!
//! rsipstack's typed `Authorization` parses `nc` as a u8 (fails from the 256th use of a nonce)
//! and re-serialises `uri`, which breaks the hash; so the raw parameters are read here.
//!
//! The client side ([`authorization`]) answers a trunk's challenge to our INVITE.

use hmac::{KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

type HmacSha256 = hmac::Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            n if n.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            n if n.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
    pub fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

/// HA1 = H(user:realm:password), what the configuration stores instead of the password.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&format!("{user}:{realm}:{password}"))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Authorization header does not parse: {0}")]
    Malformed(String),
    #[error("realm {0:?} is not ours")]
    WrongRealm(String),
    #[error("nonce was not issued by us")]
    ForeignNonce,
    #[error("nonce expired")]
    Stale,
    #[error("nonce-count {0} replayed")]
    Replay(u32),
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("qop must be auth")]
    Qop,
    #[error("wrong password (response does not match)")]
    WrongResponse,
}

/// The parameters of a Digest `Authorization` header, verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub nc: Option<u32>,
    pub cnonce: Option<String>,
}

impl Credentials {
    pub fn parse(header: &str) -> Result<Credentials, AuthError> {
        let tok = rsipstack::sip::typed::tokenizers::AuthTokenizer::parse(header)
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        if !tok.scheme.eq_ignore_ascii_case("digest") {
            return Err(AuthError::Malformed(format!("scheme {:?}", tok.scheme)));
        }
        let get = |k: &str| {
            tok.params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim_matches('"').to_string())
        };
        let need =
            |k: &'static str| get(k).ok_or_else(|| AuthError::Malformed(format!("missing {k}")));
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(a) => return Err(AuthError::Algorithm(a)),
        };
        let nc = match get("nc") {
            Some(n) => Some(
                u32::from_str_radix(&n, 16)
                    .map_err(|_| AuthError::Malformed(format!("nc {n:?}")))?,
            ),
            None => None,
        };
        Ok(Credentials {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?.to_ascii_lowercase(),
            algorithm,
            qop: get("qop"),
            nc,
            cnonce: get("cnonce"),
        })
    }
}

/// Issues and checks nonces.
pub struct Nonces {
    key: [u8; 32],
    realm: String,
    /// Offered in this order; credentials in any other algorithm are challenged again.
    algorithms: Vec<Algorithm>,
    ttl_s: u64,
    /// nonce → highest nc accepted.
    seen: HashMap<String, u32>,
}

impl Nonces {
    pub fn new(realm: &str, ttl_s: u64, key: [u8; 32], algorithms: Vec<Algorithm>) -> Self {
        Nonces {
            key,
            realm: realm.to_string(),
            algorithms,
            ttl_s,
            seen: HashMap::new(),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, ts: u64, salt: u64) -> String {
        let mut m =
            <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(&ts.to_be_bytes());
        m.update(&salt.to_be_bytes());
        m.update(self.realm.as_bytes());
        hex(&m.finalize().into_bytes()[..16])
    }

    /// A fresh nonce for a challenge at wall-clock second `now_s`: issue time, a random salt
    /// (every challenge gets its own nonce, also within one second) and their HMAC.
    pub fn issue(&self, now_s: u64, salt: u64) -> String {
        format!("{now_s:016x}{salt:016x}{}", self.mac(now_s, salt))
    }

    /// The `WWW-Authenticate` values for a challenge, one per algorithm, most preferred first
    /// (RFC 8760 §2.4).
    pub fn challenges(&self, now_s: u64, salt: u64, stale: bool) -> Vec<String> {
        let nonce = self.issue(now_s, salt);
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    self.realm,
                    a.name()
                )
            })
            .collect()
    }

    /// Whether `c` carries a fresh nonce of ours (so its sender saw our challenge: it is not
    /// a spoofed source).
    pub fn nonce_is_ours_and_fresh(&self, now_s: u64, c: &Credentials) -> bool {
        if c.nonce.len() != 64 || !c.nonce.is_ascii() {
            return false;
        }
        let (Ok(ts), Ok(salt)) = (
            u64::from_str_radix(&c.nonce[..16], 16),
            u64::from_str_radix(&c.nonce[16..32], 16),
        ) else {
            return false;
        };
        constant_time_eq(self.mac(ts, salt).as_bytes(), c.nonce[32..].as_bytes())
            && now_s.saturating_sub(ts) <= self.ttl_s
            && ts <= now_s + 5
    }

    /// Checks `c` for `method` against the stored `ha1` (for `c.algorithm`).
    pub fn verify(
        &mut self,
        now_s: u64,
        method: &str,
        c: &Credentials,
        ha1: &str,
    ) -> Result<(), AuthError> {
        if c.realm != self.realm {
            return Err(AuthError::WrongRealm(c.realm.clone()));
        }
        if !self.algorithms.contains(&c.algorithm) {
            return Err(AuthError::Algorithm(c.algorithm.name().to_string()));
        }
        if c.nonce.len() != 64 || !c.nonce.is_ascii() {
            return Err(AuthError::ForeignNonce);
        }
        let ts = u64::from_str_radix(&c.nonce[..16], 16).map_err(|_| AuthError::ForeignNonce)?;
        let salt =
            u64::from_str_radix(&c.nonce[16..32], 16).map_err(|_| AuthError::ForeignNonce)?;
        if !constant_time_eq(self.mac(ts, salt).as_bytes(), c.nonce[32..].as_bytes()) {
            return Err(AuthError::ForeignNonce);
        }
        if now_s.saturating_sub(ts) > self.ttl_s || ts > now_s + 5 {
            return Err(AuthError::Stale);
        }
        let (qop, nc, cnonce) = match (&c.qop, c.nc, &c.cnonce) {
            (Some(q), Some(nc), Some(cn)) if q.eq_ignore_ascii_case("auth") => (q, nc, cn),
            _ => return Err(AuthError::Qop),
        };
        let ha2 = c.algorithm.hash_hex(&format!("{method}:{}", c.uri));
        let nc_hex = format!("{nc:08x}");
        let expected = c
            .algorithm
            .hash_hex(&format!("{ha1}:{}:{nc_hex}:{cnonce}:{qop}:{ha2}", c.nonce));
        if !constant_time_eq(expected.as_bytes(), c.response.as_bytes()) {
            return Err(AuthError::WrongResponse);
        }
        // Only a correct response may advance the counter, or a forger could burn it.
        let last = self.seen.entry(c.nonce.clone()).or_insert(0);
        if nc <= *last {
            return Err(AuthError::Replay(nc));
        }
        *last = nc;
        self.prune(now_s);
        Ok(())
    }

    fn prune(&mut self, now_s: u64) {
        if self.seen.len() < 4096 {
            return;
        }
        let ttl = self.ttl_s;
        self.seen.retain(|n, _| {
            u64::from_str_radix(&n[..16], 16).is_ok_and(|ts| now_s.saturating_sub(ts) <= ttl)
        });
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Authorization` (401) or `Proxy-Authorization` (407) header, name and value, that
/// answers `challenge` (a `WWW-Authenticate`/`Proxy-Authenticate` value) for `method` to `uri`
/// with `user` and `password`; `None` when the challenge is not a usable digest challenge.
pub fn authorization(
    code: u16,
    challenge: &str,
    (user, password): (&str, &str),
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<(&'static str, String)> {
    let tok = rsipstack::sip::typed::tokenizers::AuthTokenizer::parse(challenge).ok()?;
    if !tok.scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let get = |k: &str| {
        tok.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.trim_matches('"').to_string())
    };
    let realm = get("realm")?;
    let nonce = get("nonce")?;
    let alg = match get("algorithm") {
        None => Algorithm::Md5,
        Some(a) => Algorithm::from_name(&a)?,
    };
    let h1 = ha1(alg, user, &realm, password);
    let h2 = alg.hash_hex(&format!("{method}:{uri}"));
    let qop_auth =
        get("qop").is_some_and(|q| q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")));
    let mut value = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={}",
        alg.name()
    );
    if qop_auth {
        let response = alg.hash_hex(&format!("{h1}:{nonce}:00000001:{cnonce}:auth:{h2}"));
        value.push_str(&format!(
            ", qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{response}\""
        ));
    } else {
        let response = alg.hash_hex(&format!("{h1}:{nonce}:{h2}"));
        value.push_str(&format!(", response=\"{response}\""));
    }
    if let Some(opaque) = get("opaque") {
        value.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some((
        if code == 407 {
            "Proxy-Authorization"
        } else {
            "Authorization"
        },
        value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client computes (RFC 7616 §3.4.1).
    fn client(
        alg: Algorithm,
        user: &str,
        pass: &str,
        realm: &str,
        nonce: &str,
        uri: &str,
        nc: u32,
    ) -> String {
        let ha1 = ha1(alg, user, realm, pass);
        let ha2 = alg.hash_hex(&format!("REGISTER:{uri}"));
        let resp = alg.hash_hex(&format!("{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, qop=auth, nc={nc:08x}, cnonce=\"c0ffee\"",
            alg.name()
        )
    }

    #[test]
    fn rfc_known_md5_ha1() {
        // RFC 2617 §3.5 example: Mufasa / Circle Of Life
        assert_eq!(
            ha1(
                Algorithm::Md5,
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life"
            ),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn md5_and_sha256_accepted_replay_and_wrong_password_refused() {
        let mut n = Nonces::new(
            "hotline",
            300,
            [7; 32],
            vec![Algorithm::Md5, Algorithm::Sha256],
        );
        for (salt, alg) in [(1, Algorithm::Md5), (2, Algorithm::Sha256)] {
            let nonce = n.issue(1000, salt);
            let stored = ha1(alg, "1001", "hotline", "secret");
            let h = client(
                alg,
                "1001",
                "secret",
                "hotline",
                &nonce,
                "sip:127.0.0.1:5060",
                1,
            );
            let c = Credentials::parse(&h).unwrap();
            assert_eq!(n.verify(1001, "REGISTER", &c, &stored), Ok(()));
            assert_eq!(
                n.verify(1001, "REGISTER", &c, &stored),
                Err(AuthError::Replay(1))
            );
            let c2 = Credentials::parse(&client(
                alg,
                "1001",
                "secret",
                "hotline",
                &nonce,
                "sip:127.0.0.1:5060",
                300,
            ))
            .unwrap();
            assert_eq!(
                n.verify(1002, "REGISTER", &c2, &stored),
                Ok(()),
                "nc above 255 works"
            );
            let bad = Credentials::parse(&client(
                alg,
                "1001",
                "guess",
                "hotline",
                &nonce,
                "sip:127.0.0.1:5060",
                301,
            ))
            .unwrap();
            assert_eq!(
                n.verify(1002, "REGISTER", &bad, &stored),
                Err(AuthError::WrongResponse)
            );
        }
    }

    #[test]
    fn stale_and_forged_nonces() {
        let mut n = Nonces::new(
            "hotline",
            300,
            [7; 32],
            vec![Algorithm::Md5, Algorithm::Sha256],
        );
        let stored = ha1(Algorithm::Md5, "u", "hotline", "p");
        let old = n.issue(1000, 2);
        let c = Credentials::parse(&client(
            Algorithm::Md5,
            "u",
            "p",
            "hotline",
            &old,
            "sip:x",
            1,
        ))
        .unwrap();
        assert_eq!(
            n.verify(1301, "REGISTER", &c, &stored),
            Err(AuthError::Stale)
        );
        let forged = format!("{:016x}{:016x}{}", 5000u64, 1u64, "0".repeat(32));
        assert_ne!(
            n.issue(5000, 3),
            n.issue(5000, 4),
            "every challenge has its own nonce (its own salt)"
        );
        let c = Credentials::parse(&client(
            Algorithm::Md5,
            "u",
            "p",
            "hotline",
            &forged,
            "sip:x",
            1,
        ))
        .unwrap();
        assert_eq!(
            n.verify(5000, "REGISTER", &c, &stored),
            Err(AuthError::ForeignNonce)
        );
        assert!(Credentials::parse("Basic dXNlcjpwYXNz").is_err());
        let no_qop = client(
            Algorithm::Md5,
            "u",
            "p",
            "hotline",
            &n.issue(10, 5),
            "sip:x",
            1,
        )
        .replace(", qop=auth", "");
        assert_eq!(
            n.verify(
                10,
                "REGISTER",
                &Credentials::parse(&no_qop).unwrap(),
                &stored
            ),
            Err(AuthError::Qop)
        );
    }
}
