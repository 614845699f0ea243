//! Registrar (RFC 3261 §10): seats register their softphones' contacts with digest
//! authentication; bindings expire, several contacts per seat are kept, `*` with Expires 0
//! removes all. A seat behind NAT is reached at the address its REGISTER came from (rport /
//! received), not at the private address in its Contact. Failed attempts are logged and a
//! source that keeps failing is refused for a while.
//!
//! Sans-IO like the rest: `register` takes the request, the source and the time, and returns
//! an [`Outcome`]; [`Outcome::status`] is the one table from outcome to SIP status.

use crate::config::{RegistrarConfig, SeatConfig};
use crate::sip::digest;
use crate::sip::message::RequestInfo;
use crate::sip::{Peer, Request};
use digest::{AuthError, Credentials, Nonces};
use rsipstack::sip::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// One registered contact of a seat.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The Contact URI as the phone sent it.
    pub uri: String,
    /// Where the REGISTER came from: where requests to this contact go.
    pub peer: Peer,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// False after a keep-alive OPTIONS went unanswered.
    pub reachable: bool,
    /// The proxies between us and the phone (RFC 3327 Path, in the REGISTER's order): the
    /// route set of every request to this contact.
    pub path: Vec<String>,
}

/// The name-addrs of a header value that may list several, split at the commas outside
/// angle brackets and quotes.
fn split_name_addrs(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut angle, mut quote) = (Vec::new(), String::new(), false, false);
    for c in v.chars() {
        match c {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// What a REGISTER gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Bindings after the update: (contact URI, seconds left).
    Registered {
        seat: String,
        contacts: Vec<(String, u64)>,
    },
    Challenge {
        stale: bool,
    },
    Forbidden(&'static str),
    Throttled {
        retry_after_s: u64,
    },
    NotFound,
    IntervalTooBrief {
        min: u64,
    },
    BadRequest(String),
    OutOfOrder,
}

/// Result of checking a request's digest credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Index of the authenticated seat.
    Seat(usize),
    Challenge {
        stale: bool,
    },
    Forbidden(&'static str),
    Throttled {
        retry_after_s: u64,
    },
    NotFound,
    BadRequest(String),
}

impl Outcome {
    /// The one table from registrar outcome to SIP status.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Outcome::Registered { .. } => (200, "OK"),
            Outcome::Challenge { .. } => (401, "Unauthorized"),
            Outcome::Forbidden(_) | Outcome::Throttled { .. } => (403, "Forbidden"),
            Outcome::NotFound => (404, "Not Found"),
            Outcome::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            Outcome::BadRequest(_) => (400, "Bad Request"),
            Outcome::OutOfOrder => (500, "Server Internal Error"),
        }
    }
}

#[derive(Default)]
struct Failures {
    times: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

pub struct Registrar {
    cfg: RegistrarConfig,
    seats: Vec<SeatConfig>,
    by_user: HashMap<String, usize>,
    bindings: Vec<Vec<Binding>>,
    nonces: Nonces,
    /// Failed attempts per (source address, user): a seat with a stale password is blocked
    /// from its address without blocking the other seats behind the same NAT address.
    failures: HashMap<(IpAddr, String), Failures>,
    /// Failed attempts per source, whatever the user, with a higher ceiling: a scan of many
    /// users from one address is still blocked.
    source_failures: HashMap<IpAddr, Failures>,
    /// When keep-alives last went out.
    last_qualify: Option<Instant>,
    /// Proxies whose forwarded requests are counted against the address they vouch for.
    trusted: Vec<IpAddr>,
}

impl Registrar {
    pub fn new(cfg: RegistrarConfig, seats: Vec<SeatConfig>, key: [u8; 32]) -> Self {
        let by_user = seats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.user.clone(), i))
            .collect();
        let bindings = vec![Vec::new(); seats.len()];
        let algorithms = cfg
            .algorithms
            .iter()
            .filter_map(|a| digest::Algorithm::from_name(a))
            .collect();
        let nonces = Nonces::new(&cfg.realm, cfg.nonce_ttl_s, key, algorithms);
        Registrar {
            cfg,
            seats,
            by_user,
            bindings,
            nonces,
            failures: HashMap::new(),
            source_failures: HashMap::new(),
            last_qualify: None,
            trusted: Vec::new(),
        }
    }

    /// Requests from these proxies are counted against the address they vouch for.
    pub fn trust_proxies(&mut self, proxies: &[IpAddr]) {
        self.trusted = proxies.to_vec();
    }

    /// The address a request is counted against for throttling and blocking: its source, or,
    /// from a trusted proxy, the `received` (else the host) of the Via below the proxy's.
    pub fn source_of(&self, req: &Request, peer: Peer) -> IpAddr {
        let ip = peer.addr.ip();
        if !self.trusted.contains(&ip) {
            return ip;
        }
        let vias: Vec<&str> = crate::sip::message::vias(req)
            .flat_map(|v| v.split(','))
            .collect();
        let Some(below) = vias.get(1) else {
            return ip;
        };
        let param = |name: &str| {
            below.split(';').skip(1).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        let host = below
            .split_whitespace()
            .nth(1)
            .and_then(|sent_by| sent_by.split(';').next())
            .map(|h| {
                h.trim_start_matches('[')
                    .rsplit_once(']')
                    .map_or_else(|| h.rsplit_once(':').map_or(h, |x| x.0), |x| x.0)
            });
        param("received")
            .or(host)
            .and_then(|h| h.parse().ok())
            .unwrap_or(ip)
    }

    pub fn seats(&self) -> &[SeatConfig] {
        &self.seats
    }

    /// The index of the seat with this id (as the API names seats).
    pub fn seat_index(&self, id: &str) -> Option<usize> {
        self.seats.iter().position(|s| s.id == id)
    }

    /// Live contacts of seat `i`.
    pub fn contacts(&self, i: usize, now: Instant) -> impl Iterator<Item = &Binding> {
        self.bindings
            .get(i)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// Whether keep-alives are due (every `every`; never when it is zero); if so, they are
    /// taken as sent now.
    pub fn qualify_due(&mut self, now: Instant, every: Duration) -> bool {
        if every.is_zero()
            || self
                .last_qualify
                .is_some_and(|t| now.duration_since(t) < every)
        {
            return false;
        }
        self.last_qualify = Some(now);
        true
    }

    pub fn challenges(&self, now_s: u64, salt: u64, stale: bool) -> Vec<String> {
        self.nonces.challenges(now_s, salt, stale)
    }

    /// Drops expired bindings and old failure records.
    pub fn prune(&mut self, now: Instant) {
        for (i, list) in self.bindings.iter_mut().enumerate() {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            if list.len() < before {
                info!(seat = %self.seats[i].id, left = list.len(), "registration expired");
            }
        }
        let window = Duration::from_secs(self.cfg.failure_window_s);
        let keep = |f: &Failures| {
            f.blocked_until.is_some_and(|t| t > now)
                || f.times
                    .back()
                    .is_some_and(|&t| now.duration_since(t) < window)
        };
        self.failures.retain(|_, f| keep(f));
        self.source_failures.retain(|_, f| keep(f));
    }

    /// Ends every binding made over the stream connection `transport` (it closed); returns
    /// the seats that lost one.
    pub fn drop_connection(&mut self, transport: crate::sip::Transport) -> Vec<usize> {
        if transport.connection().is_none() {
            return Vec::new();
        }
        let mut seats = Vec::new();
        for (i, list) in self.bindings.iter_mut().enumerate() {
            let before = list.len();
            list.retain(|b| b.peer.transport != transport);
            if list.len() < before {
                info!(seat = %self.seats[i].id, left = list.len(), transport = transport.via_name(), "connection closed; its contacts unregistered");
                seats.push(i);
            }
        }
        seats
    }

    /// Marks a contact reachable or not (keep-alive OPTIONS answered or not).
    pub fn set_reachable(&mut self, seat: usize, uri: &str, reachable: bool) {
        if let Some(b) = self
            .bindings
            .get_mut(seat)
            .and_then(|l| l.iter_mut().find(|b| b.uri == uri))
        {
            if b.reachable != reachable {
                info!(seat = %self.seats[seat].id, contact = uri, reachable, "contact reachability changed");
            }
            b.reachable = reachable;
        }
    }

    /// Every live (seat index, binding), for keep-alives.
    pub fn all_bindings(&self, now: Instant) -> Vec<(usize, Binding)> {
        self.bindings
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                l.iter()
                    .filter(|b| b.expires_at > now)
                    .map(move |b| (i, b.clone()))
            })
            .collect()
    }

    /// A failed attempt from `ip` for `user`: blocks the pair after `max_failures`, and the
    /// whole source after `max_failures_per_source` (a scan of many users).
    fn fail(&mut self, now: Instant, ip: IpAddr, user: &str, why: &str) {
        warn!(%ip, user, reason = why, "REGISTER refused");
        let window = Duration::from_secs(self.cfg.failure_window_s);
        let block = now + Duration::from_secs(self.cfg.block_s);
        let count = |f: &mut Failures| {
            f.times.push_back(now);
            while f
                .times
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                f.times.pop_front();
            }
            f.times.len() as u32
        };
        let f = self.failures.entry((ip, user.to_string())).or_default();
        if count(f) >= self.cfg.max_failures {
            f.blocked_until = Some(block);
            warn!(%ip, user, failures = f.times.len(), block_s = self.cfg.block_s, "too many failed REGISTERs for this user; source blocked for it (other users from this address are not)");
        }
        let f = self.source_failures.entry(ip).or_default();
        if count(f) >= self.cfg.max_failures_per_source {
            f.blocked_until = Some(block);
            let users = self.failures.keys().filter(|(i, _)| *i == ip).count();
            warn!(%ip, failures = f.times.len(), users, block_s = self.cfg.block_s, "a scan: too many failed REGISTERs from this address; source blocked for every user");
        }
    }

    /// Checks the digest credentials of `req` (in `auth_header`: `Authorization` for
    /// REGISTER, `Proxy-Authorization` for other requests) for the seat whose user is `user`.
    pub fn authenticate(
        &mut self,
        now: Instant,
        now_s: u64,
        req: &Request,
        user: &str,
        auth_header: &str,
        peer: Peer,
    ) -> AuthOutcome {
        let ip = self.source_of(req, peer);
        let blocked = [
            self.failures.get(&(ip, user.to_string())),
            self.source_failures.get(&ip),
        ]
        .into_iter()
        .flatten()
        .filter_map(|f| f.blocked_until)
        .filter(|&t| t > now)
        .max();
        if let Some(until) = blocked {
            return AuthOutcome::Throttled {
                retry_after_s: until.duration_since(now).as_secs().max(1),
            };
        }
        let Some(&seat) = self.by_user.get(user) else {
            // Unknown users are challenged like seats, so the seat list can't be probed; only
            // an answer to one of our own fresh nonces counts as a failure, because a spoofed
            // source never sees the challenge and so can't get an address blocked.
            let creds = crate::sip::message::header(req, auth_header)
                .and_then(|a| Credentials::parse(a).ok());
            return match creds {
                Some(c) if self.nonces.nonce_is_ours_and_fresh(now_s, &c) => {
                    self.fail(now, ip, user, "no such seat");
                    AuthOutcome::Forbidden("wrong credentials")
                }
                _ => AuthOutcome::Challenge { stale: false },
            };
        };
        let seat_id = self.seats[seat].id.clone();
        let Some(auth) = crate::sip::message::header(req, auth_header) else {
            return AuthOutcome::Challenge { stale: false };
        };
        let creds = match Credentials::parse(auth) {
            Ok(c) => c,
            Err(e) => return AuthOutcome::BadRequest(e.to_string()),
        };
        if creds.username != self.seats[seat].user {
            if !self.nonces.nonce_is_ours_and_fresh(now_s, &creds) {
                return AuthOutcome::Challenge { stale: false };
            }
            self.fail(now, ip, user, "username does not match the seat");
            return AuthOutcome::Forbidden("username does not match the seat");
        }
        let ha1 = match creds.algorithm {
            digest::Algorithm::Md5 => self.seats[seat].ha1_md5.clone(),
            digest::Algorithm::Sha256 => self.seats[seat].ha1_sha256.clone(),
        };
        match self
            .nonces
            .verify(now_s, req.method.to_string().as_str(), &creds, &ha1)
        {
            Ok(()) => {}
            Err(AuthError::Stale) => return AuthOutcome::Challenge { stale: true },
            Err(AuthError::ForeignNonce | AuthError::Qop) => {
                return AuthOutcome::Challenge { stale: false };
            }
            // A used nonce-count: a replay, or a phone that reuses its last challenge for a new
            // request (libre does). Either way a fresh nonce, marked stale so the phone takes it
            // without asking its user for the password again (RFC 7616 §3.3).
            Err(e @ AuthError::Replay(_)) => {
                info!(%ip, seat = %seat_id, error = %e, "used nonce-count; issuing a fresh nonce");
                return AuthOutcome::Challenge { stale: true };
            }
            // An algorithm we did not offer: challenge with the ones we do.
            Err(AuthError::Algorithm(_)) => return AuthOutcome::Challenge { stale: false },
            Err(AuthError::Malformed(m)) => return AuthOutcome::BadRequest(m),
            Err(e @ (AuthError::WrongRealm(_) | AuthError::WrongResponse)) => {
                self.fail(now, ip, user, &e.to_string());
                return AuthOutcome::Forbidden("wrong credentials");
            }
        }
        if let Some(f) = self.failures.get_mut(&(ip, user.to_string())) {
            f.times.clear();
        }
        AuthOutcome::Seat(seat)
    }

    pub fn register(
        &mut self,
        now: Instant,
        now_s: u64,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) -> Outcome {
        let user = match req
            .to_header()
            .ok()
            .and_then(|t| t.uri().ok())
            .and_then(|u| u.user().map(str::to_string))
        {
            Some(u) => u,
            None => return Outcome::BadRequest("To has no user".into()),
        };
        // 远端座席 reach the centre over public networks: their REGISTER (and so their digest
        // exchange and every request to them) must be encrypted. Refused before any challenge,
        // so no digest crosses the wire in the clear.
        if !peer.transport.secure()
            && let Some(&seat) = self.by_user.get(&user)
            && self.seats[seat].remote
        {
            warn!(seat = %self.seats[seat].id, from = %peer.addr, transport = peer.transport.via_name(), "a remote seat registering without TLS; refused");
            return Outcome::Forbidden(
                "a remote seat must register over TLS (sips or transport=tls)",
            );
        }
        match self.authenticate(now, now_s, req, &user, "Authorization", peer) {
            AuthOutcome::Seat(seat) => self.update_bindings(now, seat, req, info, peer),
            AuthOutcome::Challenge { stale } => Outcome::Challenge { stale },
            AuthOutcome::Forbidden(why) => Outcome::Forbidden(why),
            AuthOutcome::Throttled { retry_after_s } => Outcome::Throttled { retry_after_s },
            AuthOutcome::NotFound => Outcome::NotFound,
            AuthOutcome::BadRequest(why) => Outcome::BadRequest(why),
        }
    }

    fn update_bindings(
        &mut self,
        now: Instant,
        seat: usize,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) -> Outcome {
        let header_expires = match req.expires_header() {
            Some(e) => match e.value().trim().parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => return Outcome::BadRequest("Expires is not a number".into()),
            },
            None => None,
        };
        let raw_contacts: Vec<&str> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                rsipstack::sip::Header::Contact(c) => Some(c.value()),
                _ => None,
            })
            .collect();
        let seat_id = self.seats[seat].id.clone();
        if raw_contacts.iter().any(|c| c.trim() == "*") {
            if raw_contacts.len() != 1 || header_expires != Some(0) {
                return Outcome::BadRequest(
                    "Contact * needs Expires: 0 and no other contact".into(),
                );
            }
            self.bindings[seat].clear();
            info!(seat = %seat_id, "all contacts unregistered");
            return self.registered(seat, now);
        }
        let mut updates = Vec::new();
        for raw in &raw_contacts {
            let list = match rsipstack::sip::typed::Contact::parse_header_list(raw) {
                Ok(l) => l,
                Err(e) => return Outcome::BadRequest(format!("Contact: {e}")),
            };
            for c in list {
                let expires = c
                    .expires()
                    .map(u64::from)
                    .or(header_expires)
                    .unwrap_or(self.cfg.default_expires);
                if expires > 0 && expires < self.cfg.min_expires {
                    return Outcome::IntervalTooBrief {
                        min: self.cfg.min_expires,
                    };
                }
                updates.push((
                    crate::sip::message::addr_spec(&c.uri.to_string()).to_string(),
                    expires.min(self.cfg.max_expires),
                ));
            }
        }
        // RFC 3327: the Path headers, top first, are the route to the phone.
        let path: Vec<String> = req
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Path"))
            .flat_map(|h| split_name_addrs(h.value()))
            .collect();
        let list = &mut self.bindings[seat];
        list.retain(|b| b.expires_at > now);
        for (uri, _) in &updates {
            if let Some(b) = list.iter().find(|b| &b.uri == uri)
                && b.call_id == info.call_id
                && info.cseq <= b.cseq
            {
                return Outcome::OutOfOrder;
            }
        }
        for (uri, expires) in updates {
            list.retain(|b| b.uri != uri);
            if expires == 0 {
                info!(seat = %seat_id, contact = %uri, "contact unregistered");
                continue;
            }
            if list.len() >= self.cfg.max_contacts {
                // The oldest contact makes room: a phone that re-installs keeps working.
                list.sort_by_key(|b| b.expires_at);
                list.remove(0);
            }
            info!(seat = %seat_id, contact = %uri, from = %peer.addr, expires, "registered");
            list.push(Binding {
                uri,
                peer,
                expires_at: now + Duration::from_secs(expires),
                call_id: info.call_id.clone(),
                cseq: info.cseq,
                reachable: true,
                path: path.clone(),
            });
        }
        self.registered(seat, now)
    }

    fn registered(&self, seat: usize, now: Instant) -> Outcome {
        Outcome::Registered {
            seat: self.seats[seat].id.clone(),
            contacts: self
                .contacts(seat, now)
                .map(|b| (b.uri.clone(), b.expires_at.duration_since(now).as_secs()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn path_values_split_outside_brackets_and_quotes() {
        assert_eq!(
            split_name_addrs("<sip:a@p1;lr>, \"x, y\" <sip:p2;lr>,<sip:p3,x;lr>"),
            vec!["<sip:a@p1;lr>", "\"x, y\" <sip:p2;lr>", "<sip:p3,x;lr>"]
        );
    }

    #[test]
    fn a_trusted_proxy_vouches_for_the_address_below_it() {
        let cfg = RegistrarConfig::default();
        let mut r = Registrar::new(cfg, Vec::new(), [7; 32]);
        let text = "REGISTER sip:hotline SIP/2.0\r\n\
            Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy\r\n\
            Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-phone;received=203.0.113.7;rport=40000\r\n\
            From: <sip:1001@hotline>;tag=1\r\nTo: <sip:1001@hotline>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
            Content-Length: 0\r\n\r\n";
        let crate::sip::SipMessage::Request(req) =
            crate::sip::message::parse(text.as_bytes()).unwrap()
        else {
            panic!("a request")
        };
        let proxy = Peer {
            transport: crate::sip::Transport::Udp,
            addr: "10.0.0.1:5060".parse().unwrap(),
        };
        assert_eq!(
            r.source_of(&req, proxy),
            proxy.addr.ip(),
            "not trusted: its own"
        );
        r.trust_proxies(&["10.0.0.1".parse().unwrap()]);
        assert_eq!(
            r.source_of(&req, proxy),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let other = Peer {
            addr: "10.0.0.9:5060".parse().unwrap(),
            ..proxy
        };
        assert_eq!(
            r.source_of(&req, other),
            other.addr.ip(),
            "only the trusted proxy vouches"
        );
    }
}
