//! The UMEM: one anonymous mapping of `frames * frame_size` bytes that an AF_XDP socket
//! registers with the kernel, carved into equal frames. The kernel writes received frames
//! into it and reads frames to send from it; descriptors on the rings name a frame by its
//! byte offset from the start (its "address").
//!
//! Allocated once, up front, and never grown. Huge pages (2 MiB) are tried first, since a
//! UMEM touched by the NIC on every packet otherwise costs one TLB entry per 4 KiB page;
//! where the host has none to give, normal pages are used and [`Umem::huge_pages`] says
//! why, for the caller to log and report.
//!
//! # Contract
//!
//! Addresses and lengths handed in ([`Umem::frame`], [`Umem::frame_mut`]) usually come
//! from the kernel's rings and are not trusted: a view is given only when the whole range
//! lies inside one frame of the region; otherwise `None`. Nothing here panics.

use std::io;
use std::ptr::NonNull;

/// The huge page size tried first.
const HUGE_PAGE: usize = 2 << 20;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Umem {
    /// Start of the mapping (page aligned).
    ptr: NonNull<u8>,
    /// Bytes mapped (the frames, rounded up to a huge page when huge pages are used).
    map_len: usize,
    /// Bytes of frames: `frames * frame_size`.
    len: usize,
    frame_size: u32,
    frames: u32,
    /// `Ok` if the region sits on huge pages, else why not.
    huge_pages: Result<(), String>,
}

// SAFETY: the mapping is owned by this value alone (no other handle to it exists in this
// process) and is reached only through `&self`/`&mut self`, so moving it to another
// thread is as safe as moving a `Vec<u8>`. Concurrent access by the kernel goes through
// the ring protocol, not through Rust references held across threads.
unsafe impl Send for Umem {}

impl Umem {
    /// Maps `frames` frames of `frame_size` bytes, both powers of two, `frame_size` 2048
    /// or 4096 (what the kernel's aligned chunk mode accepts for a UMEM on normal pages).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for sizes out of range; the `mmap` error when even normal pages
    /// cannot be mapped (`ENOMEM`: not enough memory).
    pub(crate) fn new(frames: u32, frame_size: u32) -> io::Result<Umem> {
        if frame_size != 2048 && frame_size != 4096 {
            return Err(invalid(format!(
                "UMEM frame size {frame_size} must be 2048 or 4096"
            )));
        }
        if frames == 0 || !frames.is_power_of_two() {
            return Err(invalid(format!(
                "UMEM frame count {frames} must be a power of two"
            )));
        }
        let len = usize::try_from(u64::from(frames) * u64::from(frame_size))
            .map_err(|_| invalid(format!("a UMEM of {frames} frames does not fit in memory")))?;
        let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let (ptr, map_len, huge_pages) = match map(huge_len, true) {
            Ok(ptr) => (ptr, huge_len, Ok(())),
            Err(e) => {
                let why = huge_page_refusal(&e);
                (map(len, false)?, len, Err(why))
            }
        };
        Ok(Umem {
            ptr,
            map_len,
            len,
            frame_size,
            frames,
            huge_pages,
        })
    }

    /// `Ok` if the frames sit on 2 MiB huge pages; otherwise why they do not ("no free
    /// huge pages (vm.nr_hugepages = 0) ..."), to be logged and reported.
    pub(crate) fn huge_pages(&self) -> &Result<(), String> {
        &self.huge_pages
    }

    /// The bytes `addr..addr + len`, if they lie inside one frame.
    pub(crate) fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = self.check(addr, len)?;
        // SAFETY: `check` proved `start + len <= self.len <= self.map_len`, so the range
        // is inside the live mapping; it is borrowed for as long as `&self`.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) })
    }

    /// The bytes `addr..addr + len` for writing (a frame to send), if they lie inside one
    /// frame.
    pub(crate) fn frame_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let start = self.check(addr, len)?;
        // SAFETY: in bounds as in `frame`; `&mut self` makes the borrow exclusive on our
        // side. The caller writes only frames it owns (not on any ring), so the kernel
        // does not touch them meanwhile.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) })
    }

    /// The offset of `addr` if `addr..addr + len` lies inside one frame.
    fn check(&self, addr: u64, len: usize) -> Option<usize> {
        check_range(addr, len, self.len, self.frame_size)
    }

    /// Start of the frames (to register with the kernel).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes of frames (`frames * frame_size`).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes per frame.
    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of frames.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn frames(&self) -> u32 {
        self.frames
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`map_len` are exactly the mapping made in `new`, unmapped once.
        // Views borrowed from `self` cannot outlive it. The kernel pinned the pages it
        // registered and keeps them until its socket is gone, so unmapping here never
        // pulls memory from under the kernel.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
        }
    }
}

/// The offset of `addr` if `addr..addr + len` lies inside one `frame_size` frame of a
/// region of `region` bytes (checked arithmetic: any `addr` and `len` are safe to pass).
pub(crate) fn check_range(addr: u64, len: usize, region: usize, frame_size: u32) -> Option<usize> {
    let start = usize::try_from(addr).ok()?;
    let end = start.checked_add(len)?;
    if end > region {
        return None;
    }
    let in_frame = start % frame_size as usize;
    (in_frame + len <= frame_size as usize).then_some(start)
}

/// Maps `len` bytes of anonymous, private, pre-faulted memory; on huge pages if `huge`.
fn map(len: usize, huge: bool) -> io::Result<NonNull<u8>> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
    if huge {
        flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
    }
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing: it
    // overlaps nothing we hold.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Why a huge page mapping failed, in words an operator can act on.
fn huge_page_refusal(e: &io::Error) -> String {
    let nr = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("HugePages_Free:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    match e.raw_os_error() {
        Some(libc::ENOMEM) if nr == "0" => format!(
            "no free huge pages (vm.nr_hugepages = 0): raise vm.nr_hugepages for 2 MiB \
             pages ({e})"
        ),
        Some(libc::ENOMEM) => format!(
            "not enough free 2 MiB huge pages (vm.nr_hugepages = {nr}, HugePages_Free = \
             {free}): raise vm.nr_hugepages ({e})"
        ),
        _ => format!("2 MiB huge pages refused (vm.nr_hugepages = {nr}): {e}"),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
