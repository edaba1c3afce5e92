//! The XDP program that steers the subscribed groups' UDP packets into AF_XDP sockets
//! (`dataplane/bpf/steer.c`), and what loads, attaches and feeds it.
//!
//! [`SteerProgram::attach`] loads the program with aya, attaches it to one interface and
//! keeps its three maps:
//!
//! - `groups`: the (destination address, UDP port, family) keys of the subscribed groups
//!   ([`SteerProgram::add_group`], [`SteerProgram::remove_group`], reference-counted);
//! - `xsks`: the AF_XDP socket of each rx queue ([`SteerProgram::set_socket`]); a queue
//!   without one passes even its matching packets to the kernel;
//! - `counters`: what the program did with each packet ([`SteerProgram::counters`]).
//!
//! # Leaving the interface as it was
//!
//! The program is attached through a BPF link (`BPF_LINK_CREATE`, Linux 5.9 and later),
//! never through the older netlink attachment: the link belongs to a file descriptor of
//! this process, so when the process exits, crashes or is killed the kernel closes it and
//! detaches the program; nothing is pinned and nothing needs cleaning up at the next
//! start. aya's `Xdp::attach` creates a link, but falls back to netlink when the kernel
//! answers `EINVAL`; [`SteerProgram::attach`] refuses kernels older than 5.9 up front and,
//! after attaching, checks that a link of its program exists (detaching and refusing if
//! not).
//!
//! An interface that already has an XDP program (someone else's, or another
//! `SteerProgram`'s: one per interface serves all its queues) is refused with the other
//! program's id and name; it is never replaced.

// Wired into the xdp backend by the integration; until then only the tests use it.
#![allow(dead_code, reason = "used by the xdp backend once it is wired in")]

use std::collections::hash_map::Entry;
use std::collections::HashMap as StdHashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::links::{FdLink, LinkType};
use aya::programs::{ProgramError, Xdp};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfError, EbpfLoader};

/// The compiled program (`$OUT_DIR/steer.o`, built by `dataplane/build.rs`).
#[cfg(not(multipoint_no_xdp_prog))]
static PROGRAM_OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/steer.o"
)));
/// This build has no program: clang was missing when it was built.
#[cfg(multipoint_no_xdp_prog)]
static PROGRAM_OBJECT: Option<&[u8]> = None;

/// The program's function name in steer.c (at most 15 characters: the kernel keeps that
/// many, and `ip link` and bpftool show it).
const PROGRAM_NAME: &str = "multipoint_xdp";

/// Groups (of different addresses) the program can steer: the `groups` map in steer.c
/// holds twice as many keys, a group's own and its address's.
pub(crate) const MAX_GROUPS: usize = 1024;
/// `max_entries` of the `xsks` map in steer.c: rx queues 0..64 can have a socket.
pub(crate) const MAX_QUEUES: u32 = 64;

pub(crate) use crate::config::XdpMode;

/// The mode the program was attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachedMode {
    /// In the driver, before any skb is built.
    Native,
    /// In the kernel's generic path, on an skb.
    Generic,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic (skb)",
        })
    }
}

impl AttachedMode {
    fn aya(self) -> aya::programs::XdpMode {
        match self {
            AttachedMode::Native => aya::programs::XdpMode::Driver,
            AttachedMode::Generic => aya::programs::XdpMode::Skb,
        }
    }
}

/// What the program did with the packets it saw, summed over CPUs since it was attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProgramCounters {
    /// A subscribed group's packet, handed to the AF_XDP socket of its queue.
    pub(crate) redirected: u64,
    /// A subscribed group's packet on a queue with no socket: passed to the kernel.
    pub(crate) no_socket: u64,
    /// Not a subscribed group's (or not UDP, or not IP): passed.
    pub(crate) not_ours: u64,
    /// Headers cut short before the UDP port (or an IPv4 header length below 20), not to
    /// a subscribed address: passed. (To a subscribed address: redirected, for the
    /// parser to count.)
    pub(crate) short: u64,
    /// A non-first IPv4 fragment or an IPv6 fragment header, not to a subscribed
    /// address: passed. (To one: redirected, as above.)
    pub(crate) fragment: u64,
}

/// The number of counters in steer.c's `counters` map, in [`ProgramCounters`]'s order.
const COUNTERS: u32 = 5;

/// The key of the `groups` map: steer.c's `struct group_key`, byte for byte.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    /// The destination address: IPv4 in the first 4 bytes (the rest zero), or IPv6.
    addr: [u8; 16],
    /// The destination UDP port in network byte order, as on the wire.
    port: [u8; 2],
    /// 4 or 6.
    family: u8,
    /// Zero.
    pad: u8,
}

// SAFETY: `GroupKey` is `repr(C)`, made of byte arrays and bytes only (20 bytes, no
// padding, alignment 1), so every bit pattern is a valid value and it has no pointers.
unsafe impl aya::Pod for GroupKey {}

const _: () = assert!(size_of::<GroupKey>() == 20);

/// The `groups` key of a group's destination address and port. An IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`) is its IPv4 address: such a group's packets are IPv4 on
/// the wire.
pub(crate) fn group_key(dst: SocketAddr) -> GroupKey {
    let mut addr = [0u8; 16];
    let ip = match dst.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let family = match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            addr = v6.octets();
            6
        }
    };
    GroupKey {
        addr,
        port: dst.port().to_be_bytes(),
        family,
        pad: 0,
    }
}

/// How many times each key was added and not yet removed: the map holds a key while its
/// count is above zero.
#[derive(Debug, Default)]
struct GroupRefs(StdHashMap<GroupKey, u32>);

impl GroupRefs {
    /// Counts one more reference; true when it is the first (the key must go in the map).
    fn add(&mut self, key: GroupKey) -> bool {
        let n = self.0.entry(key).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Takes back the reference [`add`](Self::add) just counted (the map refused the key).
    fn undo_add(&mut self, key: &GroupKey) {
        if let Entry::Occupied(mut e) = self.0.entry(*key) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Counts one reference less: `Some(true)` when it was the last (the key must leave
    /// the map), `None` when the key has no reference.
    fn remove(&mut self, key: &GroupKey) -> Option<bool> {
        match self.0.entry(*key) {
            Entry::Vacant(_) => None,
            Entry::Occupied(mut e) => {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                    Some(true)
                } else {
                    Some(false)
                }
            }
        }
    }

    /// Puts back a reference [`remove`](Self::remove) took (the map refused to delete).
    fn undo_remove(&mut self, key: GroupKey) {
        *self.0.entry(key).or_insert(0) += 1;
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Another XDP program found on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtherProgram {
    /// Its id (`ip -d link show`, `bpftool prog show id N`).
    pub(crate) id: u32,
    /// Its name, when this process may look it up.
    pub(crate) name: Option<String>,
    /// The mode it is attached in: "native", "generic", "offload" or "several".
    pub(crate) mode: &'static str,
}

impl OtherProgram {
    /// Whether it looks like multipoint's own program (another process's, or another
    /// `SteerProgram` of this one).
    fn is_multipoint(&self) -> bool {
        self.name.as_deref() == Some(PROGRAM_NAME)
    }
}

/// Why the XDP program could not be set up, with the fix.
#[derive(Debug)]
pub(crate) enum XdpSetupError {
    /// Built without the program (no clang at build time).
    NoProgram,
    /// No interface of that name in this network namespace.
    NoSuchInterface {
        /// The name asked for.
        ifname: String,
    },
    /// Missing capabilities (`EPERM`/`EACCES`).
    Permission {
        /// What was being done.
        step: String,
        /// The kernel's answer.
        error: io::Error,
    },
    /// The locked-memory limit is too low (old kernels account BPF maps to it).
    Memlock {
        /// What was being done.
        step: String,
        /// The kernel's answer.
        error: io::Error,
    },
    /// The interface already has an XDP program.
    Busy {
        /// The interface.
        ifname: String,
        /// That program, when it could be found.
        other: Option<OtherProgram>,
    },
    /// Native mode was asked for and the driver refused it.
    NativeRefused {
        /// The interface.
        ifname: String,
        /// The kernel's answer.
        error: io::Error,
    },
    /// The kernel's verifier rejected the program.
    Verifier {
        /// The kernel's answer.
        error: io::Error,
        /// The end of the verifier's log.
        log: String,
    },
    /// The kernel cannot attach XDP through a BPF link (before Linux 5.9).
    NoLinks {
        /// The interface.
        ifname: String,
        /// The kernel's version, or why it is unknown.
        kernel: String,
    },
    /// Anything else.
    Other {
        /// What was being done.
        step: String,
        /// The error.
        error: io::Error,
    },
}

const PERMISSION_FIX: &str = "needs CAP_NET_ADMIN and CAP_BPF (CAP_SYS_ADMIN before Linux \
    5.8): run as root or `setcap cap_net_admin,cap_bpf+ep <binary>`";

impl fmt::Display for XdpSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdpSetupError::NoProgram => f.write_str(
                "this build has no XDP program: clang was not found when \
                 multipoint-dataplane was built; install clang (apt-get install clang) and \
                 rebuild",
            ),
            XdpSetupError::NoSuchInterface { ifname } => write!(
                f,
                "no network interface named `{ifname}` in this network namespace: check \
                 the name with `ip link`"
            ),
            XdpSetupError::Permission { step, error } => {
                write!(f, "{step}: not permitted ({error}): {PERMISSION_FIX}")
            }
            XdpSetupError::Memlock { step, error } => write!(
                f,
                "{step}: the locked-memory limit is too low ({error}): raise `ulimit -l` \
                 (for example `ulimit -l unlimited`, or LimitMEMLOCK=infinity in a systemd \
                 unit)"
            ),
            XdpSetupError::Busy { ifname, other } => {
                write!(f, "interface `{ifname}` already has an XDP program")?;
                match other {
                    Some(other) => {
                        write!(f, " (id {}", other.id)?;
                        if let Some(name) = &other.name {
                            write!(f, ", `{name}`")?;
                        }
                        write!(f, ", {} mode)", other.mode)?;
                        if other.is_multipoint() {
                            f.write_str(
                                ": multipoint's own, attached by another process or another \
                                 subscription of this one (one program per interface serves \
                                 all its queues)",
                            )?;
                        }
                    }
                    None => f.write_str(" (its id could not be read)")?,
                }
                write!(
                    f,
                    "; multipoint does not replace it: stop what attached it (`ip -d link \
                     show dev {ifname}` shows it, `bpftool net` too) or use another interface"
                )
            }
            XdpSetupError::NativeRefused { ifname, error } => write!(
                f,
                "the driver of `{ifname}` refused native XDP ({error}): use generic mode \
                 (or auto, which falls back to it), or meet the driver's conditions for \
                 native XDP (MTU, number of queues, LRO off: `dmesg` may say which)"
            ),
            XdpSetupError::Verifier { error, log } => write!(
                f,
                "the kernel's verifier rejected multipoint's XDP program ({error}): a bug in \
                 dataplane/bpf/steer.c or a kernel too old for it; please report it with \
                 this log:\n{log}"
            ),
            XdpSetupError::NoLinks { ifname, kernel } => write!(
                f,
                "cannot attach to `{ifname}` through a BPF link on this kernel ({kernel}; \
                 Linux 5.9 or later has them): multipoint refuses the older netlink \
                 attachment, which would stay behind on the interface after a crash; run \
                 on a newer kernel"
            ),
            XdpSetupError::Other { step, error } => write!(f, "{step}: {error}"),
        }
    }
}

impl std::error::Error for XdpSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            XdpSetupError::Permission { error, .. }
            | XdpSetupError::Memlock { error, .. }
            | XdpSetupError::NativeRefused { error, .. }
            | XdpSetupError::Verifier { error, .. }
            | XdpSetupError::Other { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The XDP program, attached to one interface, with its maps.
///
/// Dropping it detaches the program (its link closes); so does the end of the process,
/// however it ends.
pub(crate) struct SteerProgram {
    // Declared first so that it drops first: the program leaves the interface before
    // the maps and the program itself are released.
    link: Option<FdLink>,
    groups: BpfHashMap<MapData, GroupKey, u32>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    refs: GroupRefs,
    _ebpf: Ebpf,
    ifname: String,
    ifindex: u32,
    mode: AttachedMode,
    native_refused: Option<String>,
    program_id: u32,
}

impl fmt::Debug for SteerProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteerProgram")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("native_refused", &self.native_refused)
            .field("program_id", &self.program_id)
            .field("groups", &self.refs.len())
            .finish_non_exhaustive()
    }
}

impl SteerProgram {
    /// Loads the program and attaches it to `ifname` (resolved in the calling thread's
    /// network namespace) in `mode`; see [`XdpSetupError`] for what can stop it.
    pub(crate) fn attach(ifname: &str, mode: XdpMode) -> Result<SteerProgram, XdpSetupError> {
        let Some(object) = PROGRAM_OBJECT else {
            return Err(XdpSetupError::NoProgram);
        };
        let ifindex =
            nix::net::if_::if_nametoindex(ifname).map_err(|_| XdpSetupError::NoSuchInterface {
                ifname: ifname.to_owned(),
            })?;

        // BPF links for XDP came with 5.9; before, aya would attach through netlink.
        match KernelVersion::current() {
            Ok(v) if v < KernelVersion::new(5, 9, 0) => {
                return Err(XdpSetupError::NoLinks {
                    ifname: ifname.to_owned(),
                    kernel: format!("{v:?}"),
                })
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "kernel version unknown; trying a BPF link"),
        }

        // Refuse an interface that has a program, before loading anything.
        if let Some(other) = other_program(ifindex) {
            return Err(XdpSetupError::Busy {
                ifname: ifname.to_owned(),
                other: Some(other),
            });
        }

        let mut ebpf = EbpfLoader::new().load(object).map_err(load_error)?;
        let maps = (
            ebpf.take_map("groups"),
            ebpf.take_map("xsks"),
            ebpf.take_map("counters"),
        );
        let (Some(groups), Some(xsks), Some(counters)) = maps else {
            return Err(other("reading the XDP program's maps", "a map is missing"));
        };
        let groups = BpfHashMap::try_from(groups).map_err(|e| other("the groups map", e))?;
        let xsks = XskMap::try_from(xsks).map_err(|e| other("the xsks map", e))?;
        let counters = PerCpuArray::try_from(counters).map_err(|e| other("the counters map", e))?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| other("loading the XDP program", "no program `multipoint_xdp`"))?
            .try_into()
            .map_err(|e: ProgramError| other("loading the XDP program", e))?;
        program.load().map_err(program_load_error)?;
        let program_id = program
            .info()
            .map_err(|e| other("reading the XDP program's id", e))?
            .id();

        let (link, mode, native_refused) = match mode {
            XdpMode::Native => {
                let link = try_attach(program, ifname, ifindex, AttachedMode::Native)?;
                (link, AttachedMode::Native, None)
            }
            XdpMode::Generic => {
                let link = try_attach(program, ifname, ifindex, AttachedMode::Generic)?;
                (link, AttachedMode::Generic, None)
            }
            XdpMode::Auto => match try_attach(program, ifname, ifindex, AttachedMode::Native) {
                Ok(link) => (link, AttachedMode::Native, None),
                Err(XdpSetupError::NativeRefused { error, .. }) => {
                    let reason = format!("the driver refused native XDP: {error}");
                    tracing::info!(ifname, %reason, "falling back to generic (skb) XDP");
                    let link = try_attach(program, ifname, ifindex, AttachedMode::Generic)?;
                    (link, AttachedMode::Generic, Some(reason))
                }
                // Busy, not permitted, no links: generic mode would not do better.
                Err(e) => return Err(e),
            },
        };
        tracing::debug!(
            ifname,
            ifindex,
            program_id,
            %mode,
            "attached the XDP program through a BPF link"
        );
        Ok(SteerProgram {
            link: Some(link),
            groups,
            xsks,
            counters,
            refs: GroupRefs::default(),
            _ebpf: ebpf,
            ifname: ifname.to_owned(),
            ifindex,
            mode,
            native_refused,
            program_id,
        })
    }

    /// The mode the program runs in.
    pub(crate) fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Why [`XdpMode::Auto`] fell back to generic mode, if it did.
    pub(crate) fn native_refused(&self) -> Option<&str> {
        self.native_refused.as_deref()
    }

    /// The interface's name, as given to [`attach`](Self::attach).
    pub(crate) fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's index.
    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The program's id (`ip -d link show`, `bpftool prog show id N`).
    pub(crate) fn program_id(&self) -> u32 {
        self.program_id
    }

    /// Steers the packets to `dst` (a group's address and port) into the sockets. Adding
    /// a group that is already there counts one more reference: it leaves at the last
    /// [`remove_group`](Self::remove_group).
    ///
    /// # Errors
    ///
    /// The kernel's, for example when the map is full ([`MAX_GROUPS`] groups).
    pub(crate) fn add_group(&mut self, dst: SocketAddr) -> io::Result<()> {
        self.add_key(group_key(dst), dst)?;
        // The address key (port 0): what steers the group's packets whose port cannot be
        // read (see steer.c).
        if let Err(e) = self.add_key(group_key(SocketAddr::new(dst.ip(), 0)), dst) {
            let _ = self.remove_key(group_key(dst), dst);
            return Err(e);
        }
        Ok(())
    }

    /// Takes back one [`add_group`](Self::add_group) of `dst`; the last one stops the
    /// steering of its packets.
    ///
    /// # Errors
    ///
    /// `NotFound` when `dst` was not added; the kernel's.
    pub(crate) fn remove_group(&mut self, dst: SocketAddr) -> io::Result<()> {
        self.remove_key(group_key(dst), dst)?;
        self.remove_key(group_key(SocketAddr::new(dst.ip(), 0)), dst)
    }

    /// Adds one reference to `key` (of `dst`), putting it in the map at the first.
    fn add_key(&mut self, key: GroupKey, dst: SocketAddr) -> io::Result<()> {
        if self.refs.add(key) {
            if let Err(e) = self.groups.insert(key, 1, 0) {
                self.refs.undo_add(&key);
                let e = map_io_error(e);
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "adding {dst} to the XDP program's groups ({} keys already; at most \
                         {MAX_GROUPS} groups of different addresses): {e}",
                        self.refs.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Takes one reference from `key` (of `dst`), taking it out of the map at the last.
    fn remove_key(&mut self, key: GroupKey, dst: SocketAddr) -> io::Result<()> {
        match self.refs.remove(&key) {
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{dst} is not among the XDP program's groups"),
            )),
            Some(false) => Ok(()),
            Some(true) => self.groups.remove(&key).map_err(|e| {
                self.refs.undo_remove(key);
                map_io_error(e)
            }),
        }
    }

    /// Hands the packets of `queue` to the AF_XDP socket `xsk_fd` (which must be bound to
    /// this interface and queue; the kernel drops what reaches a socket bound elsewhere).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a queue at or past [`MAX_QUEUES`]; the kernel's, for example
    /// when `xsk_fd` is not an AF_XDP socket.
    pub(crate) fn set_socket(&mut self, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
        self.xsks.set(queue, xsk_fd, 0).map_err(map_io_error)
    }

    /// Stops handing `queue`'s packets to a socket: its packets pass to the kernel.
    ///
    /// # Errors
    ///
    /// As [`set_socket`](Self::set_socket); `NotFound` when the queue has no socket.
    pub(crate) fn clear_socket(&mut self, queue: u32) -> io::Result<()> {
        self.xsks.unset(queue).map_err(map_io_error)
    }

    /// The program's counters, summed over CPUs (a counter that cannot be read is zero).
    pub(crate) fn counters(&self) -> ProgramCounters {
        let mut sums = [0u64; COUNTERS as usize];
        for (index, sum) in (0..COUNTERS).zip(sums.iter_mut()) {
            match self.counters.get(&index, 0) {
                Ok(values) => *sum = values.iter().copied().fold(0u64, u64::wrapping_add),
                Err(e) => tracing::debug!(index, error = %e, "reading an XDP counter"),
            }
        }
        let [redirected, no_socket, not_ours, short, fragment] = sums;
        ProgramCounters {
            redirected,
            no_socket,
            not_ours,
            short,
            fragment,
        }
    }
}

impl Drop for SteerProgram {
    fn drop(&mut self) {
        drop(self.link.take());
        tracing::debug!(
            ifname = self.ifname,
            ifindex = self.ifindex,
            program_id = self.program_id,
            "detached the XDP program (closed its BPF link)"
        );
    }
}

/// Attaches `program` in `mode` and returns its link, refusing a netlink attachment.
fn try_attach(
    program: &mut Xdp,
    ifname: &str,
    ifindex: u32,
    mode: AttachedMode,
) -> Result<FdLink, XdpSetupError> {
    let step = || format!("attaching the XDP program to `{ifname}` in {mode} mode");
    let id = program
        .attach_to_if_index(ifindex, mode.aya())
        .map_err(|e| attach_error(e, ifname, ifindex, mode, step()))?;
    let link = program.take_link(id).map_err(|e| other(step(), e))?;
    let program_id = program.info().map_err(|e| other(step(), e))?.id();
    match is_linked(program_id) {
        Some(false) => {
            // aya fell back to netlink: dropping the link detaches that attachment.
            drop(link);
            return Err(XdpSetupError::NoLinks {
                ifname: ifname.to_owned(),
                kernel: KernelVersion::current()
                    .map_or_else(|e| e.to_string(), |v| format!("{v:?}")),
            });
        }
        Some(true) => {}
        None => tracing::debug!(
            "cannot list BPF links (needs CAP_SYS_ADMIN); trusting the kernel version check"
        ),
    }
    FdLink::try_from(link).map_err(|e| other(step(), e))
}

/// Whether a BPF link of type XDP holds program `program_id`; `None` when this process
/// may not list links.
fn is_linked(program_id: u32) -> Option<bool> {
    let mut found = false;
    for info in aya::programs::loaded_links() {
        match info {
            Ok(info) => {
                if info.program_id() == program_id && matches!(info.link_type(), Ok(LinkType::Xdp))
                {
                    found = true;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing BPF links");
                return if found { Some(true) } else { None };
            }
        }
    }
    Some(found)
}

/// The XDP program already on interface `ifindex`, if any (and if it can be read).
fn other_program(ifindex: u32) -> Option<OtherProgram> {
    match netlink::query_xdp(ifindex) {
        Ok(state) => state.program().map(|(id, mode)| OtherProgram {
            id,
            name: program_name(id),
            mode,
        }),
        Err(e) => {
            tracing::debug!(ifindex, error = %e, "querying the interface's XDP program");
            None
        }
    }
}

/// The name of loaded program `id`, when this process may list programs.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .map_while(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

fn other(step: impl Into<String>, e: impl fmt::Display) -> XdpSetupError {
    XdpSetupError::Other {
        step: step.into(),
        error: io::Error::other(e.to_string()),
    }
}

/// The capabilities (effective) that loading and attaching need are all there: CAP_BPF
/// or CAP_SYS_ADMIN, and CAP_NET_ADMIN.
fn has_bpf_capabilities() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    (has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN)
}

/// Sorts an error of creating maps or loading BTF or the program by its errno.
fn errno_error(step: String, error: io::Error) -> XdpSetupError {
    match error.raw_os_error() {
        Some(libc::EPERM) if has_bpf_capabilities() && before_memcg_accounting() => {
            XdpSetupError::Memlock { step, error }
        }
        Some(libc::EPERM | libc::EACCES) => XdpSetupError::Permission { step, error },
        Some(libc::ENOMEM) => XdpSetupError::Memlock { step, error },
        _ => XdpSetupError::Other { step, error },
    }
}

/// Before 5.11, BPF memory counts against RLIMIT_MEMLOCK and running out is an `EPERM`.
fn before_memcg_accounting() -> bool {
    KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(5, 11, 0))
}

fn load_error(e: EbpfError) -> XdpSetupError {
    match e {
        EbpfError::MapError(MapError::CreateError { name, io_error }) => {
            errno_error(format!("creating the XDP program's map `{name}`"), io_error)
        }
        EbpfError::BtfError(aya::BtfError::LoadError { io_error, .. }) => {
            errno_error("loading the XDP program's BTF".into(), io_error)
        }
        EbpfError::ProgramError(e) => program_load_error(e),
        e => other("loading the XDP program", e),
    }
}

fn program_load_error(e: ProgramError) -> XdpSetupError {
    let step = "loading the XDP program into the kernel".to_owned();
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if io_error.raw_os_error() == Some(libc::EPERM) || log.trim().is_empty() {
                errno_error(step, io_error)
            } else {
                XdpSetupError::Verifier {
                    error: io_error,
                    log: trim_log(&log, 30),
                }
            }
        }
        ProgramError::SyscallError(e) => errno_error(step, e.io_error),
        e => other(step, e),
    }
}

/// The last `lines` lines of a verifier log (its end says why).
fn trim_log(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.trim_end().lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[{start} lines before]\n"));
    }
    out.push_str(&all[start..].join("\n"));
    out
}

/// The errno of a failed attach, if it has one.
fn attach_errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError(e)) => e.raw_os_error(),
        ProgramError::NetlinkError(e) => e.raw_os_error(),
        ProgramError::IOError(e) => e.raw_os_error(),
        _ => None,
    }
}

fn attach_error(
    e: ProgramError,
    ifname: &str,
    ifindex: u32,
    mode: AttachedMode,
    step: String,
) -> XdpSetupError {
    if let ProgramError::UnknownInterface { name } = e {
        return XdpSetupError::NoSuchInterface { ifname: name };
    }
    let errno = attach_errno(&e);
    let error = errno.map_or_else(
        || io::Error::other(e.to_string()),
        io::Error::from_raw_os_error,
    );
    match errno {
        // EBUSY: a program or link in this mode; EEXIST: a program in the other mode.
        Some(libc::EBUSY | libc::EEXIST) => XdpSetupError::Busy {
            ifname: ifname.to_owned(),
            other: other_program(ifindex),
        },
        Some(libc::EPERM | libc::EACCES) => XdpSetupError::Permission { step, error },
        Some(libc::ENODEV) => XdpSetupError::NoSuchInterface {
            ifname: ifname.to_owned(),
        },
        _ if mode == AttachedMode::Native => XdpSetupError::NativeRefused {
            ifname: ifname.to_owned(),
            error,
        },
        _ => XdpSetupError::Other { step, error },
    }
}

/// A map operation's error as an `io::Error`, keeping the kernel's errno.
fn map_io_error(e: MapError) -> io::Error {
    match e {
        MapError::SyscallError(e) => e.io_error,
        MapError::IoError(e) => e,
        MapError::OutOfBounds { index, max_entries } => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("queue {index} is past the XDP program's {max_entries} socket slots"),
        ),
        MapError::KeyNotFound | MapError::ElementNotFound => {
            io::Error::new(io::ErrorKind::NotFound, e.to_string())
        }
        e => io::Error::other(e.to_string()),
    }
}

/// The one netlink question the loader asks: which XDP program an interface has.
mod netlink {
    use std::io;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::SockType;
    use nix::sys::socket::{recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol};

    const NLMSG_ERROR: u16 = 2;
    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const NLM_F_REQUEST: u16 = 1;
    const IFLA_EXT_MASK: u16 = 29;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
    const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
    const NLA_TYPE_MASK: u16 = 0x3fff;
    const NLMSG_HDRLEN: usize = 16;
    const IFINFOMSG_LEN: usize = 16;

    /// `IFLA_XDP` of an interface.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub(super) struct XdpState {
        /// `XDP_ATTACHED_*`: 0 none, 1 native, 2 generic, 3 offload, 4 several.
        pub(super) attached: u8,
        pub(super) prog_id: u32,
        pub(super) drv_prog_id: u32,
        pub(super) skb_prog_id: u32,
        pub(super) hw_prog_id: u32,
    }

    impl XdpState {
        /// The attached program's id and mode, if there is one.
        pub(super) fn program(&self) -> Option<(u32, &'static str)> {
            let id = [
                self.prog_id,
                self.drv_prog_id,
                self.skb_prog_id,
                self.hw_prog_id,
            ]
            .into_iter()
            .find(|&id| id != 0);
            let mode = match self.attached {
                0 => return None,
                1 => "native",
                2 => "generic",
                3 => "offload",
                _ => "several",
            };
            Some((id.unwrap_or(0), mode))
        }
    }

    /// Asks the kernel (`RTM_GETLINK`) for interface `ifindex`'s XDP state, in the calling
    /// thread's network namespace.
    pub(super) fn query_xdp(ifindex: u32) -> io::Result<XdpState> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let request = getlink_request(ifindex);
        send(fd.as_raw_fd(), &request, MsgFlags::empty())?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        parse_reply(&buf[..n.min(buf.len())])
    }

    fn getlink_request(ifindex: u32) -> Vec<u8> {
        let len = NLMSG_HDRLEN + IFINFOMSG_LEN + 8;
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
        m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                  // ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&ifindex.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        // IFLA_EXT_MASK: no statistics (a smaller reply)
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
        m.extend_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        m
    }

    fn bad(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {what}"))
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// The attributes in `b`: (type without flags, payload).
    fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
        std::iter::from_fn(move || {
            let len = usize::from(u16_at(b, 0)?);
            let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
            if len < 4 || len > b.len() {
                return None;
            }
            let payload = &b[4..len];
            b = b.get((len + 3) & !3..).unwrap_or(&[]);
            Some((kind, payload))
        })
    }

    /// The XDP state in a reply to [`getlink_request`].
    pub(super) fn parse_reply(mut b: &[u8]) -> io::Result<XdpState> {
        while b.len() >= NLMSG_HDRLEN {
            let len = u32_at(b, 0).ok_or_else(|| bad("short header"))? as usize;
            let kind = u16_at(b, 4).ok_or_else(|| bad("short header"))?;
            if len < NLMSG_HDRLEN || len > b.len() {
                return Err(bad("message length"));
            }
            let msg = &b[..len];
            match kind {
                NLMSG_ERROR => {
                    let code = u32_at(msg, NLMSG_HDRLEN).ok_or_else(|| bad("short error"))?;
                    let code = code as i32;
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                RTM_NEWLINK => {
                    let body = msg
                        .get(NLMSG_HDRLEN + IFINFOMSG_LEN..)
                        .ok_or_else(|| bad("short ifinfomsg"))?;
                    let mut state = XdpState::default();
                    for (kind, payload) in attrs(body) {
                        if kind != IFLA_XDP {
                            continue;
                        }
                        for (kind, v) in attrs(payload) {
                            let word = || u32_at(v, 0).unwrap_or(0);
                            match kind {
                                IFLA_XDP_ATTACHED => {
                                    state.attached = v.first().copied().unwrap_or(0)
                                }
                                IFLA_XDP_PROG_ID => state.prog_id = word(),
                                IFLA_XDP_DRV_PROG_ID => state.drv_prog_id = word(),
                                IFLA_XDP_SKB_PROG_ID => state.skb_prog_id = word(),
                                IFLA_XDP_HW_PROG_ID => state.hw_prog_id = word(),
                                _ => {}
                            }
                        }
                    }
                    return Ok(state);
                }
                _ => {}
            }
            b = b.get((len + 3) & !3..).unwrap_or(&[]);
        }
        Err(bad("no link message"))
    }

    #[cfg(test)]
    pub(super) fn test_reply(attached: u8, prog_id: u32) -> Vec<u8> {
        let mut xdp = Vec::new();
        xdp.extend_from_slice(&8u16.to_ne_bytes()); // ATTACHED, padded to 4
        xdp.extend_from_slice(&IFLA_XDP_ATTACHED.to_ne_bytes());
        xdp.extend_from_slice(&[attached, 0, 0, 0]);
        xdp.extend_from_slice(&8u16.to_ne_bytes());
        xdp.extend_from_slice(&IFLA_XDP_PROG_ID.to_ne_bytes());
        xdp.extend_from_slice(&prog_id.to_ne_bytes());
        let mut body = Vec::new();
        // an unrelated attribute first: IFLA_MTU
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&4u16.to_ne_bytes());
        body.extend_from_slice(&1500u32.to_ne_bytes());
        body.extend_from_slice(&((4 + xdp.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&(IFLA_XDP | 0x8000).to_ne_bytes()); // NLA_F_NESTED
        body.extend_from_slice(&xdp);
        let len = NLMSG_HDRLEN + IFINFOMSG_LEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&[0; IFINFOMSG_LEN]);
        m.extend_from_slice(&body);
        m
    }

    #[cfg(test)]
    pub(super) fn test_error(errno: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(-errno).to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use multipoint_test_support::netns::Netns;
    use nix::sched::{setns, CloneFlags};
    use socket2::{Domain, Protocol, Socket, Type};

    use super::*;

    // ---- helpers -----------------------------------------------------------------

    /// Why the tests that attach the program cannot run here, if they cannot.
    fn cannot_attach() -> Option<&'static str> {
        if PROGRAM_OBJECT.is_none() {
            return Some("this build has no XDP program (clang was missing)");
        }
        if !nix::unistd::geteuid().is_root() {
            return Some("needs root (network namespaces, CAP_BPF, CAP_NET_ADMIN)");
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Some("needs `ip` from iproute2");
        }
        None
    }

    macro_rules! skip_unless_root {
        () => {
            if let Some(why) = cannot_attach() {
                eprintln!("skipped: {why}");
                return;
            }
        };
    }

    /// Prefix of the namespaces these tests make: `mpx<pid>-<n>`.
    const NS_PREFIX: &str = "mpx";

    /// A namespace of the test's own (see [`Netns`]).
    fn new_ns() -> Netns {
        Netns::new(NS_PREFIX).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What these tests ask of a namespace beyond [`Netns`].
    trait NetnsXdp {
        fn index_of(&self, ifname: &str) -> u32;
        fn xdp_on(&self, ifname: &str) -> Option<(u32, AttachedMode)>;
        fn wait_no_xdp(&self, ifname: &str, timeout: Duration) -> bool;
    }

    impl NetnsXdp for Netns {
        fn index_of(&self, ifname: &str) -> u32 {
            self.run(|| nix::net::if_::if_nametoindex(ifname)).unwrap()
        }

        /// `ip -d link show dev IFNAME`: the XDP program's id and whether the mode is
        /// generic, if one is attached.
        fn xdp_on(&self, ifname: &str) -> Option<(u32, AttachedMode)> {
            let out = self.ip(&["-d", "link", "show", "dev", ifname]);
            let first = out.lines().next().unwrap_or_default();
            let mode = if first.contains(" xdpgeneric ") {
                AttachedMode::Generic
            } else if first.contains(" xdp ") {
                AttachedMode::Native
            } else {
                assert!(!out.contains("prog/xdp"), "{out}");
                return None;
            };
            let id = out
                .split("prog/xdp id ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("no program id in {out}"));
            Some((id, mode))
        }

        /// Polls until `ifname` has no XDP program, for up to `timeout`.
        fn wait_no_xdp(&self, ifname: &str, timeout: Duration) -> bool {
            let deadline = Instant::now() + timeout;
            loop {
                if self.xdp_on(ifname).is_none() {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn enter(path: &str) {
        let file = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("entering {path}: {e}"));
    }

    /// One namespace with a veth pair `xa`–`xb`, both up.
    fn one_veth() -> Netns {
        let ns = new_ns();
        ns.ip(&["link", "add", "xa", "type", "veth", "peer", "name", "xb"]);
        ns.ip(&["link", "set", "xa", "up"]);
        ns.ip(&["link", "set", "xb", "up"]);
        ns
    }

    /// Sender `s` (`s0`: 10.96.1.1, fd96:1::1) and receiver `r` (`r0`: 10.96.1.2,
    /// fd96:1::2) joined by a veth pair.
    fn two_hosts() -> (Netns, Netns) {
        let s = new_ns();
        let r = new_ns();
        s.ip(&[
            "link",
            "add",
            "s0",
            "type",
            "veth",
            "peer",
            "name",
            "r0",
            "netns",
            r.name(),
        ]);
        for (ns, ifname, v4, v6) in [
            (&s, "s0", "10.96.1.1/24", "fd96:1::1/64"),
            (&r, "r0", "10.96.1.2/24", "fd96:1::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", ifname]);
            ns.ip(&["addr", "add", v6, "dev", ifname, "nodad"]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        (s, r)
    }

    fn attach_in(ns: &Netns, ifname: &str, mode: XdpMode) -> SteerProgram {
        ns.run(|| SteerProgram::attach(ifname, mode))
            .unwrap_or_else(|e| panic!("attaching to {ifname}: {e}"))
    }

    /// A UDP socket in the receiver bound to `port` and joined to `group` on `r0`.
    fn receiver(r: &Netns, group: IpAddr, port: u16) -> Socket {
        let ifindex = r.index_of("r0");
        r.run(|| {
            let domain = if group.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.set_reuse_address(true).unwrap();
            match group {
                IpAddr::V4(g) => {
                    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
                        .unwrap();
                    s.join_multicast_v4(&g, &Ipv4Addr::new(10, 96, 1, 2))
                        .unwrap();
                }
                IpAddr::V6(g) => {
                    s.set_only_v6(true).unwrap();
                    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())
                        .unwrap();
                    s.join_multicast_v6(&g, ifindex).unwrap();
                }
            }
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
    }

    /// Sends `count` datagrams from the sender to `dst` out of `s0`.
    fn send_udp(s: &Netns, dst: SocketAddr, count: usize) {
        let ifindex = s.index_of("s0");
        s.run(|| {
            let sock = match dst {
                SocketAddr::V4(_) => {
                    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
                    sock.set_multicast_if_v4(&Ipv4Addr::new(10, 96, 1, 1))
                        .unwrap();
                    sock.set_multicast_ttl_v4(1).unwrap();
                    sock
                }
                SocketAddr::V6(_) => {
                    let sock = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
                    sock.set_multicast_if_v6(ifindex).unwrap();
                    sock.set_multicast_hops_v6(1).unwrap();
                    sock
                }
            };
            for i in 0..count {
                sock.send_to(format!("datagram {i}").as_bytes(), &dst.into())
                    .unwrap();
            }
        });
    }

    /// Counts the datagrams waiting on `sock` (stops at the first 300 ms of silence).
    fn drain(sock: &Socket) -> usize {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        let mut n = 0;
        while sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    /// Waits until the counters satisfy `cond` (the program counts as packets arrive;
    /// the sends return before that), for up to two seconds.
    fn wait_counters(
        prog: &SteerProgram,
        cond: impl Fn(&ProgramCounters) -> bool,
    ) -> ProgramCounters {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let c = prog.counters();
            if cond(&c) || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ---- no root needed ----------------------------------------------------------

    #[test]
    fn group_keys_encode_family_address_and_port() {
        let v4 = group_key("239.1.2.3:40000".parse().unwrap());
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[239, 1, 2, 3]);
        assert_eq!(v4.addr, addr);
        assert_eq!(v4.port, [0x9c, 0x40]); // 40000, network order
        assert_eq!((v4.family, v4.pad), (4, 0));

        let v6 = group_key("[ff15::1:2:3]:40000".parse().unwrap());
        assert_eq!(v6.addr, "ff15::1:2:3".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(v6.port, [0x9c, 0x40]);
        assert_eq!((v6.family, v6.pad), (6, 0));

        // An IPv4-mapped IPv6 group is the IPv4 group (its packets are IPv4 on the wire).
        assert_eq!(group_key("[::ffff:239.1.2.3]:40000".parse().unwrap()), v4);
        // Address, port and family each make a different key.
        assert_ne!(group_key("239.1.2.4:40000".parse().unwrap()), v4);
        assert_ne!(group_key("239.1.2.3:40001".parse().unwrap()), v4);
        assert_ne!(group_key("[::ef01:203]:40000".parse().unwrap()), v4);

        // The bytes are steer.c's struct group_key: addr[16], port, family, pad.
        // SAFETY: GroupKey is repr(C), 20 bytes of plain bytes.
        let bytes: [u8; 20] = unsafe { std::mem::transmute(v4) };
        assert_eq!(&bytes[..4], &[239, 1, 2, 3]);
        assert_eq!(&bytes[16..], &[0x9c, 0x40, 4, 0]);
    }

    #[test]
    fn group_refs_count_and_remove_at_zero() {
        let a = group_key("239.1.2.3:40000".parse().unwrap());
        let b = group_key("239.1.2.3:40001".parse().unwrap());
        let mut refs = GroupRefs::default();
        assert!(refs.add(a), "the first add inserts");
        assert!(!refs.add(a), "the second only counts");
        assert!(refs.add(b));
        assert_eq!(refs.len(), 2);
        assert_eq!(refs.remove(&a), Some(false), "one reference left");
        assert_eq!(refs.remove(&a), Some(true), "the last removes");
        assert_eq!(refs.remove(&a), None, "not there any more");
        assert_eq!(refs.len(), 1);

        // A refused insert is taken back; a refused delete is put back.
        assert!(refs.add(a));
        refs.undo_add(&a);
        assert_eq!(refs.remove(&a), None);
        assert_eq!(refs.remove(&b), Some(true));
        refs.undo_remove(b);
        assert_eq!(refs.remove(&b), Some(true));
        assert_eq!(refs.len(), 0);
    }

    #[test]
    fn modes_parse_and_print() {
        for (s, m) in [
            ("auto", XdpMode::Auto),
            ("native", XdpMode::Native),
            ("generic", XdpMode::Generic),
        ] {
            assert_eq!(s.parse::<XdpMode>().unwrap(), m);
            assert_eq!(m.to_string(), s);
        }
        // The kernel's names for the two modes are taken too.
        assert_eq!("skb".parse::<XdpMode>().unwrap(), XdpMode::Generic);
        assert_eq!("drv".parse::<XdpMode>().unwrap(), XdpMode::Native);
        assert!("bogus"
            .parse::<XdpMode>()
            .unwrap_err()
            .contains("auto, native or generic"));
        assert_eq!(XdpMode::default(), XdpMode::Auto);
        assert_eq!(AttachedMode::Native.to_string(), "native");
        assert_eq!(AttachedMode::Generic.to_string(), "generic (skb)");
    }

    #[test]
    fn netlink_replies_parse() {
        let none = netlink::parse_reply(&netlink::test_reply(0, 0)).unwrap();
        assert_eq!(none.program(), None);
        let native = netlink::parse_reply(&netlink::test_reply(1, 42)).unwrap();
        assert_eq!(native.program(), Some((42, "native")));
        let generic = netlink::parse_reply(&netlink::test_reply(2, 7)).unwrap();
        assert_eq!(generic.program(), Some((7, "generic")));
        let err = netlink::parse_reply(&netlink::test_error(libc::ENODEV)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        // Garbage is an error, not a panic.
        let mut cut = netlink::test_reply(1, 42);
        cut.truncate(20);
        assert!(netlink::parse_reply(&cut).is_err());
        assert!(netlink::parse_reply(&[0xff; 40]).is_err());
        assert!(netlink::parse_reply(&[]).is_err());
    }

    #[test]
    fn errors_name_the_cause_and_the_fix() {
        let msg = XdpSetupError::NoProgram.to_string();
        assert!(msg.contains("clang was not found") && msg.contains("apt-get install clang"));

        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let msg = XdpSetupError::Permission {
            step: "loading".into(),
            error: eperm,
        }
        .to_string();
        assert!(
            msg.contains("CAP_NET_ADMIN and CAP_BPF") && msg.contains("setcap"),
            "{msg}"
        );

        let msg = XdpSetupError::Memlock {
            step: "creating the map".into(),
            error: io::Error::from_raw_os_error(libc::ENOMEM),
        }
        .to_string();
        assert!(
            msg.contains("ulimit -l") && msg.contains("LimitMEMLOCK"),
            "{msg}"
        );

        let msg = XdpSetupError::Busy {
            ifname: "eth1".into(),
            other: Some(OtherProgram {
                id: 77,
                name: Some("xdp_fw".into()),
                mode: "native",
            }),
        }
        .to_string();
        assert!(
            msg.contains("eth1") && msg.contains("id 77") && msg.contains("xdp_fw"),
            "{msg}"
        );
        assert!(msg.contains("does not replace"), "{msg}");

        let msg = XdpSetupError::NativeRefused {
            ifname: "eth1".into(),
            error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        }
        .to_string();
        assert!(
            msg.contains("refused native") && msg.contains("generic"),
            "{msg}"
        );

        let log = (0..100)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let trimmed = trim_log(&log, 30);
        assert!(trimmed.starts_with("[70 lines before]") && trimmed.ends_with("line 99"));

        // errno sorting: EPERM without the capabilities is a permission problem.
        if !has_bpf_capabilities() {
            let e = errno_error("x".into(), io::Error::from_raw_os_error(libc::EPERM));
            assert!(matches!(e, XdpSetupError::Permission { .. }), "{e}");
        }
        let e = errno_error("x".into(), io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(matches!(e, XdpSetupError::Memlock { .. }), "{e}");
    }

    /// Test 4, first half: a missing interface is named (no root needed).
    #[test]
    fn missing_interface_is_named() {
        let e = SteerProgram::attach("mpx-nonexist0", XdpMode::Auto).unwrap_err();
        if PROGRAM_OBJECT.is_none() {
            assert!(matches!(e, XdpSetupError::NoProgram), "{e}");
            eprintln!("built without the XDP program: {e}");
            return;
        }
        assert!(matches!(e, XdpSetupError::NoSuchInterface { .. }), "{e}");
        assert!(e.to_string().contains("`mpx-nonexist0`"), "{e}");
    }

    // ---- as root -----------------------------------------------------------------

    /// Test 1: attach, see it in `ip link` with our id and mode, drop, see it gone.
    #[test]
    fn attach_shows_in_ip_link_and_detaches_on_drop() {
        skip_unless_root!();
        let ns = one_veth();
        let prog = attach_in(&ns, "xb", XdpMode::Auto);
        eprintln!(
            "auto attached in {} mode{}",
            prog.mode(),
            prog.native_refused()
                .map(|r| format!(" (native refused: {r})"))
                .unwrap_or_default()
        );
        assert_eq!(prog.mode(), AttachedMode::Native, "veth has native XDP");
        assert_eq!(prog.native_refused(), None);
        assert_eq!(prog.ifindex(), ns.index_of("xb"));
        assert_eq!(
            ns.xdp_on("xb"),
            Some((prog.program_id(), AttachedMode::Native))
        );
        assert_eq!(ns.xdp_on("xa"), None, "only the end asked for");
        // Attached through a BPF link, not netlink (aya's fallback).
        assert_eq!(is_linked(prog.program_id()), Some(true));
        // The loader's own netlink query agrees with `ip`.
        let state = ns.run(|| netlink::query_xdp(prog.ifindex())).unwrap();
        assert_eq!(state.program(), Some((prog.program_id(), "native")));
        drop(prog);
        assert!(
            ns.wait_no_xdp("xb", Duration::from_secs(2)),
            "still attached after drop"
        );

        for (mode, want) in [
            (XdpMode::Generic, AttachedMode::Generic),
            (XdpMode::Native, AttachedMode::Native),
        ] {
            let prog = attach_in(&ns, "xb", mode);
            assert_eq!(prog.mode(), want);
            assert_eq!(ns.xdp_on("xb"), Some((prog.program_id(), want)));
            drop(prog);
            assert!(
                ns.wait_no_xdp("xb", Duration::from_secs(2)),
                "{mode}: still attached"
            );
        }
    }

    /// Test 2: with no socket in the map, subscribed packets still reach the kernel, and
    /// so does everything else; the counters say which were matched.
    #[test]
    fn steering_without_a_socket_passes_to_the_kernel() {
        skip_unless_root!();
        let (s, r) = two_hosts();
        let mut prog = attach_in(&r, "r0", XdpMode::Auto);
        eprintln!("attached in {} mode", prog.mode());

        let g4: SocketAddr = "239.1.2.3:40000".parse().unwrap();
        let other_port: SocketAddr = "239.1.2.3:40001".parse().unwrap();
        let g6: SocketAddr = "[ff15::1:2:3]:40000".parse().unwrap();
        prog.add_group(g4).unwrap();
        prog.add_group(g6).unwrap();

        let rx4 = receiver(&r, g4.ip(), g4.port());
        let rx_other = receiver(&r, other_port.ip(), other_port.port());
        let rx6 = receiver(&r, g6.ip(), g6.port());

        send_udp(&s, g4, 3);
        send_udp(&s, other_port, 3);
        send_udp(&s, g6, 3);
        assert_eq!(drain(&rx4), 3, "subscribed IPv4 group, no socket: passed");
        assert_eq!(drain(&rx_other), 3, "unsubscribed port: passed");
        assert_eq!(drain(&rx6), 3, "subscribed IPv6 group, no socket: passed");

        let c = wait_counters(&prog, |c| c.no_socket >= 6);
        eprintln!("{c:?}");
        assert_eq!(
            c.no_socket, 6,
            "the 6 subscribed datagrams were matched: {c:?}"
        );
        assert_eq!(c.redirected, 0, "{c:?}");
        assert!(c.not_ours >= 3, "the unsubscribed ones were not: {c:?}");

        // Unsubscribing stops the matching (the kernel still gets them).
        prog.remove_group(g4).unwrap();
        send_udp(&s, g4, 2);
        assert_eq!(drain(&rx4), 2);
        let c2 = wait_counters(&prog, |c2| c2.not_ours >= c.not_ours + 2);
        assert_eq!(c2.no_socket, 6, "{c2:?}");

        // Ping and TCP across the veth still work.
        let ms = ping(&s, Ipv4Addr::new(10, 96, 1, 2));
        eprintln!("ping 10.96.1.2: {ms:?}");
        tcp_exchange(&s, &r);
        drop(prog);
        assert!(r.wait_no_xdp("r0", Duration::from_secs(2)));
    }

    /// Frames that are not plain UDP: each lands in the counter it should.
    #[test]
    fn odd_frames_are_counted_where_they_belong() {
        skip_unless_root!();
        let (s, r) = two_hosts();
        for mode in [XdpMode::Native, XdpMode::Generic] {
            let mut prog = attach_in(&r, "r0", mode);
            prog.add_group("239.1.2.3:40000".parse().unwrap()).unwrap();
            let group = [239, 1, 2, 3];
            let other = [239, 1, 2, 4];
            let frames = [
                // An Ethernet header and nothing else: short.
                eth(0x0800, &[]),
                // A matching datagram behind a VLAN tag: matched.
                vlan(&ipv4_udp(group, 40000, 5, 0)),
                // With IP options (IHL 6): matched.
                eth(0x0800, &ipv4_udp(group, 40000, 6, 0)),
                // A first fragment (more fragments set): matched, the parser drops it.
                eth(0x0800, &ipv4_udp(group, 40000, 5, 0x2000)),
                // A non-first fragment (no UDP header) to the group's address: matched
                // by the address key, for the parser to count.
                eth(0x0800, &ipv4_udp(group, 40000, 5, 0x0001)),
                // The UDP header cut off, to the group's address: matched the same way.
                eth(0x0800, &ipv4_udp(group, 40000, 5, 0)[..24]),
                // The same two to an address nobody subscribed: passed, as a fragment
                // and as short.
                eth(0x0800, &ipv4_udp(other, 40000, 5, 0x0001)),
                eth(0x0800, &ipv4_udp(other, 40000, 5, 0)[..24]),
            ];
            let before = prog.counters();
            send_frames(&s, "s0", &frames);
            let c = wait_counters(&prog, |c| {
                c.short >= before.short + 2
                    && c.no_socket >= before.no_socket + 5
                    && c.fragment > before.fragment
            });
            eprintln!("{mode}: {c:?}");
            assert_eq!(c.short - before.short, 2, "{mode}: {c:?}");
            assert_eq!(c.no_socket - before.no_socket, 5, "{mode}: {c:?}");
            assert_eq!(c.fragment - before.fragment, 1, "{mode}: {c:?}");
            assert_eq!(c.redirected, 0);
            drop(prog);
            assert!(r.wait_no_xdp("r0", Duration::from_secs(2)));
        }
    }

    /// Test 3: a process killed with SIGKILL leaves no program behind.
    #[test]
    fn a_killed_process_leaves_no_program() {
        skip_unless_root!();
        let ns = one_veth();
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "io::xdp::program::tests::crash_child",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CRASH_CHILD_ENV, format!("/run/netns/{} xb", ns.name()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let id = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    // libtest prints the test's name on the same line first.
                    if let Some((_, id)) = line.split_once("XDP_PROG_ID=") {
                        break id.trim().parse::<u32>().unwrap();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("the child ended without attaching: {err}");
                }
            }
        };
        let on = ns.xdp_on("xb");
        assert_eq!(
            on.map(|(i, _)| i),
            Some(id),
            "the child's program is attached"
        );
        child.kill().unwrap(); // SIGKILL: no destructor runs
        let status = child.wait().unwrap();
        eprintln!("child {status}; program {id} was on xb");
        assert!(
            ns.wait_no_xdp("xb", Duration::from_secs(5)),
            "program {id} still on xb after its process was killed"
        );
    }

    const CRASH_CHILD_ENV: &str = "MULTIPOINT_XDP_CRASH_CHILD";

    /// The child of [`a_killed_process_leaves_no_program`]: with the variable set, enters
    /// the namespace, attaches, prints the id and waits to be killed. Without it (a normal
    /// test run) it does nothing.
    #[test]
    fn crash_child() {
        let Ok(spec) = std::env::var(CRASH_CHILD_ENV) else {
            return;
        };
        let (path, ifname) = spec.split_once(' ').unwrap();
        enter(path);
        let prog = SteerProgram::attach(ifname, XdpMode::Auto).unwrap();
        println!("XDP_PROG_ID={}", prog.program_id());
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(60));
        panic!("not killed within 60 s");
    }

    /// Test 4, second half: a second attach on the same interface is refused as busy,
    /// naming the first program (by design: one program per interface serves all its
    /// queues). Both ways: found before loading, and the kernel's EBUSY/EEXIST.
    #[test]
    fn a_second_attach_is_busy() {
        skip_unless_root!();
        let ns = one_veth();
        let first = attach_in(&ns, "xb", XdpMode::Native);
        for mode in [XdpMode::Auto, XdpMode::Native, XdpMode::Generic] {
            let e = ns.run(|| SteerProgram::attach("xb", mode)).unwrap_err();
            let XdpSetupError::Busy {
                other: Some(other), ..
            } = &e
            else {
                panic!("{mode}: {e}");
            };
            assert_eq!(other.id, first.program_id(), "{e}");
            assert_eq!(other.mode, "native");
            assert!(other.is_multipoint(), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("id {}", first.program_id())), "{msg}");
            assert!(
                msg.contains("`xb`") && msg.contains("multipoint's own"),
                "{msg}"
            );
        }
        // Past the check, the kernel refuses too: EBUSY in the same mode, EEXIST in the
        // other; Auto does not fall back to generic over a busy native slot.
        let ifindex = ns.index_of("xb");
        for mode in [AttachedMode::Native, AttachedMode::Generic] {
            let e = ns.run(|| {
                let mut ebpf = EbpfLoader::new().load(PROGRAM_OBJECT.unwrap()).unwrap();
                let program: &mut Xdp = ebpf.program_mut(PROGRAM_NAME).unwrap().try_into().unwrap();
                program.load().unwrap();
                try_attach(program, "xb", ifindex, mode).map(drop)
            });
            let e = e.unwrap_err();
            let XdpSetupError::Busy {
                other: Some(other), ..
            } = &e
            else {
                panic!("{mode}: {e}");
            };
            assert_eq!(other.id, first.program_id(), "{e}");
        }
        assert_eq!(
            ns.xdp_on("xb"),
            Some((first.program_id(), AttachedMode::Native))
        );
        drop(first);
        assert!(ns.wait_no_xdp("xb", Duration::from_secs(2)));
        let again = attach_in(&ns, "xb", XdpMode::Auto);
        drop(again);
        assert!(ns.wait_no_xdp("xb", Duration::from_secs(2)));

        // A program attached the old way (netlink, by `ip`), which a BPF link cannot
        // replace either: refused, named, and left in place.
        #[cfg(not(multipoint_no_xdp_prog))]
        {
            let object = concat!(env!("OUT_DIR"), "/steer.o");
            let by_ip = Command::new("ip")
                .args([
                    "-n",
                    ns.name(),
                    "link",
                    "set",
                    "dev",
                    "xb",
                    "xdpgeneric",
                    "obj",
                ])
                .args([object, "sec", "xdp"])
                .output()
                .unwrap();
            if !by_ip.status.success() {
                eprintln!(
                    "skipped the netlink-attached case: `ip` cannot load XDP objects here: {}",
                    String::from_utf8_lossy(&by_ip.stderr).trim()
                );
                return;
            }
            let (theirs, _) = ns.xdp_on("xb").unwrap();
            let e = ns
                .run(|| SteerProgram::attach("xb", XdpMode::Auto))
                .unwrap_err();
            assert!(
                matches!(&e, XdpSetupError::Busy { other: Some(o), .. } if o.id == theirs && o.mode == "generic"),
                "{e}"
            );
            eprintln!("{e}");
            let e = ns.run(|| {
                let mut ebpf = EbpfLoader::new().load(PROGRAM_OBJECT.unwrap()).unwrap();
                let program: &mut Xdp = ebpf.program_mut(PROGRAM_NAME).unwrap().try_into().unwrap();
                program.load().unwrap();
                try_attach(program, "xb", ifindex, AttachedMode::Generic).map(drop)
            });
            assert!(matches!(e, Err(XdpSetupError::Busy { .. })), "{e:?}");
            assert_eq!(
                ns.xdp_on("xb"),
                Some((theirs, AttachedMode::Generic)),
                "left in place"
            );
            ns.ip(&["link", "set", "dev", "xb", "xdpgeneric", "off"]);
        }
    }

    /// Test 5 on the real map: references, removal at zero, a full map, socket slots.
    #[test]
    fn groups_and_sockets_in_the_maps() {
        skip_unless_root!();
        let ns = one_veth();
        let mut prog = attach_in(&ns, "xb", XdpMode::Auto);
        let g: SocketAddr = "239.1.2.3:40000".parse().unwrap();
        let key = group_key(g);
        prog.add_group(g).unwrap();
        prog.add_group(g).unwrap();
        assert_eq!(prog.groups.get(&key, 0).unwrap(), 1);
        prog.remove_group(g).unwrap();
        assert!(prog.groups.get(&key, 0).is_ok(), "one reference left");
        prog.remove_group(g).unwrap();
        assert!(prog.groups.get(&key, 0).is_err(), "removed at zero");
        let e = prog.remove_group(g).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");

        // The map holds MAX_GROUPS; one more is refused and not counted.
        let nth =
            |i: usize| SocketAddr::from((Ipv4Addr::new(239, 9, (i >> 8) as u8, i as u8), 5000));
        for i in 0..MAX_GROUPS {
            prog.add_group(nth(i)).unwrap();
        }
        let e = prog.add_group(nth(MAX_GROUPS)).unwrap_err();
        assert!(e.to_string().contains("at most 1024"), "{e}");
        assert_eq!(
            prog.refs.len(),
            2 * MAX_GROUPS,
            "a group key and an address key each"
        );
        assert_eq!(
            prog.remove_group(nth(MAX_GROUPS)).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        prog.remove_group(nth(0)).unwrap();
        prog.add_group(nth(MAX_GROUPS)).unwrap();

        // Socket slots: past the map, and not an AF_XDP socket, are refused.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0");
        let e = prog.set_socket(MAX_QUEUES, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        if let Ok(udp) = udp {
            let e = prog.set_socket(0, udp.as_raw_fd()).unwrap_err();
            eprintln!("a UDP socket in the XSKMAP: {e}");
        }
        // An AF_XDP socket not bound yet: older kernels refuse it, 6.18 takes it.
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw >= 0 {
            // SAFETY: `raw` is a new fd that nothing else owns.
            let xsk = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
            let r = prog.set_socket(0, xsk.as_raw_fd());
            eprintln!("an unbound AF_XDP socket in the XSKMAP: {r:?}");
            if r.is_ok() {
                prog.clear_socket(0).unwrap();
            }
        }
    }

    // ---- raw frames, ping, TCP ---------------------------------------------------------

    const DST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03];
    const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn vlan(ip: &[u8]) -> Vec<u8> {
        let mut tagged = Vec::new();
        tagged.extend_from_slice(&7u16.to_be_bytes()); // TCI: VLAN 7
        tagged.extend_from_slice(&0x0800u16.to_be_bytes());
        tagged.extend_from_slice(ip);
        eth(0x8100, &tagged)
    }

    /// An IPv4 packet (header length `ihl` words, the given flags/fragment field) holding
    /// a UDP datagram from 10.96.1.1:9 to `dst`:`port` with 8 bytes of payload.
    fn ipv4_udp(dst: [u8; 4], port: u16, ihl: u8, frag: u16) -> Vec<u8> {
        let hlen = usize::from(ihl) * 4;
        let total = hlen + 16;
        let mut p = vec![0u8; total];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 1;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 96, 1, 1]);
        p[16..20].copy_from_slice(&dst);
        let sum = !p[..hlen]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .fold(0u32, |a, w| {
                let s = a + w;
                (s & 0xffff) + (s >> 16)
            }) as u16;
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p[hlen..hlen + 2].copy_from_slice(&9u16.to_be_bytes());
        p[hlen + 2..hlen + 4].copy_from_slice(&port.to_be_bytes());
        p[hlen + 4..hlen + 6].copy_from_slice(&16u16.to_be_bytes());
        p
    }

    /// Sends raw Ethernet frames out of `ifname` in `ns` (AF_PACKET).
    fn send_frames(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) {
        let ifindex = ns.index_of(ifname);
        ns.run(|| {
            // SAFETY: plain socket(2); the fd is owned right away.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: `raw` is a new fd that nothing else owns.
            let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&DST_MAC);
            for f in frames {
                // SAFETY: the buffer and the address are valid for the lengths given.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        std::ptr::from_ref(&sll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    n,
                    f.len() as isize,
                    "sendto: {}",
                    io::Error::last_os_error()
                );
            }
        });
    }

    /// One ICMP echo from `ns` to `dst` (a raw socket); panics without a reply in 2 s.
    fn ping(ns: &Netns, dst: Ipv4Addr) -> Duration {
        ns.run(|| {
            let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let ident = (std::process::id() & 0xffff) as u16;
            let mut echo = vec![8u8, 0, 0, 0];
            echo.extend_from_slice(&ident.to_be_bytes());
            echo.extend_from_slice(&1u16.to_be_bytes());
            echo.extend_from_slice(b"multipoint xdp test");
            let sum = !echo
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
                .fold(0u32, |a, w| {
                    let s = a + w;
                    (s & 0xffff) + (s >> 16)
                }) as u16;
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            let start = Instant::now();
            sock.send_to(&echo, &SocketAddr::from(SocketAddrV4::new(dst, 0)).into())
                .unwrap();
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            while start.elapsed() < Duration::from_secs(2) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                // SAFETY: recv initialised the first n bytes.
                let got: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let ihl = usize::from(got[0] & 0x0f) * 4;
                let icmp = &got[ihl..];
                if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() {
                    return start.elapsed();
                }
            }
            panic!("no echo reply from {dst} within 2 s");
        })
    }

    /// A TCP connection from `s` to `r` across the veth, a few bytes each way.
    fn tcp_exchange(s: &Netns, r: &Netns) {
        let listener = r.run(|| TcpListener::bind("10.96.1.2:40100").unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        });
        let mut conn = s.run(|| {
            TcpStream::connect_timeout(&"10.96.1.2:40100".parse().unwrap(), Duration::from_secs(2))
                .unwrap()
        });
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        conn.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        server.join().unwrap();
    }

    #[test]
    fn steer_program_is_send() {
        fn send<T: Send>() {}
        send::<SteerProgram>();
        let _ = (
            SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0),
            Ipv4Addr::LOCALHOST,
        );
    }
}
