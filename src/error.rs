//! Typed errors, one enum per stage; every error carries its place: the
//! instruction index, the section, or the line.

use crate::image::MapType;
use crate::isa::Insn;

/// Why a program was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Index of the offending instruction slot.
    pub pc: usize,
    /// The instruction itself (zeroed when the program has no slot there).
    pub insn: Insn,
    pub kind: LoadErrorKind,
}

impl std::error::Error for LoadError {}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind.is_about_length() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "instruction {} ({}): {}", self.pc, crate::disasm::describe(&self.insn), self.kind)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("the program is empty")]
    Empty,
    #[error("the program is {0} bytes long, not a multiple of 8")]
    PartialSlot(usize),
    #[error("the program has {0} instructions, more than the limit of 65536")]
    TooLong(usize),
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("field {field} is {value}, which this instruction does not allow")]
    InvalidField { field: &'static str, value: i64 },
    #[error("register r{0} does not exist")]
    BadRegister(u8),
    #[error("r10 is the read-only frame pointer")]
    WriteToR10,
    #[error("jump to instruction {target}, outside the program")]
    JumpOutOfRange { target: i64 },
    #[error("jump to instruction {target}, the second half of an lddw")]
    JumpIntoLddw { target: usize },
    #[error("lddw is cut off by the end of the program")]
    LddwTruncated,
    #[error("second half of lddw has nonzero fields other than imm")]
    BadLddwTail,
    #[error("execution can run past the last instruction")]
    FallsOffEnd,
    #[error("local call to instruction {target}, which is not the start of a function")]
    CallToNonFunction { target: i64 },
    #[error("call to helper {0}, which is not registered")]
    UnknownHelper(u32),
    #[error("lddw with src {0} (a BTF id or a function address) is not supported")]
    UnsupportedLddw(u8),
    #[error("{0}")]
    Map(MapError),
    #[error("lddw names map {index}, but the program has {maps} maps")]
    NoSuchMap { index: i64, maps: usize },
    #[error("lddw of map {map} value at offset {offset}, which is not inside an array map's first value")]
    BadMapValue { map: String, offset: i64 },
    #[error("function at instruction {target} is not entered by a local call nor the entry")]
    CrossesFunction { target: usize },
    #[error("endless loop: {} can never reach an exit", pc_list(.pcs))]
    EndlessLoop {
        /// The loop's instructions, ascending.
        pcs: Vec<usize>,
    },
    #[error("invalid bpf_context access off={off} size={size}")]
    ContextAccess { off: i16, size: usize },
    #[error("r{reg} may or may not be the context here: a context access needs the context pointer itself")]
    ContextAmbiguous { reg: u8 },
    #[error("dereference of modified ctx ptr r{reg}")]
    ContextModified { reg: u8 },
    #[error("helper {helper} ({}) does not apply to {program_type} programs", crate::helpers::linux::name(*.helper))]
    HelperNotForType { helper: u32, program_type: &'static str },
    #[error("{0}")]
    ProgramType(String),
}

impl LoadErrorKind {
    /// Is this about the program's length, which no one instruction is to
    /// blame for?
    pub fn is_about_length(&self) -> bool {
        matches!(self, LoadErrorKind::Empty | LoadErrorKind::PartialSlot(_) | LoadErrorKind::TooLong(_))
    }
}

/// Ascending instruction indices as ranges: `instructions 3-5, 9`.
fn pc_list(pcs: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &pc in pcs {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == pc => *last = pc,
            _ => ranges.push((pc, pc)),
        }
    }
    let range = |&(first, last): &(usize, usize)| {
        if first == last { first.to_string() } else { format!("{first}-{last}") }
    };
    let noun = if pcs.len() == 1 { "instruction" } else { "instructions" };
    format!("{noun} {}", ranges.iter().map(range).collect::<Vec<_>>().join(", "))
}

/// Why a running program was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction {pc} ({insn}): {kind}", insn = crate::disasm::describe(.insn))]
pub struct ExecError {
    pub pc: usize,
    pub insn: Insn,
    pub kind: ExecErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecErrorKind {
    #[error("{} of {size} bytes at {addr:#x} is outside every readable region", if *.write { "store" } else { "load" })]
    OutOfBounds { addr: u64, size: usize, write: bool },
    #[error("{size}-byte store at {addr:#x} hits a read-only region")]
    ReadOnly { addr: u64, size: usize },
    #[error("call to helper {0}, which is not registered")]
    UnknownHelper(u64),
    #[error("instruction budget of {0} exhausted")]
    BudgetExhausted(u64),
    #[error("local call would need more than {0} stack frames")]
    CallDepthExceeded(usize),
    #[error("helper {helper} ({}): r1 = {value:#x} is not one of the program's maps", crate::helpers::linux::name(*.helper))]
    NotAMap { helper: u32, value: u64 },
    #[error(
        "helper {helper} ({}): {size} bytes at {addr:#x} are outside the memory the program may {}",
        crate::helpers::linux::name(*.helper),
        if *.write { "write" } else { "read" }
    )]
    HelperMemory { helper: u32, addr: u64, size: u64, write: bool },
    #[error("helper {helper} ({}): {what}", crate::helpers::linux::name(*.helper))]
    HelperArgument { helper: u32, what: String },
    #[error("helper {helper} ({}): {addr:#x} is not a record this run reserved", crate::helpers::linux::name(*.helper))]
    NotARecord { helper: u32, addr: u64 },
    #[error("the XDP context's packet pointer {value:#x} lies outside the packet's page, past the context block")]
    BadPacketPointer { value: u64 },
    #[error("an XDP run's buffer of {len} bytes cannot hold its 48-byte context block")]
    ShortContext { len: u64 },
}

/// Why a map could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "map {name}: type {map_type} is not supported (supported: {supported}){used}",
        supported = supported_map_types(),
        used = used_at.map(|pc| format!("; instruction {pc} loads it")).unwrap_or_default()
    )]
    /// `used_at`: the first instruction that loads the map, if any.
    UnsupportedType { name: String, map_type: u32, used_at: Option<usize> },
    #[error("map {name}: {field} is {value}, but {rule}")]
    BadField { name: String, field: &'static str, value: u64, rule: &'static str },
    #[error("map {name}: flags {flags:#x} are not valid for a {map_type} map")]
    BadFlags { name: String, flags: u32, map_type: &'static str },
    #[error("map {name}: {bytes} bytes of storage, more than the limit of {}", crate::image::MAX_MAP_BYTES)]
    TooLarge { name: String, bytes: u64 },
}

/// Why an ELF object could not be turned into a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF object: {0}")]
    NotElf(String),
    #[error("ELF header: {field} is {value}, {}", field.wanted())]
    BadHeader { field: HeaderField, value: u64 },
    #[error("section {section}: sh_type is {sh_type}, but a program section must be SHT_PROGBITS (1)")]
    BadProgramSectionType { section: String, sh_type: u32 },
    #[error("section {section}: {what}")]
    BadSection { section: String, what: String },
    #[error("sections {first} and {second} overlap in the file")]
    Overlap { first: String, second: String },
    #[error("no program: the object has no executable section with code")]
    NoProgram,
    #[error("no function or section named {0:?}; the object has: {1}")]
    ProgramNotFound(String, String),
    #[error("section {section}, offset {offset:#x}: relocation against missing symbol {symbol}")]
    MissingSymbol { section: String, offset: u64, symbol: String },
    #[error("section {section}, offset {offset:#x}: unsupported relocation type {rtype} ({symbol})")]
    UnsupportedRelocation { section: String, offset: u64, rtype: u32, symbol: String },
    #[error("section {section}, offset {offset:#x}: {what}")]
    BadRelocation { section: String, offset: u64, what: String },
    #[error("section {section}, offset {offset:#x}: call to {name}, which is not a registered helper")]
    UnknownHelperName { section: String, offset: u64, name: String },
    #[error("{section}: {error}")]
    Load { section: String, error: LoadError },
    #[error("{0}")]
    Map(#[from] MapError),
    #[error("section {section}, map {map}: {what}")]
    BadMap { section: String, map: String, what: String },
    #[error("section .BTF, offset {offset:#x}: {what}")]
    BadBtf { offset: usize, what: String },
}

/// A field of the ELF header that the loader checks, as libbpf and
/// iovisor/ubpf check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    /// `e_ident[EI_CLASS]`: 32 or 64 bits.
    Class,
    /// `e_ident[EI_DATA]`: byte order.
    Data,
    /// `e_ident[EI_VERSION]`.
    Version,
    /// `e_ident[EI_OSABI]`.
    OsAbi,
    /// `e_type`: relocatable, executable, shared or core.
    Type,
    /// `e_machine`.
    Machine,
}

impl HeaderField {
    /// What the loader takes, as the end of a sentence.
    fn wanted(self) -> &'static str {
        match self {
            HeaderField::Class => "not ELFCLASS64 (2): BPF objects are ELF64",
            HeaderField::Data => "not ELFDATA2LSB (1): only little-endian BPF is supported",
            HeaderField::Version => "not EV_CURRENT (1)",
            HeaderField::OsAbi => "neither ELFOSABI_NONE (0) nor ELFOSABI_LINUX (3)",
            HeaderField::Type => "not ET_REL (1): only relocatable objects (clang -c) are loaded",
            HeaderField::Machine => "neither EM_BPF (247) nor EM_NONE (0)",
        }
    }
}

impl std::fmt::Display for HeaderField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderField::Class => "EI_CLASS",
            HeaderField::Data => "EI_DATA",
            HeaderField::Version => "EI_VERSION",
            HeaderField::OsAbi => "EI_OSABI",
            HeaderField::Type => "e_type",
            HeaderField::Machine => "e_machine",
        })
    }
}

/// A line of assembly that could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct AsmError {
    /// The 1-based line at fault.
    pub line: usize,
    pub kind: AsmErrorKind,
}

/// What is wrong with a line of assembly; the text at fault is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsmErrorKind {
    #[error("`{0}` is not a valid label name")]
    BadLabelName(String),
    #[error("label `{name}` is already defined on line {first}")]
    DuplicateLabel { name: String, first: usize },
    #[error("undefined label `{0}`")]
    UndefinedLabel(String),
    #[error("jump offset {0} is out of range for its field")]
    JumpOutOfRange(i128),
    #[error("unknown mnemonic `{0}`")]
    UnknownMnemonic(String),
    #[error("`{mnemonic}` takes {} operand(s), not {given}", join(.takes, " or "))]
    OperandCount { mnemonic: String, takes: Vec<usize>, given: usize },
    #[error("`{mnemonic}` takes `{}`", join(.shapes, "` or `"))]
    OperandShape { mnemonic: String, shapes: Vec<&'static str> },
    #[error("missing operand")]
    MissingOperand,
    #[error("`{0}` is not a register")]
    NotARegister(String),
    #[error("there is no register r{0} (registers are r0..r10)")]
    NoSuchRegister(String),
    #[error("`{0}` is not a memory operand like [%r1+4]")]
    NotAMemoryOperand(String),
    #[error("`{0}` is neither a label nor a relative offset like +2")]
    NotATarget(String),
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("`{0}` is out of range")]
    NumberTooLarge(String),
    #[error("`{text}` is out of range for a {bits}-bit immediate")]
    ImmediateOutOfRange { text: String, bits: u32 },
    #[error("`{0}` is out of range for a 16-bit offset")]
    OffsetOutOfRange(String),
    #[error("`.insn` wants key=value fields, not `{0}`")]
    RawNotKeyValue(String),
    #[error("`.insn` field `{0}` given twice")]
    RawFieldTwice(String),
    #[error("`.insn` has no field `{0}` (opc, dst, src, off, imm)")]
    RawNoSuchField(String),
    #[error("`.insn` field {field}={value} is out of range")]
    RawFieldOutOfRange { field: String, value: String },
}

fn join<T: std::fmt::Display>(items: &[T], separator: &str) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(separator)
}

/// Any error of the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Asm(#[from] AsmError),
}

/// The names of the map types this runtime creates, for messages.
fn supported_map_types() -> String {
    MapType::ALL.iter().map(|map_type| map_type.name()).collect::<Vec<_>>().join(", ")
}
