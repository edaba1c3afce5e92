//! Home of the `multipoint-tune` host audit and the tuning guide.
//!
//! Nothing is here yet: the audit comes with its own piece of work.
