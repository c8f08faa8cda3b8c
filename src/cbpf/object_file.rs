//! A translated filter as an ELF object, as clang would write a BPF
//! program: a relocatable ELF64 (little-endian, `EM_BPF`) with the code in
//! one executable section, a global function symbol over it, and a
//! `license` section. Our loader, `llvm-objdump` and libbpf read it. Small
//! enough to write by hand (goblin only reads).

use crate::isa::{self, Insn};

/// The code's section: libbpf's name for a socket filter, which is what a
/// classic program is.
pub const SECTION: &str = "socket";
/// The license the object declares; the filter calls no helper but
/// `wire_len` (for `len`), which is not GPL-only.
pub const LICENSE: &str = "Dual BSD/GPL";

const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const EM_BPF: u16 = 247;
const ET_REL: u16 = 1;
const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
const STB_GLOBAL: u8 = 1;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;

/// Section indices, in the order they are written.
const CODE: u16 = 1;
const LICENSE_SECTION: u16 = 2;
const STRTAB: u32 = 4;
const SHSTRTAB: u16 = 5;

/// A string table being built: offsets of the names added.
struct Strings(Vec<u8>);

impl Strings {
    fn new() -> Strings {
        Strings(vec![0])
    }

    fn add(&mut self, name: &str) -> u32 {
        let offset = self.0.len() as u32;
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(0);
        offset
    }
}

struct SectionHeader {
    name: u32,
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
    link: u32,
    info: u32,
    align: u64,
    entry_size: u64,
}

fn align_to(bytes: &mut Vec<u8>, align: usize) {
    bytes.resize(bytes.len().next_multiple_of(align), 0);
}

/// The object holding `insns` as the function `function`.
pub fn write(insns: &[Insn], function: &str) -> Vec<u8> {
    let code = isa::encode_program(insns);
    let mut license = LICENSE.as_bytes().to_vec();
    license.push(0);

    let mut strings = Strings::new();
    let function_name = strings.add(function);
    let license_name = strings.add("_license");
    let mut symbols = vec![0u8; SYM_SIZE];
    for (name, info, section, size) in [
        (function_name, STB_GLOBAL << 4 | STT_FUNC, CODE, code.len()),
        (license_name, STB_GLOBAL << 4 | STT_OBJECT, LICENSE_SECTION, license.len()),
    ] {
        symbols.extend_from_slice(&name.to_le_bytes());
        symbols.push(info);
        symbols.push(0);
        symbols.extend_from_slice(&section.to_le_bytes());
        symbols.extend_from_slice(&0u64.to_le_bytes());
        symbols.extend_from_slice(&(size as u64).to_le_bytes());
    }

    let mut section_names = Strings::new();
    let mut out = vec![0u8; EHDR_SIZE];
    let mut headers = Vec::new();
    let mut section = |out: &mut Vec<u8>, name: &str, kind, flags, data: &[u8], align: usize, link, info, entry| {
        align_to(out, align);
        headers.push(SectionHeader {
            name: section_names.add(name),
            kind,
            flags,
            offset: out.len(),
            size: data.len(),
            link,
            info,
            align: align as u64,
            entry_size: entry,
        });
        out.extend_from_slice(data);
    };
    section(&mut out, SECTION, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, &code, 8, 0, 0, 0);
    section(&mut out, "license", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, &license, 1, 0, 0, 0);
    // sh_info: the first global symbol (all but the null one).
    section(&mut out, ".symtab", SHT_SYMTAB, 0, &symbols, 8, STRTAB, 1, SYM_SIZE as u64);
    section(&mut out, ".strtab", SHT_STRTAB, 0, &strings.0, 1, 0, 0, 0);
    let shstrtab_name = section_names.add(".shstrtab");
    let names = section_names.0.clone();
    align_to(&mut out, 1);
    headers.push(SectionHeader {
        name: shstrtab_name,
        kind: SHT_STRTAB,
        flags: 0,
        offset: out.len(),
        size: names.len(),
        link: 0,
        info: 0,
        align: 1,
        entry_size: 0,
    });
    out.extend_from_slice(&names);

    align_to(&mut out, 8);
    let section_headers_at = out.len();
    out.extend_from_slice(&[0u8; SHDR_SIZE]);
    for header in &headers {
        out.extend_from_slice(&header.name.to_le_bytes());
        out.extend_from_slice(&header.kind.to_le_bytes());
        out.extend_from_slice(&header.flags.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&(header.offset as u64).to_le_bytes());
        out.extend_from_slice(&(header.size as u64).to_le_bytes());
        out.extend_from_slice(&header.link.to_le_bytes());
        out.extend_from_slice(&header.info.to_le_bytes());
        out.extend_from_slice(&header.align.to_le_bytes());
        out.extend_from_slice(&header.entry_size.to_le_bytes());
    }

    let mut header = Vec::with_capacity(EHDR_SIZE);
    // ELF64, little-endian, version 1, System V ABI.
    header.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&ET_REL.to_le_bytes());
    header.extend_from_slice(&EM_BPF.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes()); // entry
    header.extend_from_slice(&0u64.to_le_bytes()); // program headers: none
    header.extend_from_slice(&(section_headers_at as u64).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // flags
    header.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes()); // program header size
    header.extend_from_slice(&0u16.to_le_bytes()); // program headers
    header.extend_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
    header.extend_from_slice(&(headers.len() as u16 + 1).to_le_bytes());
    header.extend_from_slice(&SHSTRTAB.to_le_bytes());
    out[..EHDR_SIZE].copy_from_slice(&header);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::Helpers;
    use crate::program::{Config, Program};

    #[test]
    fn the_loader_reads_the_program_back() {
        let insns = [
            Insn::new(isa::LDABSH, 0, 0, 0, 12),
            Insn::new(isa::JEQ_IMM, 0, 0, 1, 0x0800),
            Insn::new(isa::EXIT, 0, 0, 0, 0),
        ];
        let insns = [insns[0], insns[1], Insn::new(isa::MOV64_IMM, 0, 0, 0, 0), insns[2]];
        let object = write(&insns, "filter");
        let program = Program::from_elf(&object, Some("filter"), &Helpers::new(), &Config::default()).unwrap();
        assert_eq!(program.insns(), insns);
        let program = Program::from_elf(&object, None, &Helpers::new(), &Config::default()).unwrap();
        assert_eq!(program.insns(), insns);
    }
}
