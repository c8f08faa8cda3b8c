//! A program image: code, global data and declared maps as a loader
//! produces them, before anything is placed in memory or verified; the
//! memory regions a program may be given; and the limits on all of these.
//! Plain values only: every stage above reads them, this reads nothing
//! but the instruction set.

use crate::isa::Insn;

/// Helper indices at or above this are never callable; it bounds the dense
/// table that makes a helper call one indexed load.
pub const MAX_HELPER_INDEX: u32 = 65536;

/// Instructions a run may execute unless the embedder says otherwise.
pub const DEFAULT_INSTRUCTION_LIMIT: u64 = 10_000_000;

/// A range of host memory a program may access, `[start, start + len)`;
/// with a `stride`, only the first `value_size` bytes of every `stride`
/// bytes from `start` (a map's values, each in its own slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub writable: bool,
    /// 0 for one span; otherwise a power of two, the distance between
    /// slots.
    pub stride: u64,
    /// With a stride: how many bytes at the start of each slot an access
    /// may touch.
    pub value_size: u64,
}

impl Region {
    /// Does `[addr, addr + size)` lie inside this region (and inside one
    /// slot of it)?
    #[inline(always)]
    pub fn contains(&self, addr: u64, size: u64) -> bool {
        let offset = addr.wrapping_sub(self.start);
        offset <= self.len.saturating_sub(size)
            && size <= self.len
            && (self.stride == 0 || (offset & (self.stride - 1)) + size <= self.value_size)
    }

    /// Can some access of `size` bytes lie inside this region?
    pub fn fits(&self, size: u64) -> bool {
        self.len >= size && (self.stride == 0 || self.value_size >= size)
    }
}

/// A global data section (`.rodata`, `.data`, `.bss`) as the loader found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSection {
    pub name: String,
    pub bytes: Vec<u8>,
    pub writable: bool,
}

/// An `lddw` at `pc` that must load the address of `data[section] + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataReloc {
    pub pc: usize,
    pub section: usize,
    pub offset: u64,
}

/// Code and data before they are placed in memory and verified: what the ELF
/// loader produces, or plain bytecode with no data.
///
/// An `lddw` whose src names a map ([`isa::lddw_names_map`]: by fd or by
/// index, both meaning index `imm` of `maps`) loads the map's handle, or
/// for the `_VALUE` forms the address of that array map's first value plus
/// the second half's imm.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub insns: Vec<Insn>,
    pub data: Vec<DataSection>,
    pub data_relocs: Vec<DataReloc>,
    pub maps: Vec<MapDef>,
}

/// Largest key or value a map may declare; the kernel's limit for values
/// (`KMALLOC_MAX_SIZE`-bound) is larger, but a packet filter needs far less.
pub const MAX_KEY_SIZE: u32 = 512;
pub const MAX_VALUE_SIZE: u32 = 1 << 20;
/// Most bytes one map's storage may take, so that a hostile object cannot
/// make the loader allocate without bound.
pub const MAX_MAP_BYTES: u64 = 1 << 30;
/// Most slots of a prog array (allocated up front, unlike values): far more
/// than a dispatcher needs.
pub const MAX_PROG_ARRAY_ENTRIES: u32 = 1 << 16;

/// Map types, numbered as Linux's `enum bpf_map_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerfEventArray = 4,
    PerCpuHash = 5,
    PerCpuArray = 6,
    LruHash = 9,
    LruPerCpuHash = 10,
    LpmTrie = 11,
    DevMap = 14,
    CpuMap = 16,
    XskMap = 17,
    Queue = 22,
    Stack = 23,
    DevMapHash = 25,
    RingBuf = 27,
}

impl MapType {
    /// Every supported type, in Linux's order.
    pub const ALL: [MapType; 16] = [
        MapType::Hash,
        MapType::Array,
        MapType::ProgArray,
        MapType::PerfEventArray,
        MapType::PerCpuHash,
        MapType::PerCpuArray,
        MapType::LruHash,
        MapType::LruPerCpuHash,
        MapType::LpmTrie,
        MapType::DevMap,
        MapType::CpuMap,
        MapType::XskMap,
        MapType::Queue,
        MapType::Stack,
        MapType::DevMapHash,
        MapType::RingBuf,
    ];

    pub fn from_linux(number: u32) -> Option<MapType> {
        MapType::ALL.into_iter().find(|map_type| *map_type as u32 == number)
    }

    /// The name libbpf and bpftool use (`BPF_MAP_TYPE_` less the prefix,
    /// lower case).
    pub fn name(self) -> &'static str {
        match self {
            MapType::Hash => "hash",
            MapType::Array => "array",
            MapType::ProgArray => "prog_array",
            MapType::PerfEventArray => "perf_event_array",
            MapType::PerCpuHash => "percpu_hash",
            MapType::PerCpuArray => "percpu_array",
            MapType::LruHash => "lru_hash",
            MapType::LruPerCpuHash => "lru_percpu_hash",
            MapType::LpmTrie => "lpm_trie",
            MapType::DevMap => "devmap",
            MapType::CpuMap => "cpumap",
            MapType::XskMap => "xskmap",
            MapType::Queue => "queue",
            MapType::Stack => "stack",
            MapType::DevMapHash => "devmap_hash",
            MapType::RingBuf => "ringbuf",
        }
    }

    /// Does the map keep one value per possible CPU?
    pub fn is_per_cpu(self) -> bool {
        matches!(self, MapType::PerCpuHash | MapType::PerCpuArray | MapType::LruPerCpuHash)
    }

    /// Is the map a target of `bpf_redirect_map`?
    pub fn is_redirect_target(self) -> bool {
        matches!(self, MapType::DevMap | MapType::DevMapHash | MapType::CpuMap | MapType::XskMap)
    }
}

/// A map as an object declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    /// Linux's map type number (`BPF_MAP_TYPE_*`).
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// Prog array slots the object fills statically (`.values = {...}` in
    /// `.maps`): slot index and function name.
    pub initial_programs: Vec<(u32, String)>,
}

impl MapDef {
    /// Do both define the same kind of map: type, key and value sizes,
    /// max_entries and flags (the name aside)?
    pub fn same_shape(&self, other: &MapDef) -> bool {
        (self.map_type, self.key_size, self.value_size, self.max_entries, self.flags)
            == (other.map_type, other.key_size, other.value_size, other.max_entries, other.flags)
    }
}

/// What a program is written for: what r1 holds on entry and what its
/// return value means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgramType {
    /// r1 = the packet, r2 = its length; a non-zero return drops it.
    #[default]
    Filter,
    /// Linux's XDP: r1 = a `struct xdp_md`, the return value an XDP action.
    Xdp,
}

impl ProgramType {
    /// The type libbpf gives a program in ELF section `section`: `xdp` and
    /// `xdp/...` are XDP, everything else a filter. Multi-buffer programs
    /// (`xdp.frags...`) and devmap/cpumap programs, which the kernel runs
    /// only from a map, are refused: the reason is the error.
    pub fn of_section(section: &str) -> Result<ProgramType, String> {
        if section.starts_with("xdp.frags") {
            return Err(format!("section {section}: multi-buffer XDP programs are not supported"));
        }
        if section.starts_with("xdp/devmap") || section.starts_with("xdp/cpumap") {
            return Err(format!("section {section}: XDP programs run from a devmap or cpumap are not supported"));
        }
        Ok(if section == "xdp" || section.starts_with("xdp/") { ProgramType::Xdp } else { ProgramType::Filter })
    }

    pub fn name(self) -> &'static str {
        match self {
            ProgramType::Filter => "filter",
            ProgramType::Xdp => "xdp",
        }
    }

    pub fn from_name(name: &str) -> Option<ProgramType> {
        [ProgramType::Filter, ProgramType::Xdp].into_iter().find(|kind| kind.name() == name)
    }
}

/// The layout of the block r1 points to in an XDP run. It keeps Linux's
/// `struct xdp_md` 32-bit fields where they are, and the packet pointers
/// as 64-bit addresses after them: the loader rewrites the program's 32-bit
/// loads of `data`, `data_end` and `data_meta` into 64-bit loads of these,
/// as the kernel's context conversion does, so that both engines see plain
/// loads from their input.
pub mod xdp_context {
    /// Size of Linux's `struct xdp_md`, the only offsets a program may read.
    pub const XDP_MD_SIZE: i16 = 24;
    /// `struct xdp_md` offsets of the fields.
    pub const MD_DATA: i16 = 0;
    pub const MD_DATA_END: i16 = 4;
    pub const MD_DATA_META: i16 = 8;
    pub const MD_INGRESS_IFINDEX: i16 = 12;
    pub const MD_RX_QUEUE_INDEX: i16 = 16;
    pub const MD_EGRESS_IFINDEX: i16 = 20;
    /// Where the block keeps the packet pointers (64-bit addresses).
    pub const DATA: i16 = 24;
    pub const DATA_END: i16 = 32;
    pub const DATA_META: i16 = 40;
    /// Where `bpf_redirect` and `bpf_redirect_map` record their target in
    /// the block (bytes the program cannot name, `xdp_md`'s `data` and
    /// `data_end` being rewritten): the target, then what it is
    /// ([`REDIRECT_DEVICE`], [`REDIRECT_CPU`], or 0 for none).
    pub const REDIRECT_TARGET: usize = 0;
    pub const REDIRECT_SET: usize = 4;
    /// The target is an ifindex (`bpf_redirect`, a devmap's entry).
    pub const REDIRECT_DEVICE: u32 = 1;
    /// The target is a CPU's number (a cpumap's entry).
    pub const REDIRECT_CPU: u32 = 2;
    /// Bytes of the block.
    pub const SIZE: usize = 48;
    /// The `imm` of a context load, what every load through the context
    /// pointer becomes (a load's `imm` is otherwise 0). The block lies
    /// before the memory an XDP program may otherwise access
    /// ([`crate::memory::accessible_input`]): only these loads read it, and
    /// they fault unless their base register holds the block's address. So
    /// no store of the program changes the packet pointers the block holds,
    /// which the run checks on entry ([`crate::memory::context_fault`]), and
    /// a packet pointer loaded from it lies in the page, its end included:
    /// the accesses guarded by comparisons with it are proved at compile
    /// time.
    pub const CONTEXT_LOAD: i32 = 1;

    /// The block offset a program's 4-byte load at `struct xdp_md` offset
    /// `off` reads, with its size in bytes; `None` when the kernel refuses
    /// the load in a plain XDP program.
    pub fn load(off: i16, size: usize) -> Option<(i16, usize)> {
        match (off, size) {
            (MD_DATA, 4) => Some((DATA, 8)),
            (MD_DATA_END, 4) => Some((DATA_END, 8)),
            (MD_DATA_META, 4) => Some((DATA_META, 8)),
            (MD_INGRESS_IFINDEX | MD_RX_QUEUE_INDEX, 4) => Some((off, 4)),
            _ => None,
        }
    }
}
