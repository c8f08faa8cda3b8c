//! The building blocks of the maps' storage: value arenas, key hashing and
//! free slot lists.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// The distance between values: a power of two, so that the bounds check
/// of an access through a value pointer (which slot, how far into it) is a
/// mask, in the JIT's code too; at most twice the value size. A lone value
/// needs only rounding to 8.
pub(super) fn slot_size(value_size: usize, slots: usize) -> usize {
    let rounded = value_size.div_ceil(8) * 8;
    if slots > 1 { rounded.next_power_of_two() } else { rounded }
}

/// `len` zeroed words from the allocator's zeroed memory, which the system
/// provides page by page as it is first touched: a large map costs only
/// what its entries use.
pub(super) fn zeroed<T: ZeroedWord>(len: usize) -> Box<[T]> {
    let words = vec![0u64; len].into_boxed_slice();
    // SAFETY: `T` is `UnsafeCell<u64>` or `AtomicU64`, both with the size,
    // alignment (checked below) and bit validity of u64, for which zero is
    // a valid value; the allocation's layout is unchanged.
    unsafe { Box::from_raw(Box::into_raw(words) as *mut [T]) }
}

/// Words [`zeroed`] may create.
pub(super) trait ZeroedWord {}
impl ZeroedWord for UnsafeCell<u64> {}
impl ZeroedWord for AtomicU64 {}
const _: () = assert!(
    std::mem::align_of::<u64>() == std::mem::align_of::<AtomicU64>()
        && std::mem::size_of::<u64>() == std::mem::size_of::<AtomicU64>()
        && std::mem::align_of::<u64>() == std::mem::align_of::<UnsafeCell<u64>>()
);

/// `max_entries` slots of `slot` bytes each (see [`slot_size`]), 8-byte
/// aligned, at a fixed address for the map's life. Programs write it
/// through raw pointers from any thread.
pub(super) struct Arena {
    words: Box<[UnsafeCell<u64>]>,
    pub(super) slot: usize,
    pub(super) value_size: usize,
    pub(super) slots: usize,
}

impl Arena {
    pub(super) fn new(value_size: usize, slots: usize) -> Arena {
        let slot = slot_size(value_size, slots);
        Arena { words: zeroed((slot * slots / 8).max(1)), slot, value_size, slots }
    }

    pub(super) fn addr(&self) -> u64 {
        UnsafeCell::raw_get(self.words.as_ptr()) as u64
    }

    pub(super) fn len(&self) -> usize {
        self.slot * self.slots
    }

    pub(super) fn slot_addr(&self, index: usize) -> u64 {
        debug_assert!(index < self.slots);
        self.addr() + (index * self.slot) as u64
    }

    pub(super) fn read(&self, index: usize) -> Vec<u8> {
        let mut value = vec![0; self.value_size];
        // SAFETY: slot `index` holds `value_size` bytes inside the arena; a
        // concurrent writer can only tear the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(self.slot_addr(index) as *const u8, value.as_mut_ptr(), self.value_size)
        };
        value
    }

    /// The first 4 bytes of slot `index`'s value (which has at least 4),
    /// read in place: the redirect maps' lookups read their entries' word
    /// per packet.
    pub(super) fn first_word(&self, index: usize) -> [u8; 4] {
        debug_assert!(self.value_size >= 4);
        let mut word = [0; 4];
        // SAFETY: as in `read`, for 4 of the slot's bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.slot_addr(index) as *const u8, word.as_mut_ptr(), 4) };
        word
    }

    pub(super) fn write(&self, index: usize, value: &[u8]) {
        debug_assert_eq!(value.len(), self.value_size);
        // SAFETY: as in `read`; `value` is a distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), self.slot_addr(index) as *mut u8, self.value_size) };
    }

    pub(super) fn clear(&self, index: usize) {
        // SAFETY: as in `read`.
        unsafe { std::ptr::write_bytes(self.slot_addr(index) as *mut u8, 0, self.slot) };
    }
}

/// Hashes keys for the maps' tables: a 64-bit mix (murmur3's finaliser)
/// per 8 bytes, from a random seed per table. Keys come from packets, so
/// an attacker must not be able to make them collide: with the seed
/// unknown and every bit of a word mixed into every bit of the hash, keys
/// cannot be chosen to share buckets. Several times faster than SipHash for
/// the short keys of packet filters.
#[derive(Clone, Copy)]
pub(super) struct KeyHashBuilder {
    seed: u64,
}

impl KeyHashBuilder {
    pub(super) fn new() -> KeyHashBuilder {
        // std's RandomState is seeded from the OS's randomness.
        KeyHashBuilder { seed: std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64) }
    }
}

impl Default for KeyHashBuilder {
    fn default() -> KeyHashBuilder {
        KeyHashBuilder::new()
    }
}

impl std::hash::BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { state: self.seed }
    }
}

/// The 1 to 7 bytes of `rest`, little-endian, zero-padded to a word: built
/// from two loads that may overlap, as copying the bytes into a zeroed word
/// and reading it back stalls on store forwarding (a quarter of a hash
/// lookup's time, with the 2- and 6-byte keys of packet filters).
fn tail_word(rest: &[u8]) -> u64 {
    let len = rest.len();
    match len {
        4..=7 => {
            let (low, high) = (u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")), &rest[len - 4..]);
            u64::from(low) | u64::from(u32::from_le_bytes(high.try_into().expect("4 bytes"))) << (8 * (len - 4))
        }
        2..=3 => {
            let (low, high) = (u16::from_le_bytes([rest[0], rest[1]]), [rest[len - 2], rest[len - 1]]);
            u64::from(low) | u64::from(u16::from_le_bytes(high)) << (8 * (len - 2))
        }
        _ => rest.first().map_or(0, |&byte| u64::from(byte)),
    }
}

pub(super) struct KeyHasher {
    state: u64,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.state = mix(self.state ^ u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The length keeps a short tail apart from one padded with zeros.
            self.state = mix(self.state ^ tail_word(rest) ^ (rest.len() as u64) << 59);
        }
    }

    fn write_usize(&mut self, value: usize) {
        self.state = mix(self.state ^ value as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

pub(super) type KeyMap = HashMap<Box<[u8]>, u32, KeyHashBuilder>;

/// The slots not in use: those freed by deletes, then those never used
/// (counted, not listed, so an empty map costs nothing per entry).
pub(super) struct FreeSlots {
    freed: Vec<u32>,
    never_used: u32,
    capacity: u32,
}

impl FreeSlots {
    pub(super) fn new(capacity: u32) -> FreeSlots {
        FreeSlots { freed: Vec::new(), never_used: 0, capacity }
    }

    pub(super) fn pop(&mut self) -> Option<u32> {
        self.freed.pop().or_else(|| {
            let slot = self.never_used;
            (slot < self.capacity).then(|| {
                self.never_used += 1;
                slot
            })
        })
    }

    pub(super) fn push(&mut self, slot: u32) {
        self.freed.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::tail_word;

    #[test]
    fn a_tail_word_is_the_bytes_zero_padded() {
        let bytes = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
        for len in 1..=7 {
            let mut padded = [0u8; 8];
            padded[..len].copy_from_slice(&bytes[..len]);
            assert_eq!(tail_word(&bytes[..len]), u64::from_le_bytes(padded), "{len} bytes");
        }
    }
}
