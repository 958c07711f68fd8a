//! Demo mode: a realistic simulated fleet ([`fleet`]) and a simulator that
//! keeps feeding it samples ([`simulator`]) through the telemetry store, so a
//! newcomer sees live data at once, and one account per role ([`users`]). Tests and benchmarks reuse both.

pub mod fleet;
pub mod simulator;
pub mod users;

pub use simulator::{DemoTask, start};
