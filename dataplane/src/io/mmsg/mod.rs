//! The fallback backend, where io_uring is unavailable (`kernel.io_uring_disabled`, a
//! container's seccomp profile, an old kernel) or not wanted: `sendmmsg` ([`send`]) and
//! non-blocking `recvmmsg` after `poll(2)` ([`recv`]). The same events and completions
//! as the io_uring backend; every send completes before the flush that made it returns.

pub(crate) mod recv;
pub(crate) mod send;

pub(crate) use self::recv::MmsgRecv;
pub(crate) use self::send::MmsgSend;
