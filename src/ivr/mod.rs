//! The IVR: typed dialplans ([`dialplan`]) and the per-call state machine that runs them
//! ([`engine`]).

pub mod dialplan;
pub mod engine;
