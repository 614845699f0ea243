//! hotline: the telephony core of a 12345 government service hotline.
//!
//! Layers, lowest first (each depends only on those above it in this list):
//! - [`config`], [`time`]: typed configuration and the clocks (monotonic + injectable wall clock).
//! - [`sip`]: a façade over the SIP message library (rsipstack's parser), stream framing,
//!   and our own sans-IO transaction layer.
//! - [`sdp`]: offer/answer for PCMU, PCMA and telephone-event.
//! - [`media`]: G.711, prompts, RFC 4733 DTMF, and the media engine paced by one clock.
//! - [`registrar`]: seats' REGISTER with digest authentication, bindings, keep-alives.
//! - [`ivr`]: typed dialplans and the per-call IVR state machine.
//! - [`core`]: the call controller: SIP events + time in, actions out. No I/O.
//! - [`runtime`]: the only layer that touches tokio and sockets.
#![forbid(unsafe_code)]

pub mod acd;
pub mod config;
pub mod core;
pub mod ivr;
pub mod media;
pub mod metrics;
pub mod registrar;
pub mod runtime;
pub mod sdp;
pub mod sip;
pub mod stats;
pub mod time;
