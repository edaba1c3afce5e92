//! The atomics the index protocol runs on: the standard ones, or loom's under `cfg(loom)`
//! so that the model checker explores every interleaving of [`super::protocol`].

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
