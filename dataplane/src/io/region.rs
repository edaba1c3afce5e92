//! Page-aligned memory carved into equal slots: packet buffers for sending and the
//! provided buffers of a receive ring. Allocated once; never grows.

use std::io;

use memmap2::MmapMut;

/// `count` slots of `size` bytes in one anonymous mapping.
#[derive(Debug)]
pub(crate) struct Region {
    map: MmapMut,
    size: usize,
}

impl Region {
    pub(crate) fn new(count: usize, size: usize) -> io::Result<Region> {
        let len = count.checked_mul(size).filter(|&l| l > 0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "empty or oversized region")
        })?;
        let map = MmapMut::map_anon(len)?;
        Ok(Region { map, size })
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.size
    }

    /// The bytes of slot `i` (`i < count`: callers index only with slots they were given).
    pub(crate) fn slot(&self, i: usize) -> &[u8] {
        let start = i * self.size;
        &self.map[start..start + self.size]
    }

    /// Start of the mapping (for registering it with the kernel).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.size;
        &mut self.map[start..start + self.size]
    }
}
