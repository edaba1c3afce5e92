//! The AF_XDP backend: an XDP program steers the subscribed groups' packets into AF_XDP
//! sockets (`program`).

pub(crate) mod program;
