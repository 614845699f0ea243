//! Figures: the durable record of every call and state event ([`store`]), from which daily
//! per-seat and per-queue figures can be rebuilt.

pub mod feed;
pub mod figures;
pub mod journal;
pub mod postgres;
pub mod queue_log;
pub mod report;
pub mod store;

pub mod record;

pub use record::{Event, Record};
