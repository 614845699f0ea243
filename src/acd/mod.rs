//! The ACD (automatic call distribution): agents and their states ([`agent`]). Queues,
//! strategies and offering calls to seats build on this (next steps of the ACD issue).

pub mod agent;
