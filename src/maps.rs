//! Maps: the state a program keeps across runs and shares with the host.
//!
//! Every map checks its sizes and flags when it is created and allocates
//! what `max_entries` bounds up front. Values live in one contiguous arena
//! per map (`max_entries` slots of `value_size` rounded up to 8 bytes; a
//! per-CPU map has a slot per entry and possible CPU, [`cpus`]), which the
//! program sees as one [`Region`], so the interpreter and the JIT
//! keep checking accesses through a looked-up value with the mechanism they
//! use for global data: a program can never reach outside its maps' arenas.
//! A hash map's deleted slot may be reused while a program still holds a
//! pointer into it (as in the kernel, the program then sees the new
//! element); it can never point outside the arena.
//!
//! Every operation is safe from several threads at once: the indexes are
//! behind locks, and value bytes are copied with plain loads and stores
//! (concurrent writers of one value may tear it, as in the kernel).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use crate::error::MapError;
use crate::image::{
    DataSection, Image, MAX_KEY_SIZE, MAX_MAP_BYTES, MAX_PROG_ARRAY_ENTRIES, MAX_VALUE_SIZE, MapDef, MapType, Region,
};
use crate::program::Program;

pub mod cpus;
pub mod json;
mod storage;

use storage::{Arena, FreeSlots, KeyHashBuilder, KeyMap, slot_size, zeroed};

/// Map flags (`BPF_F_*`) this runtime accepts.
pub const BPF_F_NO_PREALLOC: u32 = 1 << 0;
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
pub const BPF_F_RDONLY_PROG: u32 = 1 << 8;
pub const BPF_F_WRONLY_PROG: u32 = 1 << 9;
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Most bytes of one CPU's value in a per-CPU map (the kernel's
/// `PCPU_MIN_UNIT_SIZE`).
pub const MAX_PER_CPU_VALUE_SIZE: u32 = 32768;

/// `bpf_redirect_map` flags: the low bits are the action when the slot is
/// empty; the devmaps also take these two, which send to every device of
/// the map.
pub const XDP_ACTION_MASK: u64 = 3;
pub const BPF_F_BROADCAST: u64 = 1 << 3;
pub const BPF_F_EXCLUDE_INGRESS: u64 = 1 << 4;

/// Most bytes of records a perf event array keeps for the host, over all
/// CPUs: a reader's buffers, as `perf_buffer__new` maps them (64 pages per
/// CPU on a small host).
pub const PERF_EVENT_BYTES: usize = 1 << 20;

/// Most packets a cpumap entry queues (`qsize`), as the kernel allows.
const MAX_CPUMAP_QSIZE: u32 = 16384;

/// Update flags, as `bpf_map_update_elem` takes them.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;

/// Why an operation on a map failed; each maps to the errno a helper
/// returns (negated), as Linux's helpers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapOpError {
    #[error("no such key")]
    NotFound,
    #[error("the key exists and BPF_NOEXIST was given")]
    Exists,
    #[error("the map is full")]
    Full,
    #[error("the key is {got} bytes, the map's keys are {expected}")]
    KeySize { expected: u32, got: usize },
    #[error("the value is {got} bytes, the map's values are {expected}")]
    ValueSize { expected: u32, got: usize },
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("operation not supported on a {0} map")]
    NotSupported(&'static str),
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("no space for the record")]
    NoSpace,
}

impl MapOpError {
    /// The positive errno Linux returns for this failure.
    pub fn errno(self) -> i32 {
        match self {
            MapOpError::NotFound => libc::ENOENT,
            MapOpError::Exists => libc::EEXIST,
            MapOpError::Full => libc::E2BIG,
            MapOpError::KeySize { .. } | MapOpError::ValueSize { .. } | MapOpError::Invalid(_) => libc::EINVAL,
            MapOpError::NotSupported(_) | MapOpError::Unsupported(_) => libc::EOPNOTSUPP,
            MapOpError::NoSpace => libc::ENOSPC,
        }
    }
}

/// Hash keys to slots. In an LRU map, a key not used lately makes room when
/// the map is full, chosen by the CLOCK algorithm (an approximation of least
/// recently used, as the kernel's LRU is one): each slot has a bit set when
/// it is used; a hand sweeps the slots, clearing bits, and takes the first
/// slot whose bit is clear. Eviction costs O(1) amortised, so traffic from
/// ever new sources cannot make each insert scan the map.
struct HashStore {
    /// `cpus` values per entry, those of entry `e` at slots `e * cpus ..`.
    arena: Arena,
    cpus: usize,
    index: RwLock<HashIndex>,
    /// Per slot, 1 when used since the hand last passed (LRU maps only).
    referenced: Option<Box<[AtomicU64]>>,
}

struct HashIndex {
    slots: KeyMap,
    free: FreeSlots,
    /// LRU maps: the key in each slot ever used, by slot (a deleted slot's
    /// stays until the slot is reused), and where the hand is.
    lru_keys: Vec<Box<[u8]>>,
    hand: usize,
}

/// An LPM trie as one hash table per prefix length, probed from the
/// longest length in use down: a lookup costs one probe per distinct
/// length present, which a blocklist keeps small.
struct LpmStore {
    arena: Arena,
    index: RwLock<LpmIndex>,
}

struct LpmIndex {
    by_length: BTreeMap<u32, KeyMap>,
    free: FreeSlots,
}

/// A ring buffer: records reserved in order in a data area of
/// `max_entries` bytes, each contiguous (one that would cross the end
/// starts again at 0), consumed in order by the host once submitted.
struct RingStore {
    arena: Arena,
    records: Mutex<VecDeque<Record>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecordState {
    Reserved,
    Submitted,
    Discarded,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    start: usize,
    /// The program's size; the space taken is this rounded up to 8.
    len: usize,
    state: RecordState,
}

/// A perf event array's records, in the order programs wrote them, as if
/// the host had opened every CPU's buffer; `bytes` counts them against
/// [`PERF_EVENT_BYTES`].
#[derive(Default)]
struct PerfStore {
    records: VecDeque<Vec<u8>>,
    bytes: usize,
}

enum Storage {
    /// Arrays, per-CPU arrays (`cpus` slots per entry, see [`Map::cell`]),
    /// and the redirect targets indexed by number (devmap, cpumap, xskmap),
    /// whose empty slots are zeros.
    Array(Arena),
    Hash(HashStore),
    Lpm(LpmStore),
    /// Weak, so that a program in its own object's prog array (maps hold
    /// the array, the program holds its maps) is not a cycle; whoever loaded
    /// the programs keeps them alive.
    ProgArray(RwLock<Vec<Option<Weak<Program>>>>),
    Queue(Mutex<VecDeque<Box<[u8]>>>),
    RingBuf(RingStore),
    PerfEvents(Mutex<PerfStore>),
}

/// [`Map::lookup_addr_raw`], as compiled code calls it.
pub const LOOKUP_ADDR_RAW: unsafe extern "C" fn(u64, u64) -> u64 = Map::lookup_addr_raw;

/// An array's values as [`Map::array_layout`] describes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayLayout {
    pub base: u64,
    pub max_entries: u32,
    /// Bytes from one CPU's value of an entry to the next CPU's.
    pub slot: u64,
    /// Bytes from one entry's values to the next entry's.
    pub entry_stride: u64,
    /// CPU slots per entry: 1, or the possible CPUs of a per-CPU array.
    pub cpus: u32,
}

/// A value to store, and whose it is: the host's (for a per-CPU map, one
/// value per CPU) or a program's (the value of the CPU it runs on).
#[derive(Clone, Copy)]
enum Value<'a> {
    Host(&'a [u8]),
    Program(&'a [u8]),
}

/// A map: its definition and its storage. Shared (`Arc`) by the programs
/// of an object and the host.
pub struct Map {
    def: MapDef,
    map_type: MapType,
    storage: Storage,
    /// Values per entry: the possible CPUs for a per-CPU map, else 1.
    cpus: usize,
    /// For a global data section's map, the section's own size, which
    /// bounds the region (an empty section is given one byte of value).
    exact_len: Option<usize>,
}

// SAFETY: the arenas are written only through raw pointers (by programs and
// by the copies above), as map values are shared by every run and the host;
// everything else is behind a lock or immutable.
unsafe impl Sync for Map {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl Send for Map {}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map").field("def", &self.def).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock in a way that leaves the
    // state inconsistent (each change is one step), so poison is ignored.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Map {
    /// Creates a map, checking `def` as Linux does for its type.
    pub fn new(mut def: MapDef) -> Result<Map, MapError> {
        let name = def.name.clone();
        let map_type = MapType::from_linux(def.map_type).ok_or_else(|| MapError::UnsupportedType {
            name: name.clone(),
            map_type: def.map_type,
            used_at: None,
        })?;
        if map_type == MapType::PerfEventArray && def.max_entries == 0 {
            // libbpf's default: a slot per possible CPU.
            def.max_entries = cpus::count() as u32;
        }
        let field = |field: &'static str, value: u32, rule: &'static str| MapError::BadField {
            name: name.clone(),
            field,
            value: value.into(),
            rule,
        };
        let (key_size, value_size, entries) = (def.key_size, def.value_size, def.max_entries);
        if entries == 0 {
            return Err(field("max_entries", 0, "it must be at least 1"));
        }
        let allowed_flags = match map_type {
            MapType::Array => BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG | BPF_F_MMAPABLE,
            MapType::PerCpuArray => BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            MapType::Hash | MapType::PerCpuHash => BPF_F_NO_PREALLOC | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            MapType::LruHash | MapType::LruPerCpuHash => BPF_F_NO_COMMON_LRU | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            MapType::LpmTrie => BPF_F_NO_PREALLOC | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            MapType::Queue | MapType::Stack => BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            MapType::ProgArray
            | MapType::PerfEventArray
            | MapType::RingBuf
            | MapType::DevMap
            | MapType::DevMapHash
            | MapType::CpuMap
            | MapType::XskMap => 0,
        };
        if def.flags & !allowed_flags != 0 || (map_type == MapType::LpmTrie && def.flags & BPF_F_NO_PREALLOC == 0) {
            return Err(MapError::BadFlags { name, flags: def.flags, map_type: map_type.name() });
        }
        match map_type {
            MapType::Array | MapType::PerCpuArray | MapType::ProgArray if key_size != 4 => {
                return Err(field("key_size", key_size, "an array's keys are 4-byte indexes"));
            }
            MapType::DevMap | MapType::DevMapHash | MapType::CpuMap | MapType::XskMap if key_size != 4 => {
                return Err(field("key_size", key_size, "a redirect map's keys are 4-byte numbers"));
            }
            MapType::DevMap | MapType::DevMapHash if value_size != 4 && value_size != 8 => {
                return Err(field(
                    "value_size",
                    value_size,
                    "a devmap's values are an ifindex and a program (4 or 8 bytes)",
                ));
            }
            MapType::CpuMap if value_size != 4 && value_size != 8 => {
                return Err(field(
                    "value_size",
                    value_size,
                    "a cpumap's values are a queue size and a program (4 or 8 bytes)",
                ));
            }
            MapType::PerfEventArray if key_size != 4 => {
                return Err(field("key_size", key_size, "a perf event array's keys are 4-byte CPU indexes"));
            }
            MapType::PerfEventArray if value_size != 4 => {
                return Err(field("value_size", value_size, "a perf event array's values are 4-byte descriptors"));
            }
            MapType::XskMap if value_size != 4 => {
                return Err(field("value_size", value_size, "an xskmap's values are 4-byte socket descriptors"));
            }
            MapType::ProgArray if entries > MAX_PROG_ARRAY_ENTRIES => {
                return Err(field("max_entries", entries, "a prog array has at most 65536 slots"));
            }
            MapType::ProgArray if value_size != 4 => {
                return Err(field("value_size", value_size, "a prog array's values are 4-byte program ids"));
            }
            MapType::Hash | MapType::LruHash | MapType::PerCpuHash | MapType::LruPerCpuHash
                if key_size == 0 || key_size > MAX_KEY_SIZE =>
            {
                return Err(field("key_size", key_size, "it must be 1 to 512"));
            }
            MapType::LpmTrie if !(5..=4 + 256).contains(&key_size) => {
                return Err(field(
                    "key_size",
                    key_size,
                    "an LPM trie's keys are a 4-byte prefix length and 1 to 256 bytes of data",
                ));
            }
            MapType::Queue | MapType::Stack | MapType::RingBuf if key_size != 0 => {
                return Err(field("key_size", key_size, "this type has no keys"));
            }
            MapType::RingBuf if value_size != 0 => {
                return Err(field("value_size", value_size, "a ring buffer has no values"));
            }
            MapType::RingBuf if !entries.is_power_of_two() || entries < 4096 => {
                return Err(field(
                    "max_entries",
                    entries,
                    "a ring buffer's size is a power of 2 of at least 4096 bytes",
                ));
            }
            _ if map_type.is_per_cpu() && (value_size == 0 || value_size > MAX_PER_CPU_VALUE_SIZE) => {
                return Err(field("value_size", value_size, "a per-CPU value must be 1 to 32768 bytes"));
            }
            MapType::Array | MapType::Hash | MapType::LruHash | MapType::LpmTrie | MapType::Queue | MapType::Stack
                if value_size == 0 || value_size > MAX_VALUE_SIZE =>
            {
                return Err(field("value_size", value_size, "it must be 1 to 1048576"));
            }
            _ => {}
        }
        let entries_usize = entries as usize;
        let cpus = if map_type.is_per_cpu() { cpus::count() } else { 1 };
        let slot = slot_size(value_size as usize, entries_usize * cpus) as u64;
        let bytes = match map_type {
            MapType::RingBuf => u64::from(entries),
            MapType::ProgArray => u64::from(entries) * 8,
            MapType::PerfEventArray => PERF_EVENT_BYTES as u64,
            _ => u64::from(entries) * (slot * cpus as u64 + u64::from(key_size)),
        };
        if bytes > MAX_MAP_BYTES {
            return Err(MapError::TooLarge { name, bytes });
        }
        let storage = match map_type {
            MapType::Array | MapType::PerCpuArray | MapType::DevMap | MapType::CpuMap | MapType::XskMap => {
                Storage::Array(Arena::new(value_size as usize, entries_usize * cpus))
            }
            MapType::Hash | MapType::LruHash | MapType::PerCpuHash | MapType::LruPerCpuHash | MapType::DevMapHash => {
                Storage::Hash(HashStore {
                    arena: Arena::new(value_size as usize, entries_usize * cpus),
                    cpus,
                    index: RwLock::new(HashIndex {
                        slots: HashMap::with_hasher(KeyHashBuilder::new()),
                        free: FreeSlots::new(entries),
                        lru_keys: Vec::new(),
                        hand: 0,
                    }),
                    referenced: matches!(map_type, MapType::LruHash | MapType::LruPerCpuHash)
                        .then(|| zeroed(entries_usize)),
                })
            }
            MapType::LpmTrie => Storage::Lpm(LpmStore {
                arena: Arena::new(value_size as usize, entries_usize),
                index: RwLock::new(LpmIndex { by_length: BTreeMap::new(), free: FreeSlots::new(entries) }),
            }),
            MapType::ProgArray => Storage::ProgArray(RwLock::new(vec![None; entries_usize])),
            MapType::PerfEventArray => Storage::PerfEvents(Mutex::new(PerfStore::default())),
            MapType::Queue | MapType::Stack => Storage::Queue(Mutex::new(VecDeque::new())),
            MapType::RingBuf => Storage::RingBuf(RingStore {
                arena: Arena::new(entries_usize, 1),
                records: Mutex::new(VecDeque::new()),
            }),
        };
        Ok(Map { def, map_type, storage, cpus, exact_len: None })
    }

    /// The map holding a global data section: an array of one value of
    /// the section's size (at least 1 byte), read-only to programs for
    /// `.rodata`, as libbpf makes it.
    pub fn global_data(section: &DataSection) -> Map {
        let value_size = section.bytes.len().max(1);
        let arena = Arena::new(value_size, 1);
        arena.write(0, &[&section.bytes[..], &vec![0; value_size - section.bytes.len()]].concat());
        let flags = if section.writable { 0 } else { BPF_F_RDONLY_PROG };
        Map {
            def: MapDef {
                name: section.name.clone(),
                map_type: MapType::Array as u32,
                key_size: 4,
                value_size: value_size as u32,
                max_entries: 1,
                flags,
                initial_programs: Vec::new(),
            },
            map_type: MapType::Array,
            storage: Storage::Array(arena),
            cpus: 1,
            exact_len: Some(section.bytes.len()),
        }
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn def(&self) -> &MapDef {
        &self.def
    }

    pub fn map_type(&self) -> MapType {
        self.map_type
    }

    /// The value that stands for this map in a program's registers (what
    /// `lddw` of a map loads): the map's own address, which lies in no
    /// region, so a program cannot read the map through it.
    pub fn handle(&self) -> u64 {
        self as *const Map as u64
    }

    /// The memory a program may access through pointers this map hands it
    /// (looked-up values, ring buffer records), if any.
    pub fn region(&self) -> Option<Region> {
        // A devmap's values are the kernel's to change, not the program's.
        let writable = self.def.flags & BPF_F_RDONLY_PROG == 0 && !self.map_type.is_redirect_target();
        let arena = match &self.storage {
            Storage::Array(arena) => arena,
            Storage::Hash(store) => &store.arena,
            Storage::Lpm(store) => &store.arena,
            Storage::RingBuf(store) => &store.arena,
            Storage::ProgArray(_) | Storage::Queue(_) | Storage::PerfEvents(_) => return None,
        };
        // The last slot's padding is not the program's; with several
        // slots, no access may cross from one value into the next.
        let len = self.exact_len.unwrap_or(arena.len() - (arena.slot - arena.value_size));
        let (stride, value_size) = if arena.slots > 1 { (arena.slot as u64, arena.value_size as u64) } else { (0, 0) };
        Some(Region { start: arena.addr(), len: len as u64, writable, stride, value_size })
    }

    /// The first value of an array map, which `lddw` (src 2 or 6) may
    /// address directly, as libbpf does for global data.
    pub fn direct_value(&self) -> Option<Region> {
        let Storage::Array(arena) = &self.storage else { return None };
        if self.map_type != MapType::Array {
            return None;
        }
        let len = self.exact_len.unwrap_or(arena.value_size);
        Some(Region {
            start: arena.addr(),
            len: len as u64,
            writable: self.def.flags & BPF_F_RDONLY_PROG == 0,
            ..Region::default()
        })
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapOpError> {
        if key.len() != self.def.key_size as usize {
            return Err(MapOpError::KeySize { expected: self.def.key_size, got: key.len() });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), MapOpError> {
        if value.len() != self.def.value_size as usize {
            return Err(MapOpError::ValueSize { expected: self.def.value_size, got: value.len() });
        }
        Ok(())
    }

    /// Values per entry: the possible CPUs for a per-CPU map, else 1.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// The size of a value as the host reads and writes it: for a per-CPU
    /// map, one value per possible CPU, each padded to 8 bytes, as libbpf
    /// lays them out; else `value_size`.
    pub fn host_value_size(&self) -> usize {
        if self.map_type.is_per_cpu() {
            (self.def.value_size as usize).div_ceil(8) * 8 * self.cpus
        } else {
            self.def.value_size as usize
        }
    }

    /// The arena slot of entry `entry`'s value for CPU slot `cpu`.
    fn cell(&self, entry: usize, cpu: usize) -> usize {
        entry * self.cpus + cpu
    }

    /// The CPU slot a program's access uses: the CPU it runs on.
    fn this_cpu(&self) -> usize {
        if self.cpus == 1 { 0 } else { cpus::current().min(self.cpus - 1) }
    }

    /// An entry's value as the host sees it (see [`Map::host_value_size`]).
    fn read_entry(&self, arena: &Arena, entry: usize) -> Vec<u8> {
        if !self.map_type.is_per_cpu() {
            return arena.read(self.cell(entry, 0));
        }
        let stride = arena.value_size.div_ceil(8) * 8;
        let mut out = vec![0; stride * self.cpus];
        for (cpu, chunk) in out.chunks_exact_mut(stride).enumerate() {
            chunk[..arena.value_size].copy_from_slice(&arena.read(self.cell(entry, cpu)));
        }
        out
    }

    /// Stores a checked value into an entry: the host's into every CPU
    /// slot, a program's into its CPU's.
    fn write_entry(&self, arena: &Arena, entry: usize, value: Value) {
        match value {
            Value::Host(bytes) if self.map_type.is_per_cpu() => {
                let stride = arena.value_size.div_ceil(8) * 8;
                for (cpu, chunk) in bytes.chunks_exact(stride).enumerate() {
                    arena.write(self.cell(entry, cpu), &chunk[..arena.value_size]);
                }
            }
            Value::Host(bytes) => arena.write(entry, bytes),
            Value::Program(bytes) => arena.write(self.cell(entry, self.this_cpu()), bytes),
        }
    }

    fn check_update_value<'v>(&self, value: Value<'v>) -> Result<Value<'v>, MapOpError> {
        let (bytes, expected) = match value {
            Value::Host(bytes) => (bytes, self.host_value_size()),
            Value::Program(bytes) => (bytes, self.def.value_size as usize),
        };
        if bytes.len() != expected {
            return Err(MapOpError::ValueSize { expected: expected as u32, got: bytes.len() });
        }
        if self.map_type.is_redirect_target() {
            let Value::Host(bytes) = value else { return Err(MapOpError::NotSupported(self.map_type.name())) };
            self.check_target(bytes)?;
        }
        Ok(value)
    }

    /// Checks a redirect map's value from the host: the first word is the
    /// target (an ifindex, a cpumap's queue size); 0 empties a devmap's or
    /// cpumap's slot. Programs attached to entries are not supported.
    fn check_target(&self, value: &[u8]) -> Result<(), MapOpError> {
        let word = |at: usize| u32::from_ne_bytes(value[at..at + 4].try_into().expect("checked size"));
        if self.map_type == MapType::XskMap {
            return Err(MapOpError::Unsupported("an xskmap holds AF_XDP sockets, which this runtime does not have"));
        }
        if value.len() == 8 && word(4) != 0 {
            return Err(MapOpError::Unsupported("a program in a devmap or cpumap entry"));
        }
        match self.map_type {
            MapType::DevMapHash if word(0) == 0 => Err(MapOpError::Invalid("ifindex 0 names no device")),
            MapType::CpuMap if word(0) > MAX_CPUMAP_QSIZE => {
                Err(MapOpError::Invalid("a cpumap's qsize is at most 16384"))
            }
            _ => Ok(()),
        }
    }

    /// Is an array-indexed entry there? A devmap's or cpumap's slot is
    /// empty while its first word is 0; an xskmap's always is.
    fn array_entry_present(&self, arena: &Arena, index: usize) -> bool {
        match self.map_type {
            MapType::DevMap | MapType::CpuMap => arena.first_word(index) != [0; 4],
            MapType::XskMap => false,
            _ => true,
        }
    }

    fn array_index(&self, key: &[u8]) -> Result<Option<usize>, MapOpError> {
        self.check_key(key)?;
        let index = u32::from_ne_bytes(key.try_into().expect("checked: 4 bytes"));
        Ok((index < self.def.max_entries).then_some(index as usize))
    }

    /// The address of the value under `key`, as `bpf_map_lookup_elem`
    /// returns it to a program (for a per-CPU map, the value of the CPU the
    /// program runs on); `None` when there is none.
    pub fn lookup_addr(&self, key: &[u8]) -> Result<Option<u64>, MapOpError> {
        match &self.storage {
            Storage::Array(_) if self.map_type == MapType::CpuMap => {
                Err(MapOpError::NotSupported(self.map_type.name()))
            }
            Storage::Array(arena) => Ok(self
                .array_index(key)?
                .filter(|&index| self.array_entry_present(arena, index))
                .map(|index| arena.slot_addr(self.cell(index, self.this_cpu())))),
            Storage::Hash(store) => {
                self.check_key(key)?;
                let index = read(&store.index);
                let Some(&slot) = index.slots.get(key) else { return Ok(None) };
                store.touch(slot);
                Ok(Some(store.arena.slot_addr(self.cell(slot as usize, self.this_cpu()))))
            }
            Storage::Lpm(store) => {
                self.check_key(key)?;
                Ok(lpm_find(&read(&store.index), key).map(|(_, slot)| store.arena.slot_addr(slot as usize)))
            }
            _ => Err(MapOpError::NotSupported(self.map_type.name())),
        }
    }

    /// Does [`Map::lookup_addr`] always succeed here, given a key of the
    /// map's size? Then compiled code may call [`Map::lookup_addr_raw`]
    /// for a program's `bpf_map_lookup_elem` of this map, as the helper
    /// could neither fail nor stop the run.
    pub fn lookup_never_fails(&self) -> bool {
        match &self.storage {
            Storage::Array(_) => self.map_type != MapType::CpuMap,
            Storage::Hash(_) | Storage::Lpm(_) => true,
            _ => false,
        }
    }

    /// [`Map::lookup_addr`] of the key at `key`, 0 for none, for compiled
    /// code (see [`Map::lookup_never_fails`]).
    ///
    /// # Safety
    /// `map` is a live map's [`Map::handle`] whose lookups never fail, and
    /// `key` points to `key_size` readable bytes.
    pub unsafe extern "C" fn lookup_addr_raw(map: u64, key: u64) -> u64 {
        // SAFETY: the caller's promises.
        let (map, key) = unsafe {
            let map = &*(map as *const Map);
            (map, std::slice::from_raw_parts(key as *const u8, map.def.key_size as usize))
        };
        map.lookup_addr(key).ok().flatten().unwrap_or(0)
    }

    /// Where an array or per-CPU array keeps its values, so that compiled
    /// code may find the one [`Map::lookup_addr`] finds itself: the value
    /// of index `i < max_entries` for CPU slot `c` (see [`cpus`]) is at
    /// `base + i * entry_stride + c * slot`.
    pub fn array_layout(&self) -> Option<ArrayLayout> {
        let Storage::Array(arena) = &self.storage else { return None };
        if !matches!(self.map_type, MapType::Array | MapType::PerCpuArray) {
            return None;
        }
        Some(ArrayLayout {
            base: arena.addr(),
            max_entries: self.def.max_entries,
            slot: arena.slot as u64,
            entry_stride: (arena.slot * self.cpus) as u64,
            cpus: self.cpus as u32,
        })
    }

    /// A copy of the value under `key`; for a per-CPU map, every CPU's
    /// (see [`Map::host_value_size`]).
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapOpError> {
        match &self.storage {
            Storage::Array(arena) => Ok(self
                .array_index(key)?
                .filter(|&index| self.array_entry_present(arena, index))
                .map(|index| self.read_entry(arena, index))),
            Storage::Hash(store) => {
                self.check_key(key)?;
                Ok(read(&store.index).slots.get(key).map(|&slot| self.read_entry(&store.arena, slot as usize)))
            }
            Storage::Lpm(store) => {
                self.check_key(key)?;
                Ok(lpm_find(&read(&store.index), key).map(|(_, slot)| store.arena.read(slot as usize)))
            }
            Storage::ProgArray(programs) => {
                let Some(index) = self.array_index(key)? else { return Ok(None) };
                Ok(read(programs)[index]
                    .as_ref()
                    .filter(|program| program.strong_count() > 0)
                    .map(|_| (index as u32).to_ne_bytes().to_vec()))
            }
            _ => Err(MapOpError::NotSupported(self.map_type.name())),
        }
    }

    /// Stores `value` under `key` as the host does (for a per-CPU map,
    /// every CPU's value, see [`Map::host_value_size`]); `flags` is
    /// `BPF_ANY`, `BPF_NOEXIST` or `BPF_EXIST`. A prog array takes programs
    /// through [`Map::set_program`] instead, a queue or stack values
    /// through [`Map::push`].
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError> {
        self.store(key, Value::Host(value), flags)
    }

    /// Stores `value` under `key` as a program's `bpf_map_update_elem`
    /// does: for a per-CPU map, the value of the CPU it runs on (a new
    /// entry's other CPUs get zeros). Redirect maps are the host's to fill.
    pub fn update_from_program(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError> {
        self.store(key, Value::Program(value), flags)
    }

    fn store(&self, key: &[u8], value: Value, flags: u64) -> Result<(), MapOpError> {
        if flags > BPF_EXIST {
            return Err(MapOpError::Invalid("flags must be BPF_ANY, BPF_NOEXIST or BPF_EXIST"));
        }
        match &self.storage {
            Storage::Array(arena) => {
                let value = self.check_update_value(value)?;
                let index = self.array_index(key)?.ok_or(MapOpError::Full)?;
                if flags == BPF_NOEXIST {
                    return Err(MapOpError::Exists);
                }
                self.write_entry(arena, index, value);
                Ok(())
            }
            Storage::Hash(store) => {
                self.check_key(key)?;
                let value = self.check_update_value(value)?;
                let mut index = write(&store.index);
                if let Some(&slot) = index.slots.get(key) {
                    if flags == BPF_NOEXIST {
                        return Err(MapOpError::Exists);
                    }
                    self.write_entry(&store.arena, slot as usize, value);
                    store.touch(slot);
                    return Ok(());
                }
                if flags == BPF_EXIST {
                    return Err(MapOpError::NotFound);
                }
                let slot = match index.free.pop() {
                    Some(slot) => slot,
                    None => store.evict(&mut index).ok_or(MapOpError::Full)?,
                };
                // A free slot's values are zeros (deletes and evictions
                // clear them): a program's new entry has zeros on the
                // other CPUs, as in the kernel.
                self.write_entry(&store.arena, slot as usize, value);
                if store.referenced.is_some() {
                    // New keys start unused: the hand, just past this slot
                    // when it was evicted, gives them a whole sweep.
                    match index.lru_keys.get_mut(slot as usize) {
                        Some(old) => *old = key.into(),
                        None => index.lru_keys.push(key.into()),
                    }
                }
                index.slots.insert(key.into(), slot);
                Ok(())
            }
            Storage::Lpm(store) => {
                self.check_key(key)?;
                let value = match value {
                    Value::Host(bytes) | Value::Program(bytes) => bytes,
                };
                self.check_value(value)?;
                let (length, data) = lpm_key(key, self.def.key_size)?;
                let masked = masked(data, length);
                let mut index = write(&store.index);
                let index = &mut *index;
                if let Some(&slot) = index.by_length.get(&length).and_then(|table| table.get(&masked[..])) {
                    if flags == BPF_NOEXIST {
                        return Err(MapOpError::Exists);
                    }
                    store.arena.write(slot as usize, value);
                    return Ok(());
                }
                if flags == BPF_EXIST {
                    return Err(MapOpError::NotFound);
                }
                let slot = index.free.pop().ok_or(MapOpError::Full)?;
                store.arena.write(slot as usize, value);
                index.by_length.entry(length).or_default().insert(masked.into(), slot);
                Ok(())
            }
            _ => Err(MapOpError::NotSupported(self.map_type.name())),
        }
    }

    /// Removes the value under `key` (empties a redirect map's slot).
    pub fn delete(&self, key: &[u8]) -> Result<(), MapOpError> {
        match &self.storage {
            Storage::Array(arena) if self.map_type.is_redirect_target() => {
                // As the kernel: emptying a slot succeeds, empty or not.
                let index = self.array_index(key)?.ok_or(MapOpError::Invalid("index past max_entries"))?;
                arena.clear(index);
                Ok(())
            }
            Storage::Array(_) => {
                self.check_key(key)?;
                Err(MapOpError::Invalid("an array's elements cannot be deleted"))
            }
            Storage::Hash(store) => {
                self.check_key(key)?;
                let mut index = write(&store.index);
                let slot = index.slots.remove(key).ok_or(MapOpError::NotFound)?;
                store.clear_entry(slot);
                index.free.push(slot);
                Ok(())
            }
            Storage::Lpm(store) => {
                self.check_key(key)?;
                let (length, data) = lpm_key(key, self.def.key_size)?;
                let masked = masked(data, length);
                let mut index = write(&store.index);
                let table = index.by_length.get_mut(&length).ok_or(MapOpError::NotFound)?;
                let slot = table.remove(&masked[..]).ok_or(MapOpError::NotFound)?;
                if table.is_empty() {
                    index.by_length.remove(&length);
                }
                store.arena.clear(slot as usize);
                index.free.push(slot);
                Ok(())
            }
            Storage::ProgArray(programs) => {
                let index = self.array_index(key)?.ok_or(MapOpError::NotFound)?;
                write(programs)[index].take().map(|_| ()).ok_or(MapOpError::NotFound)
            }
            _ => Err(MapOpError::NotSupported(self.map_type.name())),
        }
    }

    /// Every key, in an order that is stable while the map is unchanged
    /// (index order for arrays, sorted otherwise).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        match &self.storage {
            Storage::Array(_) => (0..self.def.max_entries).map(|index| index.to_ne_bytes().to_vec()).collect(),
            Storage::Hash(store) => {
                let mut keys: Vec<Vec<u8>> = read(&store.index).slots.keys().map(|key| key.to_vec()).collect();
                keys.sort_unstable();
                keys
            }
            Storage::Lpm(store) => {
                let index = read(&store.index);
                let mut keys = Vec::new();
                for (&length, table) in &index.by_length {
                    let mut data: Vec<&Box<[u8]>> = table.keys().collect();
                    data.sort_unstable();
                    keys.extend(data.into_iter().map(|data| [&length.to_ne_bytes()[..], data].concat()));
                }
                keys
            }
            Storage::ProgArray(programs) => read(programs)
                .iter()
                .enumerate()
                .filter(|(_, program)| program.as_ref().is_some_and(|program| program.strong_count() > 0))
                .map(|(index, _)| (index as u32).to_ne_bytes().to_vec())
                .collect(),
            Storage::Queue(_) | Storage::RingBuf(_) | Storage::PerfEvents(_) => Vec::new(),
        }
    }

    /// The key after `key` in the order of [`Map::keys`], or the first key
    /// when `key` is `None` or absent (as `bpf_map_get_next_key`). Arrays
    /// answer at once; hash maps with one pass over their keys.
    pub fn next_key(&self, key: Option<&[u8]>) -> Option<Vec<u8>> {
        match &self.storage {
            Storage::Array(_) => {
                let index = key.and_then(|key| <[u8; 4]>::try_from(key).ok()).map(u32::from_ne_bytes);
                let next = index.filter(|&index| index < self.def.max_entries).map_or(0, |index| index + 1);
                (next < self.def.max_entries).then(|| next.to_ne_bytes().to_vec())
            }
            Storage::Hash(store) => {
                let index = read(&store.index);
                let after = key.filter(|key| index.slots.contains_key(*key));
                let later = index.slots.keys().filter(|candidate| after.is_none_or(|key| &candidate[..] > key));
                later.min().map(|key| key.to_vec())
            }
            _ => {
                let keys = self.keys();
                match key.and_then(|key| keys.iter().position(|candidate| candidate == key)) {
                    Some(position) => keys.get(position + 1).cloned(),
                    None => keys.first().cloned(),
                }
            }
        }
    }

    /// Puts `program` in slot `index` of a prog array (`None` empties it).
    /// The array does not keep the program alive: the caller does.
    pub fn set_program(&self, index: u32, program: Option<&Arc<Program>>) -> Result<(), MapOpError> {
        let Storage::ProgArray(programs) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        let mut programs = write(programs);
        let slot = programs.get_mut(index as usize).ok_or(MapOpError::Invalid("index past max_entries"))?;
        *slot = program.map(Arc::downgrade);
        Ok(())
    }

    /// The program in slot `index` of a prog array.
    pub fn program(&self, index: u32) -> Option<Arc<Program>> {
        let Storage::ProgArray(programs) = &self.storage else { return None };
        read(programs).get(index as usize)?.as_ref()?.upgrade()
    }

    /// Pushes `value` onto a queue or stack; when full, `BPF_EXIST` drops
    /// the oldest element to make room.
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), MapOpError> {
        let Storage::Queue(queue) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        self.check_value(value)?;
        if flags & !BPF_EXIST != 0 {
            return Err(MapOpError::Invalid("flags must be 0 or BPF_EXIST"));
        }
        let mut queue = lock(queue);
        if queue.len() == self.def.max_entries as usize {
            if flags != BPF_EXIST {
                return Err(MapOpError::Full);
            }
            queue.pop_front();
        }
        queue.push_back(value.into());
        Ok(())
    }

    /// Takes (`remove`) or reads the next element of a queue (the oldest)
    /// or stack (the newest).
    pub fn pop(&self, remove: bool) -> Result<Vec<u8>, MapOpError> {
        let Storage::Queue(queue) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        let mut queue = lock(queue);
        let lifo = self.map_type == MapType::Stack;
        let value = match (lifo, remove) {
            (false, true) => queue.pop_front(),
            (true, true) => queue.pop_back(),
            (false, false) => queue.front().cloned(),
            (true, false) => queue.back().cloned(),
        };
        value.map(Vec::from).ok_or(MapOpError::NotFound)
    }

    /// Every element of a queue or stack, oldest first, left in place.
    pub fn peek_all(&self) -> Vec<Vec<u8>> {
        let Storage::Queue(queue) = &self.storage else { return Vec::new() };
        lock(queue).iter().map(|value| value.to_vec()).collect()
    }

    /// Reserves `size` bytes in a ring buffer and returns their address.
    pub fn ringbuf_reserve(&self, size: u64) -> Result<u64, MapOpError> {
        let Storage::RingBuf(ring) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        let capacity = ring.arena.len();
        let size = usize::try_from(size).ok().filter(|&size| size > 0 && size <= capacity / 2);
        let size = size.ok_or(MapOpError::Invalid("a record must be 1 byte to half the ring buffer"))?;
        let taken = size.div_ceil(8) * 8;
        let mut records = lock(&ring.records);
        let start = match (records.front(), records.back()) {
            (Some(first), Some(last)) => {
                let end = last.start + last.len.div_ceil(8) * 8;
                if end > first.start {
                    // Not wrapped: room after the last record, else at 0.
                    if capacity - end >= taken {
                        end
                    } else if first.start >= taken {
                        0
                    } else {
                        return Err(MapOpError::Full);
                    }
                } else if first.start - end >= taken {
                    end
                } else {
                    return Err(MapOpError::Full);
                }
            }
            _ => 0,
        };
        records.push_back(Record { start, len: size, state: RecordState::Reserved });
        Ok(ring.arena.addr() + start as u64)
    }

    /// Submits (`submit`) or discards the record reserved at `addr`.
    pub fn ringbuf_commit(&self, addr: u64, submit: bool) -> Result<(), MapOpError> {
        let Storage::RingBuf(ring) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        let mut records = lock(&ring.records);
        let start = addr.wrapping_sub(ring.arena.addr());
        let record = records
            .iter_mut()
            .find(|record| record.start as u64 == start && record.state == RecordState::Reserved)
            .ok_or(MapOpError::Invalid("not a record reserved and not yet submitted"))?;
        record.state = if submit { RecordState::Submitted } else { RecordState::Discarded };
        Ok(())
    }

    /// Takes the submitted records at the front of a ring buffer, in order,
    /// up to the first still reserved, skipping discarded ones.
    pub fn ringbuf_drain(&self) -> Result<Vec<Vec<u8>>, MapOpError> {
        let mut out = Vec::new();
        while let Some(record) = self.ringbuf_next()? {
            out.push(record);
        }
        Ok(out)
    }

    /// Takes the next submitted record of a ring buffer, if one is ready.
    pub fn ringbuf_next(&self) -> Result<Option<Vec<u8>>, MapOpError> {
        self.ringbuf_next_within(usize::MAX).map(|next| next.map(|record| record.unwrap_or_default()))
    }

    /// As [`Map::ringbuf_next`], but a record longer than `limit` stays in
    /// the buffer: `Some(Err(len))` tells its length.
    /// A perf event array's records are read the same way.
    pub fn ringbuf_next_within(&self, limit: usize) -> Result<Option<Result<Vec<u8>, usize>>, MapOpError> {
        if let Storage::PerfEvents(perf) = &self.storage {
            let mut perf = lock(perf);
            return Ok(match perf.records.front().map(Vec::len) {
                None => None,
                Some(len) if len > limit => Some(Err(len)),
                Some(len) => {
                    perf.bytes -= len;
                    perf.records.pop_front().map(Ok)
                }
            });
        }
        let Storage::RingBuf(ring) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        let mut records = lock(&ring.records);
        while let Some(&record) = records.front() {
            match record.state {
                RecordState::Reserved => return Ok(None),
                RecordState::Discarded => {
                    records.pop_front();
                }
                RecordState::Submitted if record.len > limit => return Ok(Some(Err(record.len))),
                RecordState::Submitted => {
                    let mut bytes = vec![0; record.len];
                    // SAFETY: the record lies inside the arena (reserve
                    // placed it there); a program still writing it can only
                    // tear the copy.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            (ring.arena.addr() + record.start as u64) as *const u8,
                            bytes.as_mut_ptr(),
                            record.len,
                        )
                    };
                    records.pop_front();
                    return Ok(Some(Ok(bytes)));
                }
            }
        }
        Ok(None)
    }

    /// Adds a record to a perf event array, for slot `index` (a CPU's
    /// buffer; every slot is open, as if the host had opened each CPU's).
    /// A record that does not fit is lost, as in the kernel (`-ENOSPC`).
    pub fn perf_event_output(&self, index: u64, record: Vec<u8>) -> Result<(), MapOpError> {
        let Storage::PerfEvents(perf) = &self.storage else {
            return Err(MapOpError::NotSupported(self.map_type.name()));
        };
        if index >= u64::from(self.def.max_entries) {
            return Err(MapOpError::Full);
        }
        let mut perf = lock(perf);
        if perf.bytes + record.len() > PERF_EVENT_BYTES {
            return Err(MapOpError::NoSpace);
        }
        perf.bytes += record.len();
        perf.records.push_back(record);
        Ok(())
    }

    /// Bytes of submitted records not yet taken (`BPF_RB_AVAIL_DATA`).
    pub fn ringbuf_pending(&self) -> u64 {
        let Storage::RingBuf(ring) = &self.storage else { return 0 };
        lock(&ring.records)
            .iter()
            .filter(|record| record.state == RecordState::Submitted)
            .map(|record| record.len as u64)
            .sum()
    }
}

/// Creates the maps `image` declares (or takes them from `reuse`, see
/// [`Config::reuse_maps`]), then one map per data section (an array of one
/// value, as libbpf makes them), in that order.
///
/// [`Config::reuse_maps`]: crate::program::Config::reuse_maps
pub fn create_for(image: &Image, reuse: &[Arc<Map>]) -> Result<Vec<Arc<Map>>, MapError> {
    let declared = image.maps.iter().enumerate().map(|(index, def)| {
        let reusable = (def.map_type != MapType::ProgArray as u32)
            .then(|| reuse.iter().find(|map| map.name() == def.name && map.def().same_shape(def)))
            .flatten();
        match reusable {
            Some(map) => Ok(map.clone()),
            None => Map::new(def.clone()).map(Arc::new).map_err(|error| match error {
                MapError::UnsupportedType { name, map_type, .. } => {
                    MapError::UnsupportedType { name, map_type, used_at: first_use(image, index) }
                }
                other => other,
            }),
        }
    });
    let data = image.data.iter().map(|section| Ok(Arc::new(Map::global_data(section))));
    declared.chain(data).collect()
}

/// The first instruction of `image` that loads map number `index`.
fn first_use(image: &Image, index: usize) -> Option<usize> {
    let mut pc = 0;
    while pc < image.insns.len() {
        let insn = image.insns[pc];
        if insn.opc == crate::isa::LDDW {
            if crate::isa::lddw_names_map(insn.src) && usize::try_from(insn.imm).ok() == Some(index) {
                return Some(pc);
            }
            pc += 1;
        }
        pc += 1;
    }
    None
}

impl HashStore {
    /// Zeroes every CPU's value of entry `slot`.
    fn clear_entry(&self, slot: u32) {
        for cell in slot as usize * self.cpus..(slot as usize + 1) * self.cpus {
            self.arena.clear(cell);
        }
    }

    /// Marks `slot` used (LRU maps); a read first, so that a slot in use
    /// stays in the cache of every thread that uses it.
    fn touch(&self, slot: u32) {
        if let Some(bit) = self.referenced.as_ref().map(|referenced| &referenced[slot as usize]) {
            if bit.load(Ordering::Relaxed) == 0 {
                bit.store(1, Ordering::Relaxed);
            }
        }
    }

    /// Frees a slot of a full LRU map: the first the hand finds unused
    /// since it last passed. Nothing sets bits meanwhile (lookups need the
    /// read lock), so two sweeps at most.
    fn evict(&self, index: &mut HashIndex) -> Option<u32> {
        let referenced = self.referenced.as_ref()?;
        let used = index.lru_keys.len();
        for _ in 0..=2 * used {
            let slot = index.hand % used;
            index.hand = (slot + 1) % used;
            if referenced[slot].swap(0, Ordering::Relaxed) == 0 {
                index.slots.remove(&index.lru_keys[slot]);
                self.clear_entry(slot as u32);
                return Some(slot as u32);
            }
        }
        None
    }
}

/// An LPM key's prefix length (host order, as in `struct bpf_lpm_trie_key`)
/// and data, the length checked against the data's bits.
fn lpm_key(key: &[u8], key_size: u32) -> Result<(u32, &[u8]), MapOpError> {
    let (length, data) = key.split_at(4);
    let length = u32::from_ne_bytes(length.try_into().expect("split at 4"));
    if length > (key_size - 4) * 8 {
        return Err(MapOpError::Invalid("prefix length longer than the key's data"));
    }
    Ok((length, data))
}

/// The first `length` bits of `data`, the rest zeroed, in a buffer as long
/// as `data`.
fn masked(data: &[u8], length: u32) -> Vec<u8> {
    let mut out = data.to_vec();
    mask_in_place(&mut out, length);
    out
}

fn mask_in_place(data: &mut [u8], length: u32) {
    let full = (length / 8) as usize;
    let bits = length % 8;
    for (index, byte) in data.iter_mut().enumerate().skip(full) {
        *byte &= if index == full && bits > 0 { 0xffu8 << (8 - bits) } else { 0 };
    }
}

/// The longest prefix in `index` that matches `key` (its prefix length
/// bounds the search, as the kernel's lookup does): length and slot.
fn lpm_find(index: &LpmIndex, key: &[u8]) -> Option<(u32, u32)> {
    let length = u32::from_ne_bytes(key[..4].try_into().expect("checked key size"));
    let data = &key[4..];
    let mut buffer = [0u8; 256];
    let probe = &mut buffer[..data.len()];
    for (&prefix, table) in index.by_length.range(..=length).rev() {
        probe.copy_from_slice(data);
        mask_in_place(probe, prefix);
        if let Some(&slot) = table.get(&probe[..]) {
            return Some((prefix, slot));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32, flags: u32) -> MapDef {
        MapDef {
            name: "m".into(),
            map_type: map_type as u32,
            key_size,
            value_size,
            max_entries,
            flags,
            initial_programs: Vec::new(),
        }
    }

    fn map(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32, flags: u32) -> Map {
        Map::new(def(map_type, key_size, value_size, max_entries, flags)).expect("valid definition")
    }

    #[test]
    fn definitions_are_checked() {
        let bad = [
            def(MapType::Array, 8, 4, 4, 0),
            def(MapType::Array, 4, 0, 4, 0),
            def(MapType::Array, 4, 4, 0, 0),
            def(MapType::Hash, 0, 4, 4, 0),
            def(MapType::LpmTrie, 8, 4, 4, 0),
            def(MapType::LpmTrie, 4, 4, 4, BPF_F_NO_PREALLOC),
            def(MapType::RingBuf, 0, 0, 1000, 0),
            def(MapType::ProgArray, 4, 8, 4, 0),
            def(MapType::Hash, 4, 4, 4, 1 << 20),
            def(MapType::Array, 4, MAX_VALUE_SIZE, 4096, 0),
        ];
        for def in bad {
            assert!(Map::new(def.clone()).is_err(), "{def:?} must be refused");
        }
        let unknown = MapDef { map_type: 12, ..def(MapType::Array, 4, 4, 4, 0) };
        assert!(matches!(Map::new(unknown), Err(MapError::UnsupportedType { map_type: 12, .. })));
        let bad = [
            def(MapType::PerCpuArray, 4, MAX_PER_CPU_VALUE_SIZE + 1, 1, 0),
            def(MapType::PerCpuArray, 4, 8, 1, BPF_F_MMAPABLE),
            def(MapType::DevMap, 4, 6, 4, 0),
            def(MapType::CpuMap, 8, 4, 4, 0),
            def(MapType::XskMap, 4, 8, 4, 0),
        ];
        for def in bad {
            assert!(Map::new(def.clone()).is_err(), "{def:?} must be refused");
        }
    }

    /// Runs `body` on this thread pinned to CPU `cpu` (its per-CPU slot, on
    /// these hosts' contiguous CPU numbers), or not at all where this thread
    /// may not run there.
    fn on_cpu(cpu: usize, body: impl FnOnce()) {
        // SAFETY: cpu_set_t is plain bits, valid zeroed; the calls read or
        // write only the sets, of their own size.
        unsafe {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, size, &mut allowed), 0);
            if !libc::CPU_ISSET(cpu, &allowed) {
                return;
            }
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            assert_eq!(libc::sched_setaffinity(0, size, &only), 0);
            body();
            libc::sched_setaffinity(0, size, &allowed);
        }
    }

    #[test]
    fn per_cpu_array_the_host_sees_every_cpu_a_program_its_own() {
        let cpus = cpus::count();
        let array = map(MapType::PerCpuArray, 4, 4, 2, 0);
        assert_eq!(array.host_value_size(), 8 * cpus);
        let key = 1u32.to_ne_bytes();
        assert_eq!(array.lookup(&key), Ok(Some(vec![0; 8 * cpus])));
        // The host's value: CPU n holds n + 1, padding after each.
        let host: Vec<u8> = (0..cpus as u32).flat_map(|cpu| [(cpu + 1).to_ne_bytes(), [0; 4]].concat()).collect();
        array.update(&key, &host, BPF_ANY).unwrap();
        assert_eq!(array.lookup(&key), Ok(Some(host.clone())));
        assert_eq!(
            array.update(&key, &[0; 4], BPF_ANY),
            Err(MapOpError::ValueSize { expected: 8 * cpus as u32, got: 4 })
        );
        for cpu in 0..cpus {
            on_cpu(cpu, || {
                let addr = array.lookup_addr(&key).unwrap().unwrap();
                // SAFETY: the address of a 4-byte value in the arena.
                assert_eq!(unsafe { (addr as *const u32).read() }, cpu as u32 + 1);
                assert!(array.region().unwrap().contains(addr, 4));
                array.update_from_program(&key, &99u32.to_ne_bytes(), BPF_ANY).unwrap();
                let seen = array.lookup(&key).unwrap().unwrap();
                assert_eq!(seen[cpu * 8..cpu * 8 + 4], 99u32.to_ne_bytes());
            });
        }
        assert!(array.direct_value().is_none(), "only plain arrays are addressed directly");
    }

    #[test]
    fn per_cpu_hash_a_programs_new_entry_is_zero_on_the_other_cpus() {
        let cpus = cpus::count();
        for map_type in [MapType::PerCpuHash, MapType::LruPerCpuHash] {
            let hash = map(map_type, 2, 8, 4, 0);
            hash.update(b"ab", &vec![7; 8 * cpus], BPF_ANY).unwrap();
            hash.delete(b"ab").unwrap();
            on_cpu(cpus - 1, || hash.update_from_program(b"ab", &5u64.to_ne_bytes(), BPF_NOEXIST).unwrap());
            let Some(value) = hash.lookup(b"ab").unwrap() else { continue };
            let expected: Vec<u8> =
                (0..cpus).flat_map(|cpu| if cpu == cpus - 1 { 5u64.to_ne_bytes() } else { [0; 8] }).collect();
            assert_eq!(value, expected, "{map_type:?}");
        }
    }

    #[test]
    fn devmaps_hold_ifindexes_and_empty_slots_are_absent() {
        let devmap = map(MapType::DevMap, 4, 4, 4, 0);
        let (zero, one) = (0u32.to_ne_bytes(), 1u32.to_ne_bytes());
        assert_eq!(devmap.lookup(&zero), Ok(None));
        assert_eq!(devmap.lookup_addr(&zero), Ok(None));
        devmap.update(&zero, &3u32.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(devmap.lookup(&zero), Ok(Some(3u32.to_ne_bytes().to_vec())));
        assert!(!devmap.region().unwrap().writable, "a program may not change where packets go");
        devmap.update(&zero, &0u32.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(devmap.lookup(&zero), Ok(None), "ifindex 0 empties the slot");
        devmap.update(&one, &3u32.to_ne_bytes(), BPF_ANY).unwrap();
        devmap.delete(&one).unwrap();
        devmap.delete(&one).unwrap();
        assert_eq!(devmap.lookup(&one), Ok(None));
        assert_eq!(
            devmap.update_from_program(&one, &3u32.to_ne_bytes(), BPF_ANY),
            Err(MapOpError::NotSupported("devmap"))
        );

        let with_program = map(MapType::DevMapHash, 4, 8, 4, 0);
        let value = |ifindex: u32, program: u32| [ifindex.to_ne_bytes(), program.to_ne_bytes()].concat();
        assert!(matches!(with_program.update(&one, &value(2, 9), BPF_ANY), Err(MapOpError::Unsupported(_))));
        assert!(matches!(with_program.update(&one, &value(0, 0), BPF_ANY), Err(MapOpError::Invalid(_))));
        with_program.update(&one, &value(2, 0), BPF_ANY).unwrap();
        assert_eq!(with_program.keys(), vec![one.to_vec()]);

        let xsks = map(MapType::XskMap, 4, 4, 4, 0);
        assert_eq!(xsks.update(&zero, &5u32.to_ne_bytes(), BPF_ANY).map_err(MapOpError::errno), Err(libc::EOPNOTSUPP));
        assert_eq!(xsks.lookup_addr(&zero), Ok(None));
        let cpumap = map(MapType::CpuMap, 4, 8, 2, 0);
        cpumap.update(&zero, &value(192, 0), BPF_ANY).unwrap();
        assert!(cpumap.lookup(&zero).unwrap().is_some());
        assert!(cpumap.update(&one, &value(16385, 0), BPF_ANY).is_err());
        assert!(cpumap.lookup_addr(&zero).is_err(), "programs only redirect through a cpumap");
    }

    #[test]
    fn array_lookup_update_and_bounds() {
        let array = map(MapType::Array, 4, 8, 4, 0);
        assert_eq!(array.lookup(&1u32.to_ne_bytes()), Ok(Some(vec![0; 8])));
        array.update(&1u32.to_ne_bytes(), &7u64.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(array.lookup(&1u32.to_ne_bytes()), Ok(Some(7u64.to_ne_bytes().to_vec())));
        assert_eq!(array.lookup(&4u32.to_ne_bytes()), Ok(None));
        assert_eq!(array.update(&4u32.to_ne_bytes(), &[0; 8], BPF_ANY), Err(MapOpError::Full));
        assert_eq!(array.update(&0u32.to_ne_bytes(), &[0; 8], BPF_NOEXIST), Err(MapOpError::Exists));
        assert_eq!(
            array.update(&0u32.to_ne_bytes(), &[0; 4], BPF_ANY),
            Err(MapOpError::ValueSize { expected: 8, got: 4 })
        );
        assert!(array.delete(&0u32.to_ne_bytes()).is_err());
        let region = array.region().unwrap();
        let addr = array.lookup_addr(&3u32.to_ne_bytes()).unwrap().unwrap();
        assert!(region.contains(addr, 8) && !region.contains(addr, 9));
    }

    #[test]
    fn hash_flags_full_and_delete() {
        let hash = map(MapType::Hash, 2, 4, 2, 0);
        hash.update(b"aa", &[1; 4], BPF_NOEXIST).unwrap();
        assert_eq!(hash.update(b"aa", &[2; 4], BPF_NOEXIST), Err(MapOpError::Exists));
        assert_eq!(hash.update(b"bb", &[2; 4], BPF_EXIST), Err(MapOpError::NotFound));
        hash.update(b"bb", &[2; 4], BPF_ANY).unwrap();
        assert_eq!(hash.update(b"cc", &[3; 4], BPF_ANY), Err(MapOpError::Full));
        assert_eq!(hash.keys(), vec![b"aa".to_vec(), b"bb".to_vec()]);
        assert_eq!(hash.next_key(None), Some(b"aa".to_vec()));
        assert_eq!(hash.next_key(Some(b"aa")), Some(b"bb".to_vec()));
        assert_eq!(hash.next_key(Some(b"bb")), None);
        hash.delete(b"aa").unwrap();
        assert_eq!(hash.delete(b"aa"), Err(MapOpError::NotFound));
        hash.update(b"cc", &[3; 4], BPF_ANY).unwrap();
        assert_eq!(hash.lookup(b"cc"), Ok(Some(vec![3; 4])));
        assert_eq!(hash.lookup(b"aa"), Ok(None));
        assert!(matches!(hash.lookup(b"a"), Err(MapOpError::KeySize { expected: 2, got: 1 })));
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let lru = map(MapType::LruHash, 1, 1, 2, 0);
        lru.update(b"a", b"1", BPF_ANY).unwrap();
        lru.update(b"b", b"2", BPF_ANY).unwrap();
        lru.lookup_addr(b"a").unwrap();
        lru.update(b"c", b"3", BPF_ANY).unwrap();
        assert_eq!(lru.keys(), vec![b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn lru_keeps_a_key_in_use_through_churn() {
        let lru = map(MapType::LruHash, 4, 1, 4, 0);
        lru.update(b"hot!", b"h", BPF_ANY).unwrap();
        for cold in 0..100u32 {
            lru.lookup_addr(b"hot!").unwrap().expect("the key in use stays");
            lru.update(&cold.to_ne_bytes(), b"c", BPF_ANY).unwrap();
            assert_eq!(lru.keys().len(), 4.min(cold as usize + 2));
        }
        // The newest key is there too; the others made room.
        assert!(lru.lookup(&99u32.to_ne_bytes()).unwrap().is_some());
        assert!(lru.lookup(&0u32.to_ne_bytes()).unwrap().is_none());
    }

    fn lpm_key(length: u32, address: [u8; 4]) -> Vec<u8> {
        [&length.to_ne_bytes()[..], &address].concat()
    }

    #[test]
    fn lpm_trie_matches_the_longest_prefix() {
        let trie = map(MapType::LpmTrie, 8, 1, 8, BPF_F_NO_PREALLOC);
        trie.update(&lpm_key(8, [10, 9, 9, 9]), &[8], BPF_ANY).unwrap();
        trie.update(&lpm_key(24, [10, 1, 2, 0]), &[24], BPF_ANY).unwrap();
        trie.update(&lpm_key(0, [0; 4]), &[0], BPF_ANY).unwrap();
        assert_eq!(trie.lookup(&lpm_key(32, [10, 1, 2, 3])), Ok(Some(vec![24])));
        assert_eq!(trie.lookup(&lpm_key(32, [10, 1, 3, 3])), Ok(Some(vec![8])));
        assert_eq!(trie.lookup(&lpm_key(32, [11, 0, 0, 1])), Ok(Some(vec![0])));
        // A query's own length bounds the match.
        assert_eq!(trie.lookup(&lpm_key(16, [10, 1, 2, 3])), Ok(Some(vec![8])));
        assert!(trie.update(&lpm_key(33, [0; 4]), &[1], BPF_ANY).is_err());
        assert_eq!(trie.keys()[1], lpm_key(8, [10, 0, 0, 0]));
        trie.delete(&lpm_key(24, [10, 1, 2, 99])).unwrap();
        assert_eq!(trie.lookup(&lpm_key(32, [10, 1, 2, 3])), Ok(Some(vec![8])));
    }

    #[test]
    fn queue_and_stack_orders() {
        let queue = map(MapType::Queue, 0, 1, 2, 0);
        let stack = map(MapType::Stack, 0, 1, 2, 0);
        for map in [&queue, &stack] {
            map.push(b"1", 0).unwrap();
            map.push(b"2", 0).unwrap();
            assert_eq!(map.push(b"3", 0), Err(MapOpError::Full));
        }
        queue.push(b"3", BPF_EXIST).unwrap();
        assert_eq!(queue.pop(false), Ok(b"2".to_vec()));
        assert_eq!(queue.pop(true), Ok(b"2".to_vec()));
        assert_eq!(stack.pop(true), Ok(b"2".to_vec()));
        assert_eq!(stack.pop(true), Ok(b"1".to_vec()));
        assert_eq!(stack.pop(true), Err(MapOpError::NotFound));
    }

    #[test]
    fn ring_buffer_keeps_order_and_wraps() {
        let ring = map(MapType::RingBuf, 0, 0, 4096, 0);
        let region = ring.region().unwrap();
        let first = ring.ringbuf_reserve(2000).unwrap();
        let second = ring.ringbuf_reserve(2000).unwrap();
        assert!(region.contains(first, 2000) && region.contains(second, 2000));
        assert_eq!(ring.ringbuf_reserve(200), Err(MapOpError::Full));
        // The second is submitted first, but the first still holds the line.
        ring.ringbuf_commit(second, true).unwrap();
        assert_eq!(ring.ringbuf_next(), Ok(None));
        ring.ringbuf_commit(first, false).unwrap();
        assert!(ring.ringbuf_commit(first, true).is_err());
        assert_eq!(ring.ringbuf_drain().unwrap().len(), 1);
        // Space after the last record is short, the start is free: wrap.
        let third = ring.ringbuf_reserve(2000).unwrap();
        let fourth = ring.ringbuf_reserve(1500).unwrap();
        ring.ringbuf_commit(third, true).unwrap();
        assert_eq!(ring.ringbuf_drain().unwrap().len(), 1);
        let fifth = ring.ringbuf_reserve(1000).unwrap();
        assert_eq!(fifth, region.start, "wrapped to the start");
        assert_eq!(ring.ringbuf_reserve(1200), Err(MapOpError::Full));
        // SAFETY: the record is 1000 bytes inside the arena.
        unsafe { std::ptr::write_bytes(fifth as *mut u8, 9, 1000) };
        ring.ringbuf_commit(fifth, true).unwrap();
        assert_eq!(ring.ringbuf_pending(), 1000);
        assert_eq!(ring.ringbuf_drain(), Ok(vec![]), "the fourth, still reserved, is first");
        ring.ringbuf_commit(fourth, true).unwrap();
        let records = ring.ringbuf_drain().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], vec![9; 1000]);
    }

    #[test]
    fn an_unsupported_type_names_the_instruction_that_loads_it() {
        use crate::isa::{Insn, LDDW, LDDW_MAP_FD};
        let lddw = Insn { opc: LDDW, dst: 1, src: LDDW_MAP_FD, off: 0, imm: 0 };
        let image = Image {
            insns: vec![Insn { opc: LDDW, ..Insn::default() }, Insn::default(), lddw, Insn::default()],
            maps: vec![MapDef { map_type: 12, ..def(MapType::Array, 4, 4, 4, 0) }],
            ..Image::default()
        };
        let error = create_for(&image, &[]).unwrap_err();
        assert!(matches!(error, MapError::UnsupportedType { map_type: 12, used_at: Some(2), .. }), "{error}");
        assert!(error.to_string().ends_with("; instruction 2 loads it"), "{error}");
    }

    #[test]
    fn perf_event_array_keeps_records_in_order_until_full() {
        let unsized_slots = MapDef { max_entries: 0, ..def(MapType::PerfEventArray, 4, 4, 0, 0) };
        let perf = Map::new(unsized_slots).unwrap();
        assert_eq!(perf.def().max_entries as usize, cpus::count(), "a slot per possible CPU, as libbpf makes it");
        assert!(perf.region().is_none() && perf.keys().is_empty());
        perf.perf_event_output(0, vec![1; 10]).unwrap();
        perf.perf_event_output(0, vec![2; 3]).unwrap();
        assert_eq!(perf.perf_event_output(cpus::count() as u64, vec![3]), Err(MapOpError::Full));
        assert_eq!(perf.ringbuf_next_within(5), Ok(Some(Err(10))));
        assert_eq!(perf.ringbuf_drain(), Ok(vec![vec![1; 10], vec![2; 3]]));
        perf.perf_event_output(0, vec![0; PERF_EVENT_BYTES]).unwrap();
        assert_eq!(perf.perf_event_output(0, vec![0]).map_err(MapOpError::errno), Err(libc::ENOSPC));
    }

    #[test]
    fn concurrent_updates_from_threads() {
        let hash = Arc::new(map(MapType::Hash, 4, 8, 1024, 0));
        let threads: Vec<_> = (0..4u32)
            .map(|thread| {
                let hash = hash.clone();
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        let key = (thread * 1000 + i).to_ne_bytes();
                        hash.update(&key, &u64::from(i).to_ne_bytes(), BPF_ANY).unwrap();
                        if i % 2 == 0 {
                            hash.delete(&key).unwrap();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(hash.keys().len(), 400);
        assert_eq!(hash.lookup(&1003u32.to_ne_bytes()), Ok(Some(3u64.to_ne_bytes().to_vec())));
    }
}
