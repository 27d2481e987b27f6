//! Rate limiting: policies resolved from the config, and the stores that keep windows.
//!
//! - [`window`]: the pure sliding-log and sliding-counter algorithms.
//! - [`policy`]: which windows apply to a request (per-key override, else tier, else default).
//! - [`local`]: the in-process store, the embedded default when no Redis is configured.

pub mod local;
pub mod policy;
pub mod window;

pub use local::LocalLimiter;
pub use policy::{Policy, PolicyTable};
pub use window::{Outcome, WindowSpec, WindowState};
