//! moecover-core: the numerics of moecover, in pure Rust (no Python). The definitions it
//! implements are in `docs/definitions.md` (sections cited as §n).
//!
//! The pipeline, one module per step:
//! - [`spec`]: the MoE function class (§1), its parameter counts and flat layout;
//! - [`sampling`]: parameters uniform in the box, one keyed stream per sample;
//! - [`forward`]: the forward pass `f_θ(X)` with each token's routing pattern, one input at a time
//!   (`forward/one.rs`) or many in SIMD lanes (`forward/lanes.rs`), the same bits either way;
//! - [`evaluate`]: many samples on many inputs, multithreaded and interruptible;
//! - [`jacobian`]: exact Jacobians of the outputs in θ by a reverse pass (§6), the same way;
//! - [`rank`]: full row rank of a Jacobian, certified from its block-sparse Gram matrix (§6);
//! - [`routing`]: top-k expert sets as colex ranks (§2);
//! - [`patterns`]: exact counts of realised routing patterns over samples and inputs;
//! - [`exact`]: exact enumeration of a linear router's realisable patterns (LP per search node);
//! - [`cover`]: exact greedy ℓ∞ nets at many scales, streamed (§3), and a net per routing pattern;
//! - [`box_count`]: occupied grid cells per scale, the nets' cheap companion;
//! - [`parallel`]: thread pools, the chunk loop and the watched run every long call goes through;
//! - [`error`]: the one error type, and allocation that fails with an error instead of an abort.
//!
//! Every function that can run long takes an interrupt check (see [`parallel::Interrupt`]) and a
//! thread count; none of their results depend on the thread count.

pub mod box_count;
pub mod cover;
pub mod error;
pub mod evaluate;
pub mod exact;
pub mod forward;
pub mod jacobian;
pub mod parallel;
pub mod patterns;
pub mod rank;
pub mod routing;
pub mod sampling;
pub mod spec;

pub use error::{Error, Result};
pub use spec::{MoeSpec, SpecOptions};
