//! Kernel timestamps (`SO_TIMESTAMPING`): the socket options, the control messages they
//! bring, the error queue transmit stamps come back on, and the query of an interface's
//! hardware timestamping. What the stamps are worth is decided in
//! [`crate::core::stamps`]; here they are only read, every length checked (control
//! messages are the kernel's output, and a parse of them never panics).
//!
//! - Receive: `SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE` on the socket;
//!   every datagram then carries an `SCM_TIMESTAMPING` control message (three
//!   `timespec`s: software, unused, raw hardware), `CLOCK_REALTIME`.
//! - Transmit: `SOF_TIMESTAMPING_SOFTWARE | OPT_ID | OPT_TSONLY` on the socket, and the
//!   recording flag `SOF_TIMESTAMPING_TX_SOFTWARE` only in the control message of the
//!   sends sampled, so that the others cost nothing. The kernel queues each stamp on the
//!   socket's error queue with a `sock_extended_err` whose `ee_data` is the key: the
//!   kernel's counter of stamped sends, or (Linux 6.13+) the key the send named itself in
//!   an `SCM_TS_OPT_ID` control message, which is what is used there.

use std::io;
use std::os::fd::RawFd;

use multipoint_control::Interface;

/// `SO_TIMESTAMPING` (`SO_TIMESTAMPING_OLD` on 64-bit), also the `SCM_TIMESTAMPING`
/// control message type.
pub(crate) const SO_TIMESTAMPING: libc::c_int = 37;
/// `SO_TIMESTAMPING_NEW`: the same control message (with 64-bit times, the same layout
/// on 64-bit targets) for sockets that asked with the new option.
const SO_TIMESTAMPING_NEW: libc::c_int = 65;
/// `SCM_TS_OPT_ID` (Linux 6.13+): a send names its own transmit stamp key.
pub(crate) const SCM_TS_OPT_ID: libc::c_int = 81;
/// `SCM_TSTAMP_SND`: the stamp was taken as the packet left for the device.
const SCM_TSTAMP_SND: u32 = 0;
/// `SIOCETHTOOL`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GET_TS_INFO`.
const ETHTOOL_GET_TS_INFO: u32 = 0x41;

/// The size of `struct scm_timestamping`: three `timespec`s.
const SCM_TIMESTAMPING_LEN: usize = 3 * 16;

fn set_flags(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    let value = flags as libc::c_int;
    // SAFETY: passes a pointer to a live c_int and its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPING,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for a kernel receive stamp with every datagram of `fd` (software, and the raw
/// hardware stamp too with `hardware`).
pub(crate) fn set_rx_stamping(fd: RawFd, hardware: bool) -> io::Result<()> {
    let mut flags = libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE;
    if hardware {
        flags |= libc::SOF_TIMESTAMPING_RX_HARDWARE | libc::SOF_TIMESTAMPING_RAW_HARDWARE;
    }
    set_flags(fd, flags)
}

/// Makes `fd` report software transmit stamps, keyed and without the packet, for the
/// sends that ask for one in their control message.
pub(crate) fn set_tx_stamping(fd: RawFd) -> io::Result<()> {
    set_flags(
        fd,
        libc::SOF_TIMESTAMPING_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_ID
            | libc::SOF_TIMESTAMPING_OPT_TSONLY,
    )
}

/// Whether sends can name their own stamp key (`SCM_TS_OPT_ID`, Linux 6.13+). Older
/// kernels refuse the unknown control message, failing the send.
pub(crate) fn explicit_keys() -> bool {
    super::kernel_at_least(6, 13)
}

/// Reads one `timespec` as the kernel wrote it (native endian); `Err` for an impossible
/// time, `Ok(None)` for zero (no stamp of that kind).
fn timespec_ns(b: &[u8]) -> Result<Option<u64>, ()> {
    let sec = i64::from_ne_bytes(b.get(0..8).ok_or(())?.try_into().map_err(|_| ())?);
    let nsec = i64::from_ne_bytes(b.get(8..16).ok_or(())?.try_into().map_err(|_| ())?);
    if sec == 0 && nsec == 0 {
        return Ok(None);
    }
    if !(0..1_000_000_000).contains(&nsec) || sec < 0 {
        return Err(());
    }
    let ns = u64::try_from(sec)
        .map_err(|_| ())?
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nsec as u64))
        .ok_or(())?;
    Ok(Some(ns))
}

/// The stamps of an `SCM_TIMESTAMPING` control message's data: software and raw
/// hardware, each `None` when the kernel left it zero. `Err` when the data is too short
/// or holds an impossible time.
pub(crate) fn parse_scm_timestamping(data: &[u8]) -> Result<(Option<u64>, Option<u64>), ()> {
    if data.len() < SCM_TIMESTAMPING_LEN {
        return Err(());
    }
    let software = timespec_ns(&data[0..16])?;
    let hardware = timespec_ns(&data[32..48])?;
    Ok((software, hardware))
}

/// Whether `(level, kind)` is an `SCM_TIMESTAMPING` control message.
pub(crate) fn is_scm_timestamping(level: i32, kind: i32) -> bool {
    level == libc::SOL_SOCKET && (kind == SO_TIMESTAMPING || kind == SO_TIMESTAMPING_NEW)
}

/// What one error-queue message says: the key of a transmit stamp and the stamp, or
/// nothing usable.
pub(crate) fn parse_tx_stamp(control: &[u8]) -> Option<(u32, u64)> {
    let mut key = None;
    let mut stamp = None;
    super::for_each_cmsg(control, |level, kind, data| {
        if is_scm_timestamping(level, kind) {
            if let Ok((Some(sw), _)) = parse_scm_timestamping(data) {
                stamp = Some(sw);
            }
        } else if (level == libc::SOL_IP && kind == libc::IP_RECVERR)
            || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR)
        {
            // struct sock_extended_err: errno u32, origin u8, type u8, code u8, pad u8,
            // info u32, data u32.
            if data.len() >= 16 {
                let errno = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                let origin = data[4];
                let info = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                let id = u32::from_ne_bytes([data[12], data[13], data[14], data[15]]);
                if errno == libc::ENOMSG as u32
                    && origin == libc::SO_EE_ORIGIN_TIMESTAMPING
                    && info == SCM_TSTAMP_SND
                {
                    key = Some(id);
                }
            }
        }
    });
    Some((key?, stamp?))
}

/// Room for an error-queue message's control messages: `SCM_TIMESTAMPING` (16 + 48) and
/// `IP_RECVERR` with its offender address (16 + 16 + 16 or 28, aligned), with slack.
const ERRQUEUE_CONTROL_LEN: usize = 192;

/// Control-message buffer of one error-queue read, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ErrControl([u8; ERRQUEUE_CONTROL_LEN]);

/// Reads transmit stamps from a socket's error queue without blocking.
pub(crate) struct ErrQueue {
    fd: RawFd,
    control: Box<ErrControl>,
}

impl ErrQueue {
    /// For `fd`, which must stay open as long as this reader is used.
    pub(crate) fn new(fd: RawFd) -> ErrQueue {
        ErrQueue {
            fd,
            control: Box::new(ErrControl([0; ERRQUEUE_CONTROL_LEN])),
        }
    }

    /// Reads at most `max` messages from the error queue (stopping when it is empty),
    /// handing each transmit stamp to `f` as (key, stamp). Returns how many messages were
    /// read. Messages that are no transmit stamp are read and dropped.
    pub(crate) fn drain(&mut self, max: usize, f: &mut impl FnMut(u32, u64)) -> usize {
        let mut read = 0;
        while read < max {
            let mut byte = 0u8;
            let mut iov = libc::iovec {
                iov_base: (&raw mut byte).cast(),
                iov_len: 1,
            };
            // SAFETY: msghdr is plain C data; all-zero is valid.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = self.control.0.as_mut_ptr().cast();
            msg.msg_controllen = ERRQUEUE_CONTROL_LEN;
            // SAFETY: every pointer in `msg` points at memory owned here and alive for the
            // call; the kernel writes at most the lengths given.
            let rc = unsafe {
                libc::recvmsg(
                    self.fd,
                    &raw mut msg,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                )
            };
            if rc < 0 {
                break;
            }
            read += 1;
            let len = msg.msg_controllen.min(ERRQUEUE_CONTROL_LEN);
            if let Some((key, stamp)) = parse_tx_stamp(&self.control.0[..len]) {
                f(key, stamp);
            }
        }
        read
    }
}

/// What an interface says about hardware timestamping (`ETHTOOL_GET_TS_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardwareStamps {
    /// The NIC stamps packets in hardware, with PTP clock `phc_index`.
    Available {
        /// The interface's name.
        interface: String,
        /// Its PTP hardware clock (`/dev/ptpN`).
        phc_index: i32,
    },
    /// It does not (or could not be asked).
    Unavailable {
        /// The interface (its name, or how it was given).
        interface: String,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for HardwareStamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HardwareStamps::Available {
                interface,
                phc_index,
            } => write!(
                f,
                "hardware stamps: available on {interface} (PTP clock /dev/ptp{phc_index}; \
                 compared with CLOCK_REALTIME only if that clock is synchronised to it, \
                 e.g. by phc2sys)"
            ),
            HardwareStamps::Unavailable { interface, reason } => {
                write!(f, "hardware stamps: unavailable on {interface} ({reason})")
            }
        }
    }
}

/// The name of the interface `iface` names, if it names one.
fn interface_name(iface: &Interface) -> Result<String, String> {
    let list = multipoint_control::interfaces().map_err(|e| format!("listing interfaces: {e}"))?;
    let found = match iface {
        Interface::Default => {
            return Err("the interface is chosen by route: name one to query it".into())
        }
        Interface::Name(n) => list.iter().find(|i| &i.name == n),
        Interface::Index(x) => list.iter().find(|i| i.index == *x),
        Interface::Addr(a) => list.iter().find(|i| i.addrs.contains(a)),
    };
    found
        .map(|i| i.name.clone())
        .ok_or_else(|| "no such interface".into())
}

/// `struct ethtool_ts_info`.
#[repr(C)]
#[derive(Default)]
struct EthtoolTsInfo {
    cmd: u32,
    so_timestamping: u32,
    phc_index: i32,
    tx_types: u32,
    tx_reserved: [u32; 3],
    rx_filters: u32,
    rx_reserved: [u32; 3],
}

/// Asks interface `iface` whether it stamps packets in hardware (`ETHTOOL_GET_TS_INFO`
/// through `SIOCETHTOOL`). Never fails: what went wrong is the reason it is unavailable.
pub fn hardware_stamps(iface: &Interface) -> HardwareStamps {
    let name = match interface_name(iface) {
        Ok(name) => name,
        Err(reason) => {
            return HardwareStamps::Unavailable {
                interface: iface.to_string(),
                reason,
            }
        }
    };
    let unavailable = |reason: String| HardwareStamps::Unavailable {
        interface: name.clone(),
        reason,
    };
    match ts_info(&name) {
        Ok(info) => {
            let needs = libc::SOF_TIMESTAMPING_RX_HARDWARE | libc::SOF_TIMESTAMPING_RAW_HARDWARE;
            if info.so_timestamping & needs == needs && info.phc_index >= 0 {
                HardwareStamps::Available {
                    interface: name.clone(),
                    phc_index: info.phc_index,
                }
            } else {
                unavailable(format!(
                    "the driver reports no hardware receive stamping and no PTP clock \
                     (capabilities {:#x}, phc index {})",
                    info.so_timestamping, info.phc_index
                ))
            }
        }
        Err(e) => unavailable(format!("ETHTOOL_GET_TS_INFO failed: {e}")),
    }
}

/// `SIOCETHTOOL` with `ETHTOOL_GET_TS_INFO` on interface `name`.
fn ts_info(name: &str) -> io::Result<EthtoolTsInfo> {
    let mut info = EthtoolTsInfo {
        cmd: ETHTOOL_GET_TS_INFO,
        ..EthtoolTsInfo::default()
    };
    // SAFETY: `info` is an ethtool_ts_info, what ETHTOOL_GET_TS_INFO writes.
    unsafe { interface_ioctl(name, SIOCETHTOOL, (&raw mut info).cast())? };
    Ok(info)
}

/// Turns on hardware receive stamping of every packet on interface `iface`
/// (`SIOCSHWTSTAMP`, `HWTSTAMP_FILTER_ALL`; transmit stamping stays off). Needs
/// `CAP_NET_ADMIN`, and changes the interface for every socket of the host.
pub(crate) fn enable_hardware_rx(iface: &str) -> io::Result<()> {
    let mut config = libc::hwtstamp_config {
        flags: 0,
        tx_type: libc::HWTSTAMP_TX_OFF as libc::c_int,
        rx_filter: libc::HWTSTAMP_FILTER_ALL as libc::c_int,
    };
    // SAFETY: `config` is a hwtstamp_config, what SIOCSHWTSTAMP reads and writes back.
    unsafe { interface_ioctl(iface, libc::SIOCSHWTSTAMP, (&raw mut config).cast()) }
}

/// Runs interface ioctl `request` on interface `name` with `ifr_data` pointing at `data`,
/// through a throwaway UDP socket.
///
/// # Safety
///
/// `data` must point at the struct `request` reads and writes, alive for the call.
unsafe fn interface_ioctl(
    name: &str,
    request: libc::c_ulong,
    data: *mut libc::c_void,
) -> io::Result<()> {
    // SAFETY: ifreq is plain C data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long or not a name",
        ));
    }
    for (d, &s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = data.cast();
    // SAFETY: a plain UDP socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `req` names the interface (NUL-terminated: the name is shorter than the
    // field, which was zeroed) and points at `data`, which the caller vouches for.
    let rc = unsafe { libc::ioctl(fd, request as _, &raw mut req) };
    let result = if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: closes the socket opened above, once.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_support::{cmsg, timespecs};

    fn ee(errno: u32, origin: u8, info: u32, data: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&errno.to_ne_bytes());
        v.extend_from_slice(&[origin, 0, 0, 0]);
        v.extend_from_slice(&info.to_ne_bytes());
        v.extend_from_slice(&data.to_ne_bytes());
        v
    }

    #[test]
    fn a_transmit_stamp_reads_as_its_key_and_software_time() {
        let mut buf = cmsg(
            libc::SOL_SOCKET,
            SO_TIMESTAMPING,
            &timespecs([(2, 5), (0, 0), (0, 0)]),
        );
        buf.extend(cmsg(
            libc::SOL_IP,
            libc::IP_RECVERR,
            &ee(libc::ENOMSG as u32, libc::SO_EE_ORIGIN_TIMESTAMPING, 0, 41),
        ));
        assert_eq!(parse_tx_stamp(&buf), Some((41, 2_000_000_005)));
        for cut in 0..buf.len() {
            let _ = parse_tx_stamp(&buf[..cut]);
        }
    }

    #[test]
    fn an_error_queue_message_that_is_no_sent_stamp_is_nothing() {
        let stamp = cmsg(
            libc::SOL_SOCKET,
            SO_TIMESTAMPING,
            &timespecs([(2, 5), (0, 0), (0, 0)]),
        );
        // A real ICMP error, and a scheduler (not sent) stamp.
        for err in [
            ee(libc::EHOSTUNREACH as u32, 2, 0, 1),
            ee(libc::ENOMSG as u32, libc::SO_EE_ORIGIN_TIMESTAMPING, 1, 1),
        ] {
            let mut buf = stamp.clone();
            buf.extend(cmsg(libc::SOL_IP, libc::IP_RECVERR, &err));
            assert_eq!(parse_tx_stamp(&buf), None);
        }
        assert_eq!(parse_tx_stamp(&stamp), None, "no key");
    }

    #[test]
    fn impossible_or_short_timestamps_are_refused_and_zero_is_none() {
        assert_eq!(
            parse_scm_timestamping(&timespecs([(1, 2), (0, 0), (3, 4)])),
            Ok((Some(1_000_000_002), Some(3_000_000_004)))
        );
        assert_eq!(
            parse_scm_timestamping(&timespecs([(0, 0), (0, 0), (0, 0)])),
            Ok((None, None))
        );
        assert!(parse_scm_timestamping(&timespecs([(1, 1_000_000_000), (0, 0), (0, 0)])).is_err());
        assert!(parse_scm_timestamping(&timespecs([(-1, 0), (0, 0), (0, 0)])).is_err());
        assert!(parse_scm_timestamping(&timespecs([(i64::MAX, 0), (0, 0), (0, 0)])).is_err());
        assert!(parse_scm_timestamping(&[0; 47]).is_err());
    }

    #[test]
    fn loopback_has_no_hardware_stamps_and_says_why() {
        let report = hardware_stamps(&Interface::Name("lo".into()));
        assert!(
            matches!(&report, HardwareStamps::Unavailable { interface, .. } if interface == "lo"),
            "{report:?}"
        );
        assert!(report
            .to_string()
            .starts_with("hardware stamps: unavailable on lo ("));
        let by_route = hardware_stamps(&Interface::Default);
        assert!(matches!(by_route, HardwareStamps::Unavailable { .. }));
    }
}
