//! The ELF loader: turns a clang `-target bpf` relocatable object into an
//! [`Image`]. It checks the file, picks a program, and links the program's
//! entry function with every function it calls into one instruction array,
//! resolving helper names and the addresses of global data (`.rodata*`,
//! `.data*`, `.bss*`).
//!
//! Every offset, size and index in the file is untrusted: each is checked
//! before use, so a malformed object gives an [`ElfError`], never a panic.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::{
    EI_CLASS, EI_DATA, EI_OSABI, EI_VERSION, ELFCLASS64, ELFDATA2LSB, ELFMAG, ELFOSABI_LINUX, ELFOSABI_NONE, EM_BPF,
    EM_NONE, ET_REL, EV_CURRENT,
};
use goblin::elf::section_header::{SHF_EXECINSTR, SHN_UNDEF, SHT_NOBITS, SHT_PROGBITS, SHT_REL, SHT_RELA, SHT_SYMTAB};
use goblin::elf::sym::{STB_GLOBAL, STB_WEAK, STT_FUNC, STT_SECTION, st_bind, st_type};
use goblin::elf::{Elf, Header, RelocSection, SectionHeader, Symtab};
use goblin::elf64::header::SIZEOF_EHDR;
use goblin::elf64::reloc::{SIZEOF_REL, SIZEOF_RELA};
use goblin::elf64::section_header::SIZEOF_SHDR;
use goblin::elf64::sym::SIZEOF_SYM;

use crate::error::{ElfError, HeaderField};
use crate::helpers::Helpers;
use crate::image::{DataReloc, DataSection, Image, MapDef, MapType};
use crate::isa::{self, INSN_SIZE, Insn};

mod btf;

/// Smallest legacy `struct bpf_map_def`: type, key_size, value_size and
/// max_entries (u32 each); map_flags follows when the definitions are 20
/// bytes or more. As libbpf, the size of one is the section's size over
/// the number of maps in it.
const MIN_MAP_DEF_SIZE: u64 = 16;

// BPF relocation types. Older LLVM numbered R_BPF_64_32 (calls) 2, today's
// R_BPF_64_ABS64 (data); the instruction relocated tells which is meant.
const R_BPF_NONE: u32 = 0;
const R_BPF_64_64: u32 = 1;
const R_BPF_64_32: u32 = 10;
const R_BPF_64_32_OLD: u32 = 2;

/// Most bytes one `.bss` section may ask for: its size costs nothing in the
/// file but is allocated at load.
const MAX_ZEROED_SIZE: u64 = 64 << 20;

const SECTION_HEADER_TABLE: &str = "section header table";

/// A program linked out of an object, and where its entry function is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linked {
    pub image: Image,
    /// Section of the entry function.
    pub section: String,
    /// Name of the entry function.
    pub function: String,
}

/// Parses `object` and links one program of it, picked by `name` as
/// [`ElfFile::link`] picks.
pub fn load(object: &[u8], name: Option<&str>, helpers: &Helpers) -> Result<Linked, ElfError> {
    ElfFile::parse(object)?.link(name, helpers)
}

/// What an object holds, for `qemu-ubpf inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Every function of the executable sections, by section then offset.
    pub functions: Vec<FunctionInfo>,
    /// Index in `functions` of the one [`load`] picks when given no name.
    pub default_function: Option<usize>,
    /// The global data sections, in the order [`load`] puts them in
    /// [`Image::data`].
    pub data: Vec<DataSection>,
    /// Relocations that apply to code, by section then offset.
    pub relocations: Vec<RelocationInfo>,
    /// Every call of a helper, by section then offset.
    pub helper_calls: Vec<HelperCall>,
    /// The maps the object declares, in `.maps` (BTF) or `maps` (legacy).
    pub maps: Vec<MapDef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    pub section: String,
    pub name: String,
    /// Byte offset in its section.
    pub offset: u64,
    /// Instruction slots (an `lddw` takes two).
    pub insns: usize,
    /// Global (`STB_GLOBAL` or `STB_WEAK`), as opposed to static.
    pub global: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelocationInfo {
    /// The code section the relocation applies to.
    pub section: String,
    /// Byte offset of the instruction in that section.
    pub offset: u64,
    pub rtype: u32,
    pub symbol: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperCall {
    pub section: String,
    /// Byte offset of the `call` in its section.
    pub offset: u64,
    pub helper: HelperRef,
}

/// How a call names its helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelperRef {
    /// `call imm`: the helper with this index.
    Index(i32),
    /// A call relocated against an undefined symbol, looked up by name in
    /// the embedder's [`Helpers`] at load time.
    Name(String),
}

/// Lists what `object` holds without linking any program.
pub fn inspect(object: &[u8]) -> Result<ObjectInfo, ElfError> {
    let object = ElfFile::parse(object)?;
    let functions = object
        .functions
        .iter()
        .map(|function| FunctionInfo {
            section: function.section_name.clone(),
            name: function.name.clone(),
            offset: byte_offset(function.start),
            insns: function.insns.len(),
            global: function.global,
        })
        .collect();
    let relocations = object
        .relocations
        .iter()
        .map(|(&(section, offset), relocation)| RelocationInfo {
            section: object.section_names.get(section).cloned().unwrap_or_default(),
            offset,
            rtype: relocation.rtype,
            symbol: object.symbol_name(relocation.symbol),
        })
        .collect();
    let mut helper_calls = Vec::new();
    for function in &object.functions {
        for (slot, insn) in function.insns.iter().enumerate().filter(|(_, insn)| insn.opc == isa::CALL) {
            let offset = byte_offset(function.start + slot);
            let helper = match object.relocations.get(&(function.section, offset)) {
                Some(relocation) => match object.symbols.get(relocation.symbol) {
                    Some(symbol) if symbol.is_undefined() => HelperRef::Name(symbol.name.clone()),
                    _ => continue,
                },
                None if insn.src == isa::CALL_HELPER => HelperRef::Index(insn.imm),
                None => continue,
            };
            helper_calls.push(HelperCall { section: function.section_name.clone(), offset, helper });
        }
    }
    Ok(ObjectInfo {
        functions,
        default_function: object.entry(None).ok(),
        data: object.data.iter().map(|(_, section)| section.clone()).collect(),
        relocations,
        helper_calls,
        maps: object.maps.iter().map(|map| map.def.clone()).collect(),
    })
}

/// A section whose contents have been checked to lie inside the file.
struct Section<'a> {
    name: String,
    header: SectionHeader,
    /// Its bytes in the file; empty for `SHT_NOBITS`.
    bytes: &'a [u8],
}

struct Symbol {
    /// For a section symbol, the section's name.
    name: String,
    kind: u8,
    global: bool,
    /// Index of the section that defines it; `SHN_UNDEF` when external.
    section: usize,
    value: u64,
}

impl Symbol {
    fn is_undefined(&self) -> bool {
        self.section == SHN_UNDEF as usize
    }
}

/// A map the object declares: where its definition is, and what it says.
struct ObjectMap {
    section: usize,
    /// Byte offset of its definition in the section.
    offset: u64,
    def: MapDef,
}

struct Relocation {
    rtype: u32,
    symbol: usize,
    /// A RELA entry's addend; REL entries keep theirs in the instruction.
    addend: Option<i64>,
}

/// A function: from its symbol to the next function of its section, or to
/// the section's end.
struct Function {
    name: String,
    section: usize,
    section_name: String,
    /// Its first instruction slot in the section.
    start: usize,
    insns: Vec<Insn>,
    global: bool,
}

/// An ELF file parsed and checked: the parts of it the loader uses. Parse
/// once, then link any number of its programs.
pub struct ElfFile {
    section_names: Vec<String>,
    symbols: Vec<Symbol>,
    /// By section index, then offset.
    functions: Vec<Function>,
    /// Relocations of code, by section index and byte offset.
    relocations: BTreeMap<(usize, u64), Relocation>,
    /// Global data sections with their section indices.
    data: Vec<(usize, DataSection)>,
    /// By section, then offset.
    maps: Vec<ObjectMap>,
}

impl ElfFile {
    pub fn parse(file: &[u8]) -> Result<ElfFile, ElfError> {
        check_ident(file)?;
        let header = Elf::parse_header(file).map_err(|error| ElfError::NotElf(error.to_string()))?;
        if header.e_type != ET_REL {
            return Err(ElfError::BadHeader { field: HeaderField::Type, value: header.e_type.into() });
        }
        // Old LLVM wrote EM_NONE; libbpf and iovisor/ubpf take it too.
        if !matches!(header.e_machine, EM_BPF | EM_NONE) {
            return Err(ElfError::BadHeader { field: HeaderField::Machine, value: header.e_machine.into() });
        }
        let sections = sections(file, &header)?;
        check_overlaps(&header, &sections)?;
        let (symtab, symbols) = symbols(&sections)?;
        let functions = functions(&sections, &symbols)?;
        let relocations = relocations(&sections, symtab, &functions)?;
        let data = data_sections(&sections)?;
        let maps = maps(&sections, symtab, &symbols)?;
        Ok(ElfFile {
            section_names: sections.into_iter().map(|section| section.name).collect(),
            symbols,
            functions,
            relocations,
            data,
            maps,
        })
    }

    /// One program linked with the functions it calls.
    ///
    /// `name` is a function (global or static) or a section; without it, the
    /// first global function, by section and offset, is the entry (the first
    /// function when none is global). Data sections all go into the image.
    pub fn link(&self, name: Option<&str>, helpers: &Helpers) -> Result<Linked, ElfError> {
        let entry = self.entry(name)?;
        self.link_function(entry, helpers)
    }

    /// Every program of the file (its global functions outside `.text`, in
    /// section and offset order), each linked with the functions it calls.
    /// Their images share the file's maps and data, with the same indices.
    pub fn programs(&self, helpers: &Helpers) -> Result<Vec<Linked>, ElfError> {
        let programs = self.functions.iter().enumerate();
        let programs = programs.filter(|(_, function)| function.global && function.section_name != ".text");
        programs.map(|(index, _)| self.link_function(index, helpers)).collect()
    }

    fn entry(&self, name: Option<&str>) -> Result<usize, ElfError> {
        if self.functions.is_empty() {
            return Err(ElfError::NoProgram);
        }
        let Some(name) = name else {
            return Ok(self.functions.iter().position(|function| function.global).unwrap_or(0));
        };
        let by_function = || self.functions.iter().position(|function| function.name == name);
        let by_section = || {
            let in_section = self.functions.iter().enumerate().filter(|(_, function)| function.section_name == name);
            in_section.min_by_key(|(_, function)| (!function.global, function.start)).map(|(index, _)| index)
        };
        by_function().or_else(by_section).ok_or_else(|| {
            let available: Vec<String> = self
                .functions
                .iter()
                .map(|function| {
                    if function.name == function.section_name {
                        function.name.clone()
                    } else {
                        format!("{} (section {})", function.name, function.section_name)
                    }
                })
                .collect();
            ElfError::ProgramNotFound(name.to_owned(), available.join(", "))
        })
    }

    fn symbol_name(&self, index: usize) -> String {
        self.symbols.get(index).map_or_else(|| format!("#{index}"), |symbol| symbol.name.clone())
    }

    /// The function that starts `offset` bytes into section `section`.
    fn function_at(&self, section: usize, offset: u64) -> Option<usize> {
        self.functions.iter().position(|function| function.section == section && byte_offset(function.start) == offset)
    }

    /// Copies the entry and, in the order they are first called, the
    /// functions it reaches into one array, with calls and `lddw`s fixed up.
    fn link_function(&self, entry: usize, helpers: &Helpers) -> Result<Linked, ElfError> {
        let mut linker = Linker {
            object: self,
            helpers,
            order: Vec::new(),
            starts: HashMap::new(),
            len: 0,
            data_relocs: Vec::new(),
        };
        linker.start_of(entry);
        let mut insns = Vec::new();
        let mut next = 0;
        while let Some(&function) = linker.order.get(next) {
            next += 1;
            let function = &self.functions[function];
            for (slot, &insn) in function.insns.iter().enumerate() {
                let pc = insns.len();
                insns.push(linker.relocate(insn, function, slot, pc)?);
            }
        }
        let data = self.data.iter().map(|(_, section)| section.clone()).collect();
        let maps = self.maps.iter().map(|map| map.def.clone()).collect();
        let image = Image { insns, data, data_relocs: linker.data_relocs, maps };
        let function = &self.functions[entry];
        Ok(Linked { image, section: function.section_name.clone(), function: function.name.clone() })
    }
}

/// The state of linking one program.
struct Linker<'a> {
    object: &'a ElfFile,
    helpers: &'a Helpers,
    /// Functions placed so far, in the order first reached, and where each
    /// starts in the linked program.
    order: Vec<usize>,
    starts: HashMap<usize, usize>,
    len: usize,
    data_relocs: Vec<DataReloc>,
}

impl Linker<'_> {
    /// The linked pc of `function`, placing it after the others if new.
    fn start_of(&mut self, function: usize) -> usize {
        if let Some(&start) = self.starts.get(&function) {
            return start;
        }
        let start = self.len;
        self.len += self.object.functions.get(function).map_or(0, |function| function.insns.len());
        self.starts.insert(function, start);
        self.order.push(function);
        start
    }

    /// The imm of a call at `pc` to `callee`.
    fn call_imm(&mut self, pc: usize, callee: usize) -> Option<i32> {
        let target = self.start_of(callee);
        i32::try_from(i64::try_from(target).ok()? - i64::try_from(pc).ok()? - 1).ok()
    }

    /// The instruction at `slot` of `function`, as it must be at `pc` of the
    /// linked program.
    fn relocate(&mut self, mut insn: Insn, function: &Function, slot: usize, pc: usize) -> Result<Insn, ElfError> {
        let object = self.object;
        let offset = byte_offset(function.start + slot);
        let section = || function.section_name.clone();
        let bad = |what: String| ElfError::BadRelocation { section: section(), offset, what };
        let Some(relocation) = object.relocations.get(&(function.section, offset)) else {
            // clang resolves calls within one section itself, relative to
            // the section's layout, which linking changes.
            if insn.opc == isa::CALL && insn.src == isa::CALL_LOCAL {
                // Slots are bounded by the file's size, far from overflowing.
                let target = (function.start + slot) as i64 + i64::from(insn.imm) + 1;
                let own = function.start..function.start + function.insns.len();
                if !usize::try_from(target).is_ok_and(|target| own.contains(&target)) {
                    let callee = u64::try_from(target)
                        .ok()
                        .and_then(|target| object.function_at(function.section, target.checked_mul(INSN_SIZE as u64)?))
                        .ok_or_else(|| {
                            bad(format!("call to instruction {target} of the section, which starts no function"))
                        })?;
                    insn.imm = self.call_imm(pc, callee).ok_or_else(|| bad("call too far".into()))?;
                }
            }
            return Ok(insn);
        };
        let symbol = object.symbols.get(relocation.symbol).ok_or_else(|| ElfError::MissingSymbol {
            section: section(),
            offset,
            symbol: format!("#{}", relocation.symbol),
        })?;
        match (insn.opc, relocation.rtype) {
            (isa::LDDW, R_BPF_64_64) => {
                let addend = relocation.addend.unwrap_or(i64::from(insn.imm));
                let target_section = object.section_names.get(symbol.section).filter(|_| !symbol.is_undefined());
                let target_section = target_section.ok_or_else(|| ElfError::MissingSymbol {
                    section: section(),
                    offset,
                    symbol: symbol.name.clone(),
                })?;
                if is_map_section(target_section) {
                    let offset = symbol.value.checked_add_signed(addend);
                    let map =
                        object.maps.iter().position(|map| map.section == symbol.section && Some(map.offset) == offset);
                    let map = map.ok_or_else(|| bad(format!("lddw of {}{addend:+}, which is no map", symbol.name)))?;
                    // The map's handle, imm its index in `Image::maps`.
                    insn.src = isa::LDDW_MAP_FD;
                    insn.imm = i32::try_from(map).map_err(|_| bad("too many maps".into()))?;
                    return Ok(insn);
                }
                let data = object.data.iter().position(|(index, _)| *index == symbol.section).ok_or_else(|| {
                    bad(format!("lddw of {} in {target_section}, which is not a data section", symbol.name))
                })?;
                let offset = symbol
                    .value
                    .checked_add_signed(addend)
                    .ok_or_else(|| bad(format!("lddw of {}{addend:+}: the offset overflows", symbol.name)))?;
                // The kernel refuses a direct value address past the value
                // (`off >= value_size`); such a pointer would name whatever
                // memory follows the section.
                let size = object.data[data].1.bytes.len();
                if usize::try_from(offset).map_or(true, |offset| offset >= size) {
                    return Err(bad(format!(
                        "lddw of {}{addend:+}: offset {offset} is outside {target_section} ({size} bytes)",
                        symbol.name
                    )));
                }
                self.data_relocs.push(DataReloc { pc, section: data, offset });
                insn.imm = 0;
            }
            (isa::CALL, R_BPF_64_32 | R_BPF_64_32_OLD) if symbol.is_undefined() => {
                let index = self.helpers.index_of(&symbol.name).ok_or_else(|| ElfError::UnknownHelperName {
                    section: section(),
                    offset,
                    name: symbol.name.clone(),
                })?;
                insn.src = isa::CALL_HELPER;
                insn.imm =
                    i32::try_from(index).map_err(|_| bad(format!("helper index {index} does not fit in imm")))?;
            }
            (isa::CALL, R_BPF_64_32 | R_BPF_64_32_OLD) => {
                // The callee is at symbol + addend; REL keeps the addend in
                // imm as the call would be written: addend / 8 - 1.
                let addend = relocation.addend.unwrap_or((i64::from(insn.imm) + 1) * INSN_SIZE as i64);
                let callee = symbol
                    .value
                    .checked_add_signed(addend)
                    .and_then(|target| object.function_at(symbol.section, target))
                    .ok_or_else(|| bad(format!("call to {}{addend:+}, which starts no function", symbol.name)))?;
                insn.src = isa::CALL_LOCAL;
                insn.imm = self.call_imm(pc, callee).ok_or_else(|| bad("call too far".into()))?;
            }
            (_, rtype) => {
                return Err(ElfError::UnsupportedRelocation {
                    section: section(),
                    offset,
                    rtype,
                    symbol: symbol.name.clone(),
                });
            }
        }
        Ok(insn)
    }
}

fn byte_offset(slot: usize) -> u64 {
    slot as u64 * INSN_SIZE as u64
}

fn ctx() -> Ctx {
    Ctx::new(Container::Big, Endian::Little)
}

/// The identification bytes, checked first so that a 32-bit or big-endian
/// object is named as such rather than misread.
fn check_ident(file: &[u8]) -> Result<(), ElfError> {
    if !file.starts_with(ELFMAG) {
        return Err(ElfError::NotElf("the file does not start with \\x7fELF".into()));
    }
    let wanted: [(usize, HeaderField, &[u8]); 4] = [
        (EI_CLASS, HeaderField::Class, &[ELFCLASS64]),
        (EI_DATA, HeaderField::Data, &[ELFDATA2LSB]),
        (EI_VERSION, HeaderField::Version, &[EV_CURRENT]),
        (EI_OSABI, HeaderField::OsAbi, &[ELFOSABI_NONE, ELFOSABI_LINUX]),
    ];
    for (at, field, values) in wanted {
        let Some(&value) = file.get(at) else {
            return Err(ElfError::NotElf(format!("the file ends after {} bytes, within the ELF header", file.len())));
        };
        if !values.contains(&value) {
            return Err(ElfError::BadHeader { field, value: value.into() });
        }
    }
    Ok(())
}

/// The range of `size` bytes at `offset`, if the file holds them all.
fn file_range(file: &[u8], offset: u64, size: u64) -> Option<Range<usize>> {
    let end = offset.checked_add(size).filter(|&end| end <= file.len() as u64)?;
    Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
}

fn past_end(file: &[u8], offset: u64, size: u64) -> String {
    format!("{size} bytes at offset {offset:#x} run past the end of the file ({} bytes)", file.len())
}

/// The NUL-terminated string at `offset` of a string table.
fn string_at(table: &[u8], offset: usize) -> Option<String> {
    let tail = table.get(offset..)?;
    let (text, _) = tail.split_at(tail.iter().position(|&byte| byte == 0)?);
    Some(String::from_utf8_lossy(text).into_owned())
}

fn contents<'a>(file: &'a [u8], header: &SectionHeader) -> Option<&'a [u8]> {
    if header.sh_type == SHT_NOBITS {
        return Some(&[]);
    }
    file.get(file_range(file, header.sh_offset, header.sh_size)?)
}

/// Reads the section headers and names, and finds each section's contents.
fn sections<'a>(file: &'a [u8], header: &Header) -> Result<Vec<Section<'a>>, ElfError> {
    // Extended numbering (e_shnum 0) is for more than 65279 sections, which
    // no BPF object has.
    if header.e_shnum == 0 {
        return Ok(Vec::new());
    }
    let table_error = |what: String| ElfError::BadSection { section: SECTION_HEADER_TABLE.into(), what };
    if usize::from(header.e_shentsize) != SIZEOF_SHDR {
        return Err(table_error(format!("entries are {} bytes, not {SIZEOF_SHDR}", header.e_shentsize)));
    }
    let table_size = u64::from(header.e_shnum) * SIZEOF_SHDR as u64;
    let table = file_range(file, header.e_shoff, table_size)
        .ok_or_else(|| table_error(past_end(file, header.e_shoff, table_size)))?;
    let headers = SectionHeader::parse(file, table.start, usize::from(header.e_shnum), ctx())
        .map_err(|error| table_error(error.to_string()))?;

    let names_index = usize::from(header.e_shstrndx);
    let names_error = |what: String| ElfError::BadSection { section: "section name table".into(), what };
    let names = headers.get(names_index).ok_or_else(|| names_error(format!("index {names_index} is not a section")))?;
    let names = contents(file, names).ok_or_else(|| names_error(past_end(file, names.sh_offset, names.sh_size)))?;

    let mut sections = Vec::with_capacity(headers.len());
    for (index, header) in headers.into_iter().enumerate() {
        let name = string_at(names, header.sh_name).ok_or_else(|| ElfError::BadSection {
            section: format!("#{index}"),
            what: format!("name offset {} is outside the section name table", header.sh_name),
        })?;
        let bytes = contents(file, &header).ok_or_else(|| ElfError::BadSection {
            section: name.clone(),
            what: past_end(file, header.sh_offset, header.sh_size),
        })?;
        sections.push(Section { name, header, bytes });
    }
    Ok(sections)
}

/// Rejects parts of the file that share bytes: a crafted object could make
/// one section's contents double as another's.
fn check_overlaps(header: &Header, sections: &[Section]) -> Result<(), ElfError> {
    let mut extents = vec![(0, SIZEOF_EHDR as u64, "ELF header")];
    if header.e_shnum > 0 {
        let table_size = u64::from(header.e_shnum) * SIZEOF_SHDR as u64;
        extents.push((header.e_shoff, header.e_shoff.saturating_add(table_size), SECTION_HEADER_TABLE));
    }
    for section in sections.iter().filter(|section| !section.bytes.is_empty()) {
        let start = section.header.sh_offset;
        extents.push((start, start.saturating_add(section.bytes.len() as u64), section.name.as_str()));
    }
    extents.sort_unstable();
    let mut furthest: Option<(u64, &str)> = None;
    for (start, end, name) in extents {
        match furthest {
            Some((furthest_end, first)) if start < furthest_end => {
                return Err(ElfError::Overlap { first: first.into(), second: name.into() });
            }
            Some((furthest_end, _)) if furthest_end >= end => {}
            _ => furthest = Some((end, name)),
        }
    }
    Ok(())
}

/// The symbol table's index and its symbols (none when it has no table).
fn symbols(sections: &[Section]) -> Result<(Option<usize>, Vec<Symbol>), ElfError> {
    let Some((index, table)) = sections.iter().enumerate().find(|(_, section)| section.header.sh_type == SHT_SYMTAB)
    else {
        return Ok((None, Vec::new()));
    };
    let table_error = |what: String| ElfError::BadSection { section: table.name.clone(), what };
    if table.bytes.len() % SIZEOF_SYM != 0 {
        return Err(table_error(format!("size {} is not a multiple of {SIZEOF_SYM}", table.bytes.len())));
    }
    let names = usize::try_from(table.header.sh_link).ok().and_then(|link| sections.get(link));
    let names =
        names.ok_or_else(|| table_error(format!("its string table, #{}, does not exist", table.header.sh_link)))?;
    let count = table.bytes.len() / SIZEOF_SYM;
    if count == 0 {
        return Ok((Some(index), Vec::new()));
    }
    let entries = Symtab::parse(table.bytes, 0, count, ctx()).map_err(|error| table_error(error.to_string()))?;
    let mut symbols = Vec::with_capacity(count);
    for (number, entry) in entries.iter().enumerate() {
        let kind = st_type(entry.st_info);
        let name = match kind {
            STT_SECTION => sections.get(entry.st_shndx).map(|section| section.name.clone()),
            _ => string_at(names.bytes, entry.st_name),
        };
        let name = name.ok_or_else(|| table_error(format!("symbol {number} has a name outside {}", names.name)))?;
        let global = matches!(st_bind(entry.st_info), STB_GLOBAL | STB_WEAK);
        symbols.push(Symbol { name, kind, global, section: entry.st_shndx, value: entry.st_value });
    }
    Ok((Some(index), symbols))
}

/// The functions of every executable section with code.
fn functions(sections: &[Section], symbols: &[Symbol]) -> Result<Vec<Function>, ElfError> {
    let mut functions = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        if section.header.sh_flags & u64::from(SHF_EXECINSTR) == 0 {
            continue;
        }
        if section.header.sh_type != SHT_PROGBITS {
            let sh_type = section.header.sh_type;
            return Err(ElfError::BadProgramSectionType { section: section.name.clone(), sh_type });
        }
        if section.header.sh_size == 0 {
            continue;
        }
        let section_error = |what: String| ElfError::BadSection { section: section.name.clone(), what };
        let code = isa::decode_program(section.bytes).ok_or_else(|| {
            section_error(format!(
                "size {} is not a multiple of {INSN_SIZE}, the instruction size",
                section.bytes.len()
            ))
        })?;
        // By first slot; of two symbols at one place (aliases), the first.
        let mut starts: BTreeMap<usize, &Symbol> = BTreeMap::new();
        for symbol in symbols.iter().filter(|symbol| symbol.kind == STT_FUNC && symbol.section == index) {
            let start = usize::try_from(symbol.value / INSN_SIZE as u64)
                .ok()
                .filter(|&start| symbol.value % INSN_SIZE as u64 == 0 && start < code.len())
                .ok_or_else(|| {
                    section_error(format!(
                        "function {} at offset {:#x} is not at an instruction",
                        symbol.name, symbol.value
                    ))
                })?;
            starts.entry(start).or_insert(symbol);
        }
        let function = |name: &str, start: usize, end: usize, global: bool| Function {
            name: name.to_owned(),
            section: index,
            section_name: section.name.clone(),
            start,
            insns: code.get(start..end).unwrap_or_default().to_vec(),
            global,
        };
        // Hand-written code may have no function symbols: its section is
        // then one function, named after the section.
        if starts.is_empty() {
            functions.push(function(&section.name, 0, code.len(), true));
        }
        let ends = starts.keys().skip(1).copied().chain([code.len()]);
        for ((&start, symbol), end) in starts.iter().zip(ends) {
            functions.push(function(&symbol.name, start, end, symbol.global));
        }
    }
    Ok(functions)
}

/// The relocations of code, by section and offset; those of other sections
/// (debug info, BTF) are not the loader's business.
fn relocations(
    sections: &[Section],
    symtab: Option<usize>,
    functions: &[Function],
) -> Result<BTreeMap<(usize, u64), Relocation>, ElfError> {
    let mut relocations = BTreeMap::new();
    for section in sections {
        let is_rela = section.header.sh_type == SHT_RELA;
        let Ok(target) = usize::try_from(section.header.sh_info) else { continue };
        let is_code = functions.iter().any(|function| function.section == target);
        if !(is_rela || section.header.sh_type == SHT_REL) || !is_code {
            continue;
        }
        let entries = relocation_entries(section, symtab)?;
        let code = sections.get(target).map_or(&[][..], |code| code.bytes);
        for (offset, relocation) in entries.into_iter().filter(|(_, relocation)| relocation.rtype != R_BPF_NONE) {
            let bad = |what: &str| ElfError::BadRelocation {
                section: sections.get(target).map(|code| code.name.clone()).unwrap_or_default(),
                offset,
                what: what.into(),
            };
            if offset % INSN_SIZE as u64 != 0 || offset >= code.len() as u64 {
                return Err(bad("not at an instruction of the section"));
            }
            if relocations.insert((target, offset), relocation).is_some() {
                return Err(bad("a second relocation of one instruction"));
            }
        }
    }
    Ok(relocations)
}

/// The entries of relocation section `section` (REL or RELA), with the
/// offsets they apply to.
fn relocation_entries(section: &Section, symtab: Option<usize>) -> Result<Vec<(u64, Relocation)>, ElfError> {
    let is_rela = section.header.sh_type == SHT_RELA;
    let section_error = |what: String| ElfError::BadSection { section: section.name.clone(), what };
    if usize::try_from(section.header.sh_link).ok() != symtab {
        return Err(section_error(format!("refers to #{}, not the symbol table", section.header.sh_link)));
    }
    let entry_size = if is_rela { SIZEOF_RELA } else { SIZEOF_REL };
    if section.bytes.len() % entry_size != 0 {
        return Err(section_error(format!("size {} is not a multiple of {entry_size}", section.bytes.len())));
    }
    let entries = RelocSection::parse(section.bytes, 0, section.bytes.len(), is_rela, ctx())
        .map_err(|error| section_error(error.to_string()))?;
    let relocation =
        |entry: goblin::elf::Reloc| Relocation { rtype: entry.r_type, symbol: entry.r_sym, addend: entry.r_addend };
    Ok(entries.iter().map(|entry| (entry.r_offset, relocation(entry))).collect())
}

/// The maps of the `.maps` section (libbpf's BTF-defined maps, described by
/// `.BTF`) and of the legacy `maps` section (`struct bpf_map_def`s), each
/// named by its symbol.
fn maps(sections: &[Section], symtab: Option<usize>, symbols: &[Symbol]) -> Result<Vec<ObjectMap>, ElfError> {
    let mut maps = Vec::new();
    for (index, section) in sections.iter().enumerate().filter(|(_, section)| is_map_section(&section.name)) {
        let mut defined: Vec<&Symbol> = symbols
            .iter()
            .filter(|symbol| symbol.section == index && symbol.kind != STT_SECTION && !symbol.name.is_empty())
            .collect();
        defined.sort_by_key(|symbol| symbol.value);
        let map_error =
            |map: &str, what: String| ElfError::BadMap { section: section.name.clone(), map: map.to_owned(), what };
        if section.name == ".maps" {
            let btf = sections.iter().find(|section| section.name == ".BTF").ok_or_else(|| ElfError::BadSection {
                section: ".maps".into(),
                what: "BTF-defined maps need a .BTF section (build with -g)".into(),
            })?;
            let declared = btf::Btf::parse(btf.bytes)?.maps()?;
            let statics = match sections
                .iter()
                .find(|rel| matches!(rel.header.sh_type, SHT_REL | SHT_RELA) && rel.header.sh_info as usize == index)
            {
                Some(rel) => relocation_entries(rel, symtab)?,
                None => Vec::new(),
            };
            for (position, symbol) in defined.iter().enumerate() {
                let btf = declared
                    .iter()
                    .find(|map| map.name == symbol.name)
                    .ok_or_else(|| map_error(&symbol.name, "not described in .BTF's .maps data section".into()))?;
                let missing = |field: &str| map_error(&symbol.name, format!("declares no {field}"));
                let map_type = btf.map_type.ok_or_else(|| missing("type"))?;
                let mut def = MapDef {
                    name: symbol.name.clone(),
                    map_type,
                    key_size: btf.key_size.unwrap_or(0),
                    value_size: btf.value_size.unwrap_or(0),
                    max_entries: btf.max_entries.ok_or_else(|| missing("max_entries"))?,
                    flags: btf.flags.unwrap_or(0),
                    initial_programs: Vec::new(),
                };
                if let Some(values) = btf.values_offset {
                    if map_type != MapType::ProgArray as u32 {
                        return Err(map_error(&symbol.name, "__array(values) is only supported in prog arrays".into()));
                    }
                    // As libbpf: a prog array's keys and values are 4 bytes.
                    (def.key_size, def.value_size) = (4, 4);
                    let start = symbol.value + values;
                    let end = defined.get(position + 1).map_or(section.bytes.len() as u64, |next| next.value);
                    for (offset, relocation) in statics.iter().filter(|(offset, _)| (start..end).contains(offset)) {
                        let slot = (offset - start) / 8;
                        let function = symbols.get(relocation.symbol).filter(|symbol| symbol.kind == STT_FUNC);
                        let function = function
                            .ok_or_else(|| map_error(&symbol.name, format!("value {slot} is not a function")))?;
                        let slot = u32::try_from(slot).map_err(|_| map_error(&symbol.name, "slot too large".into()))?;
                        def.initial_programs.push((slot, function.name.clone()));
                    }
                }
                maps.push(ObjectMap { section: index, offset: symbol.value, def });
            }
        } else {
            let def_size = section.bytes.len() as u64 / defined.len().max(1) as u64;
            for symbol in &defined {
                let end = symbol.value.checked_add(def_size).filter(|&end| end <= section.bytes.len() as u64);
                let (Some(end), true) = (end, def_size >= MIN_MAP_DEF_SIZE) else {
                    return Err(map_error(
                        &symbol.name,
                        format!(
                            "a struct bpf_map_def of {def_size} bytes at offset {:#x}: shorter than \
                             {MIN_MAP_DEF_SIZE}, or past the section's end",
                            symbol.value
                        ),
                    ));
                };
                let bytes = &section.bytes[symbol.value as usize..end as usize];
                let field = |index: usize| {
                    bytes
                        .get(index * 4..index * 4 + 4)
                        .map_or(0, |word| u32::from_le_bytes(word.try_into().expect("4 bytes")))
                };
                let def = MapDef {
                    name: symbol.name.clone(),
                    map_type: field(0),
                    key_size: field(1),
                    value_size: field(2),
                    max_entries: field(3),
                    flags: field(4),
                    initial_programs: Vec::new(),
                };
                maps.push(ObjectMap { section: index, offset: symbol.value, def });
            }
        }
    }
    Ok(maps)
}

fn is_map_section(name: &str) -> bool {
    name == ".maps" || name == "maps" || name.starts_with("maps/")
}

/// The global data sections: `.rodata*` read-only, `.data*` and `.bss*`
/// writable.
fn data_sections(sections: &[Section]) -> Result<Vec<(usize, DataSection)>, ElfError> {
    let mut data = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let is_data = [".rodata", ".data", ".bss"].iter().any(|prefix| section.name.starts_with(prefix));
        if !is_data || !matches!(section.header.sh_type, SHT_PROGBITS | SHT_NOBITS) {
            continue;
        }
        let bytes = match section.header.sh_type {
            SHT_NOBITS => {
                let size =
                    usize::try_from(section.header.sh_size).ok().filter(|_| section.header.sh_size <= MAX_ZEROED_SIZE);
                let size = size.ok_or_else(|| ElfError::BadSection {
                    section: section.name.clone(),
                    what: format!("{} bytes, more than the limit of {MAX_ZEROED_SIZE}", section.header.sh_size),
                })?;
                vec![0; size]
            }
            _ => section.bytes.to_vec(),
        };
        let writable = !section.name.starts_with(".rodata");
        data.push((index, DataSection { name: section.name.clone(), bytes, writable }));
    }
    Ok(data)
}
