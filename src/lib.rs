//! hotline: the telephony core of a 12345 government service hotline.
//!
//! The map of the crate, lowest layer first; each depends only on those above it here:
//!
//! ```text
//!  config  time  entropy  stats          typed config; Now (monotonic + wall) and timer
//!     │      │      │                     tables; the one seedable RNG; counters
//!  sip ── message (rsipstack's parser) → transaction (RFC 3261 §17) → dialog + INVITE
//!     │   session (one state machine for every leg, UAS and UAC) → endpoint (the router:
//!     │   transactions and dialogs → typed session handles); digest auth, both sides
//!  sdp      media (G.711, prompts, DTMF, the one-clock engine, mixer, recorder)
//!  registrar (REGISTER, bindings, keep-alives; digest from sip)
//!  ivr (typed dialplans, the per-call IVR)   acd (agents, lines, offers: one owner)
//!  metrics (typed records → store, figures, reports, queue_log)
//!  core: call control as a router over legs (caller, seat leg, trunk call, consultation),
//!        each its business data plus one INVITE session; transfers, probes, seats. No I/O.
//!  runtime: the only layer that touches tokio and sockets (UDP/TCP SIP, RTP, HTTP)
//! ```
//!
//! - [`config`]: file + environment → typed [`config::Config`].
//! - [`time`]: [`time::Now`] (what every handler takes), the runtime's wall clock
//!   (`HOTLINE_NOW`), and [`time::TimerTable`].
//! - [`entropy`]: tags, branches, Call-IDs, SSRCs and nonce salts, from one seedable RNG.
//! - [`sip`]: messages, transactions, dialogs, the INVITE session, the router, digest.
//! - [`sdp`]: offer/answer for PCMU, PCMA and telephone-event.
//! - [`media`]: G.711, prompts, RFC 4733 DTMF, and the media engine paced by one clock.
//! - [`registrar`]: seats' REGISTER with digest authentication, bindings, keep-alives.
//! - [`ivr`]: typed dialplans and the per-call IVR state machine.
//! - [`acd`]: agents, waiting lines, strategies and offers, behind one owner.
//! - [`metrics`]: typed records, the durable store, figures, reports, queue_log.
//! - [`overload`]: admission control of new calls (ceilings and the event loop's lateness).
//! - [`core`]: call control: SIP events, RTP events and time in, actions out. No I/O.
//! - [`runtime`]: the only layer that touches tokio and sockets.
#![forbid(unsafe_code)]

pub mod acd;
pub mod config;
pub mod core;
pub mod entropy;
#[doc(hidden)]
pub mod fuzz;
pub mod ivr;
pub mod media;
pub mod metrics;
pub mod overload;
pub mod registrar;
pub mod revisit;
pub mod runtime;
pub mod sdp;
pub mod sip;
pub mod stats;
pub mod time;
