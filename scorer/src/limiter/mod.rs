//! Rate limiting: policies resolved from the config, and the stores that keep windows.
//!
//! - [`window`]: the pure sliding-log and sliding-counter algorithms.
//! - [`policy`]: which windows apply to a request (per-key override, else tier, else default).
//! - [`local`]: the in-process store, the embedded default when no Redis is configured.
//! - [`redis`]: the Redis store: one Lua script call per decision, shared by every replica.
//! - [`breaker`]: the circuit breaker in front of Redis.
//! - [`store`]: the Redis store behind a timeout and the breaker, with its metrics.

pub mod breaker;
pub mod local;
pub mod policy;
pub mod redis;
pub mod store;
pub mod window;

pub use local::LocalLimiter;
pub use policy::{Policy, PolicyTable};
pub use redis::Fetched;
pub use store::{RedisMetrics, SharedLimiter};
pub use window::{Outcome, WindowSpec, WindowState};
