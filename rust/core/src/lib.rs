//! moecover-core: the numerics of moecover, in pure Rust (no Python).
//!
//! The pipeline, one module per step:
//! - [`spec`]: the MoE function class of MATH.md §1, its parameter counts and flat layout;
//! - [`sampling`]: parameters uniform in the box, one keyed stream per sample;
//! - [`model`]: the forward pass of one θ on one input (values and routing pattern);
//! - [`batch`]: the same pass on a batch of inputs in SIMD lanes (the same bits, faster);
//! - [`evaluate`]: many samples on many inputs, multithreaded and interruptible;
//! - [`cover`]: exact greedy ℓ∞ nets at many scales, streamed (MATH.md §3), and box counts
//!   (`cover/cells.rs`: the grid cells' candidate lists, in a hash map or an array);
//! - [`routing`]: top-k expert sets as colex ranks (MATH.md §2);
//! - [`patterns`]: exact counts of realised routing patterns over samples and inputs;
//! - [`exact`]: exact enumeration of a linear router's realisable patterns (LP per search node);
//! - [`parallel`]: thread pools and the chunk loop every long call runs in.
//!
//! Every function that can run long takes an interrupt check (see [`parallel::Interrupt`]) and a
//! thread count; none of their results depend on the thread count.

pub mod batch;
pub mod cover;
pub mod error;
pub mod evaluate;
pub mod exact;
pub mod model;
pub mod parallel;
pub mod patterns;
pub mod routing;
pub mod sampling;
pub mod spec;

pub use error::{Error, Result};
pub use spec::{MoeSpec, SpecOptions};
