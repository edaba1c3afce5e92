//! Home of the `multipoint` command-line tool (demo, pub, sub, pingpong, fanout) and the
//! criterion benches.
//!
//! Nothing is here yet: the tool comes once the data plane exists. Until then the
//! README's first command runs the control crate's loopback example.
