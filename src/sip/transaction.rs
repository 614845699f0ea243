//! RFC 3261 §17 transactions, sans-IO: requests and responses go in with `now`, messages to
//! (re)send come out, and [`ServerTransactions::poll_timeout`]/[`handle_timeout`] drive the
//! timers. Server side: retransmitted requests are answered from the response cache, a
//! non-2xx final response to INVITE is retransmitted until its ACK (timers G/H), and
//! INVITEs that keep arriving after a 2xx are absorbed (RFC 6026 "Accepted"). Client side
//! (non-INVITE only: the daemon sends BYE): timers E/F.
//!
//! [`handle_timeout`]: ServerTransactions::handle_timeout

use super::{Method, Peer, T1, T2, Transmit};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// A min-heap of deadlines. Entries are not removed when their owner goes away or re-arms;
/// whoever pops one checks it is still wanted. That keeps arming O(log n) with no handles.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    seq: u64,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K: Ord + Clone> TimerQueue<K> {
    pub fn push(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, key)));
    }
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }
    /// Pops one timer that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse((at, _, k))| (at, k))
        } else {
            None
        }
    }
    pub fn len(&self) -> usize {
        self.heap.len()
    }
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxClass {
    /// INVITE and the ACK of a non-2xx final response share one transaction.
    Invite,
    Cancel,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey {
    pub branch: String,
    pub class: TxClass,
}

impl TxKey {
    pub fn new(branch: &str, method: Method) -> Self {
        let class = match method {
            Method::Invite | Method::Ack => TxClass::Invite,
            Method::Cancel => TxClass::Cancel,
            _ => TxClass::Other,
        };
        TxKey {
            branch: branch.to_string(),
            class,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// No final response yet.
    Proceeding,
    /// Final non-2xx sent (INVITE: awaiting ACK) or any final sent (non-INVITE).
    Completed,
    /// INVITE: ACK received; absorbing ACK retransmissions (timer I).
    Confirmed,
    /// INVITE: 2xx sent; the dialog layer retransmits it, we absorb INVITE retransmissions.
    Accepted,
}

#[derive(Debug)]
struct ServerTx {
    peer: Peer,
    state: ServerState,
    last: Option<Bytes>,
    /// Timer G interval (INVITE non-2xx over UDP).
    interval: Duration,
    next_retransmit: Option<Instant>,
    end: Option<Instant>,
}

/// What to do with an incoming request.
#[derive(Debug, PartialEq)]
pub enum Disposition {
    /// A new request: the transaction exists now; call control must answer it.
    New,
    /// A retransmission; resend this (the last response) if any.
    Retransmission(Option<Transmit>),
    /// ACK to a non-2xx final response: consumed here.
    AckAbsorbed,
    /// ACK that matches no transaction: the ACK of a 2xx, for the dialog.
    AckForDialog,
}

#[derive(Debug, Default)]
pub struct ServerTransactions {
    txs: HashMap<TxKey, ServerTx>,
    timers: TimerQueue<TxKey>,
}

impl ServerTransactions {
    pub fn on_request(
        &mut self,
        now: Instant,
        branch: &str,
        method: Method,
        peer: Peer,
    ) -> Disposition {
        let key = TxKey::new(branch, method);
        if method == Method::Ack {
            return match self.txs.get_mut(&key) {
                Some(tx) if tx.state == ServerState::Completed => {
                    tx.state = ServerState::Confirmed;
                    tx.next_retransmit = None;
                    // Timer I: T4 on UDP, 0 on TCP.
                    let end = now
                        + if peer.transport.reliable() {
                            Duration::ZERO
                        } else {
                            super::T4
                        };
                    tx.end = Some(end);
                    self.timers.push(end, key);
                    Disposition::AckAbsorbed
                }
                Some(tx) if tx.state == ServerState::Confirmed => Disposition::AckAbsorbed,
                _ => Disposition::AckForDialog,
            };
        }
        if let Some(tx) = self.txs.get(&key) {
            let resend = match tx.state {
                // RFC 6026: INVITE retransmissions after a 2xx are absorbed; the 2xx itself is
                // retransmitted by the dialog until the ACK.
                ServerState::Accepted | ServerState::Confirmed => None,
                _ => tx.last.clone().map(|bytes| Transmit {
                    peer: tx.peer,
                    bytes,
                }),
            };
            return Disposition::Retransmission(resend);
        }
        self.txs.insert(
            key,
            ServerTx {
                peer,
                state: ServerState::Proceeding,
                last: None,
                interval: T1,
                next_retransmit: None,
                end: None,
            },
        );
        Disposition::New
    }

    /// Records and returns a response to send. Final responses move the state on and arm the
    /// timers. Unknown keys (the transaction already ended) still send, statelessly.
    pub fn respond(
        &mut self,
        now: Instant,
        branch: &str,
        method: Method,
        code: u16,
        bytes: Vec<u8>,
        peer: Peer,
    ) -> Transmit {
        let key = TxKey::new(branch, method);
        let bytes = Bytes::from(bytes);
        let out = Transmit {
            peer,
            bytes: bytes.clone(),
        };
        let Some(tx) = self.txs.get_mut(&key) else {
            return out;
        };
        tx.last = Some(bytes);
        if code < 200 || tx.state != ServerState::Proceeding {
            return out;
        }
        let reliable = peer.transport.reliable();
        let end;
        if key.class == TxClass::Invite {
            if (200..300).contains(&code) {
                tx.state = ServerState::Accepted;
                end = now + 64 * T1;
            } else {
                tx.state = ServerState::Completed;
                end = now + 64 * T1; // timer H
                if !reliable {
                    tx.interval = T1;
                    let at = now + T1;
                    tx.next_retransmit = Some(at);
                    self.timers.push(at, key.clone());
                }
            }
        } else {
            tx.state = ServerState::Completed;
            end = now + if reliable { Duration::ZERO } else { 64 * T1 }; // timer J
        }
        tx.end = Some(end);
        self.timers.push(end, key);
        out
    }

    /// Whether a transaction for this branch and method exists (a retransmission of its
    /// request is not new).
    pub fn contains(&self, branch: &str, method: Method) -> bool {
        self.txs.contains_key(&TxKey::new(branch, method))
    }

    /// State of the transaction, e.g. whether a CANCEL can still take effect.
    pub fn state(&self, branch: &str, method: Method) -> Option<ServerState> {
        self.txs.get(&TxKey::new(branch, method)).map(|t| t.state)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires due timers: retransmissions to send, and transactions that end.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(tx) = self.txs.get_mut(&key) else {
                continue;
            };
            if tx.end == Some(at) {
                self.txs.remove(&key);
                continue;
            }
            if tx.next_retransmit == Some(at) && tx.state == ServerState::Completed {
                if let Some(bytes) = &tx.last {
                    out.push(Transmit {
                        peer: tx.peer,
                        bytes: bytes.clone(),
                    });
                }
                tx.interval = (tx.interval * 2).min(T2);
                let next = now + tx.interval;
                tx.next_retransmit = Some(next);
                self.timers.push(next, key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }
}

/// Outcome of a client transaction: its owner, its branch, and the final status (`None`: it
/// timed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutcome<O> {
    pub owner: O,
    pub branch: String,
    pub code: Option<u16>,
}

#[derive(Debug)]
struct ClientTx<O> {
    /// Whoever started it, told of the outcome.
    owner: O,
    transmit: Transmit,
    interval: Duration,
    next_retransmit: Option<Instant>,
    deadline: Instant,
}

/// Non-INVITE client transactions (timers E and F).
#[derive(Debug)]
pub struct ClientTransactions<O> {
    txs: HashMap<String, ClientTx<O>>,
    timers: TimerQueue<String>,
}

impl<O> Default for ClientTransactions<O> {
    fn default() -> Self {
        ClientTransactions {
            txs: HashMap::new(),
            timers: TimerQueue::default(),
        }
    }
}

impl<O> ClientTransactions<O> {
    pub fn start(&mut self, now: Instant, branch: &str, owner: O, transmit: Transmit) -> Transmit {
        let deadline = now + 64 * T1;
        let next = (!transmit.peer.transport.reliable()).then(|| now + T1);
        if let Some(at) = next {
            self.timers.push(at, branch.to_string());
        }
        self.timers.push(deadline, branch.to_string());
        self.txs.insert(
            branch.to_string(),
            ClientTx {
                owner,
                transmit: transmit.clone(),
                interval: T1,
                next_retransmit: next,
                deadline,
            },
        );
        transmit
    }

    /// A response with this top-Via branch arrived.
    pub fn on_response(
        &mut self,
        now: Instant,
        branch: &str,
        code: u16,
    ) -> Option<ClientOutcome<O>> {
        if code >= 200 {
            let tx = self.txs.remove(branch)?;
            return Some(ClientOutcome {
                owner: tx.owner,
                branch: branch.to_string(),
                code: Some(code),
            });
        }
        // Provisional: keep retransmitting, but at T2 (RFC 3261 §17.1.2.2).
        if let Some(tx) = self.txs.get_mut(branch)
            && tx.next_retransmit.is_some()
        {
            tx.interval = T2;
            let at = now + T2;
            tx.next_retransmit = Some(at);
            self.timers.push(at, branch.to_string());
        }
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_timeout(
        &mut self,
        now: Instant,
        out: &mut Vec<Transmit>,
        done: &mut Vec<ClientOutcome<O>>,
    ) {
        while let Some((at, branch)) = self.timers.pop_due(now) {
            let Some(tx) = self.txs.get_mut(&branch) else {
                continue;
            };
            if at == tx.deadline {
                if let Some(tx) = self.txs.remove(&branch) {
                    done.push(ClientOutcome {
                        owner: tx.owner,
                        branch,
                        code: None,
                    });
                }
            } else if tx.next_retransmit == Some(at) {
                out.push(tx.transmit.clone());
                tx.interval = (tx.interval * 2).min(T2);
                let next = now + tx.interval;
                tx.next_retransmit = Some(next);
                self.timers.push(next, branch);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Transport;
    use super::*;

    fn udp() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        }
    }

    #[test]
    fn invite_non_2xx_is_retransmitted_until_ack_then_absorbed() {
        let mut s = ServerTransactions::default();
        let t0 = Instant::now();
        assert_eq!(
            s.on_request(t0, "b1", Method::Invite, udp()),
            Disposition::New
        );
        s.respond(t0, "b1", Method::Invite, 100, b"100".to_vec(), udp());
        // retransmitted INVITE gets the last response again, no new call
        match s.on_request(t0, "b1", Method::Invite, udp()) {
            Disposition::Retransmission(Some(t)) => assert_eq!(&t.bytes[..], b"100"),
            d => panic!("{d:?}"),
        }
        s.respond(t0, "b1", Method::Invite, 486, b"486".to_vec(), udp());
        let mut out = vec![];
        let mut times = vec![];
        let mut now = t0;
        while now < t0 + Duration::from_secs(5) {
            now += Duration::from_millis(100);
            let before = out.len();
            s.handle_timeout(now, &mut out);
            if out.len() > before {
                times.push((now - t0).as_millis());
            }
        }
        // timer G: 0.5, 1.5, 3.5 s (doubling intervals 0.5, 1, 2)
        assert_eq!(times, vec![500, 1500, 3500]);
        assert_eq!(
            s.on_request(now, "b1", Method::Ack, udp()),
            Disposition::AckAbsorbed
        );
        out.clear();
        s.handle_timeout(now + Duration::from_secs(4), &mut out);
        assert!(out.is_empty(), "no retransmission after ACK");
        s.handle_timeout(now + Duration::from_secs(6), &mut out);
        assert!(s.is_empty(), "timer I ended it");
    }

    #[test]
    fn timer_h_ends_an_unacknowledged_transaction() {
        let mut s = ServerTransactions::default();
        let t0 = Instant::now();
        s.on_request(t0, "b", Method::Invite, udp());
        s.respond(t0, "b", Method::Invite, 404, b"404".to_vec(), udp());
        let mut out = vec![];
        let mut now = t0;
        while now < t0 + 64 * T1 {
            now += Duration::from_millis(100);
            assert!(!s.is_empty() || now >= t0 + 64 * T1);
            s.handle_timeout(now, &mut out);
        }
        assert!(s.is_empty());
        // G fires at 0.5, 1.5, 3.5, 7.5, then every T2: 11.5 … 31.5 s
        assert_eq!(out.len(), 4 + 6);
    }

    #[test]
    fn after_2xx_invite_retransmissions_are_absorbed_and_ack_goes_to_dialog() {
        let mut s = ServerTransactions::default();
        let t0 = Instant::now();
        s.on_request(t0, "b", Method::Invite, udp());
        s.respond(t0, "b", Method::Invite, 200, b"200".to_vec(), udp());
        assert_eq!(
            s.on_request(t0, "b", Method::Invite, udp()),
            Disposition::Retransmission(None)
        );
        assert_eq!(
            s.on_request(t0, "b2", Method::Ack, udp()),
            Disposition::AckForDialog
        );
    }

    #[test]
    fn non_invite_response_cache_and_timer_j() {
        let mut s = ServerTransactions::default();
        let t0 = Instant::now();
        assert_eq!(
            s.on_request(t0, "o", Method::Options, udp()),
            Disposition::New
        );
        s.respond(t0, "o", Method::Options, 200, b"ok".to_vec(), udp());
        assert!(matches!(
            s.on_request(t0, "o", Method::Options, udp()),
            Disposition::Retransmission(Some(_))
        ));
        // CANCEL with the INVITE's branch is its own transaction
        assert_eq!(
            s.on_request(t0, "o", Method::Cancel, udp()),
            Disposition::New
        );
        let mut out = vec![];
        s.handle_timeout(t0 + 64 * T1, &mut out);
        assert_eq!(s.len(), 1, "only the unanswered CANCEL remains");
    }

    #[test]
    fn client_timer_e_and_f() {
        let mut c = ClientTransactions::<u64>::default();
        let t0 = Instant::now();
        let t = Transmit {
            peer: udp(),
            bytes: Bytes::from_static(b"BYE"),
        };
        c.start(t0, "z1", 1, t);
        let (mut out, mut done) = (vec![], vec![]);
        c.handle_timeout(t0 + Duration::from_millis(500), &mut out, &mut done);
        assert_eq!(out.len(), 1);
        assert_eq!(
            c.on_response(t0, "z1", 200),
            Some(ClientOutcome {
                owner: 1,
                branch: "z1".into(),
                code: Some(200)
            })
        );
        c.start(
            t0,
            "z2",
            2,
            Transmit {
                peer: udp(),
                bytes: Bytes::from_static(b"BYE"),
            },
        );
        let mut now = t0;
        while done.is_empty() {
            now += Duration::from_millis(250);
            c.handle_timeout(now, &mut out, &mut done);
        }
        assert_eq!(
            done,
            vec![ClientOutcome {
                owner: 2,
                branch: "z2".into(),
                code: None
            }]
        );
        assert_eq!(now - t0, 64 * T1);
    }
}
