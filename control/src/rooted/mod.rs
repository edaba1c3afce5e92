//! The rooted transports (`rooted-unicast`, `admitted-multicast`): a root admits leaves
//! over a TCP control connection per leaf, and data then flows either from the root to
//! each leaf over UDP unicast or by IP multicast. [`proto`] is the sans-IO codec of the
//! control protocol the root and its leaves speak on those connections.

pub mod proto;
