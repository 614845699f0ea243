//! The ACD (automatic call distribution): agents and their states ([`agent`]), the waiting
//! line and choice of seat ([`queue`]) and what callers are told while they wait ([`announce`]).
//! Offering calls to seats and the bridge are call control's (`core::seat_leg`).

pub mod agent;
pub mod announce;
pub mod queue;
