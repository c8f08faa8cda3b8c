//! The ELF loader on good objects (tests/fixtures/, examples/) and on bad
//! ones made from them: every bad object gives an error, never a panic.

use goblin::elf::Elf;
use goblin::elf::section_header::SHT_REL;
use qemu_ubpf::elf::{self, HelperRef};
use qemu_ubpf::error::HeaderField;
use qemu_ubpf::{Config, ElfError, Helpers, MapError, Program, isa};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn run(program: &Program, len: usize) -> u64 {
    program.execute(&mut vec![0; len]).unwrap()
}

// Offsets of ELF64 header and section header fields.
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const EI_VERSION: usize = 6;
const EI_OSABI: usize = 7;
const E_TYPE: usize = 16;
const E_MACHINE: usize = 18;
const E_SHOFF: usize = 0x28;
const SH_TYPE: usize = 0x04;
const SH_OFFSET: usize = 0x18;
const SH_SIZE: usize = 0x20;
const SHDR_SIZE: usize = 64;
const REL_SIZE: usize = 16;
const R_INFO: usize = 8;

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Where the contents of section `name` are in the file.
fn section_offset(object: &[u8], name: &str) -> usize {
    let parsed = Elf::parse(object).unwrap();
    let header = parsed.section_headers.iter().find(|header| &parsed.shdr_strtab[header.sh_name] == name).unwrap();
    header.sh_offset as usize
}

/// Where the header of section `name` is in the file.
fn section_header_at(object: &[u8], name: &str) -> usize {
    let parsed = Elf::parse(object).unwrap();
    let index = parsed.section_headers.iter().position(|header| &parsed.shdr_strtab[header.sh_name] == name).unwrap();
    parsed.header.e_shoff as usize + index * SHDR_SIZE
}

/// Rewrites the type of every REL entry of code (not debug info) whose type
/// is `from`; returns how many it rewrote.
fn rewrite_relocation_types(object: &mut [u8], from: u32, to: u32) -> usize {
    let parsed = Elf::parse(object).unwrap();
    let mut entries = Vec::new();
    for header in parsed.section_headers.iter().filter(|header| header.sh_type == SHT_REL) {
        if !parsed.section_headers[header.sh_info as usize].is_executable() {
            continue;
        }
        let start = header.sh_offset as usize;
        entries.extend((start..start + header.sh_size as usize).step_by(REL_SIZE).map(|entry| entry + R_INFO));
    }
    let mut rewritten = 0;
    for info in entries {
        if object[info..info + 4] == from.to_le_bytes() {
            object[info..info + 4].copy_from_slice(&to.to_le_bytes());
            rewritten += 1;
        }
    }
    rewritten
}

extern "C" fn times_ten(value: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    value * 10
}

extern "C" fn add(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    a + b
}

fn fixture_helpers() -> Helpers {
    let mut helpers = Helpers::new();
    helpers.register(3, "my_helper", times_ten);
    helpers.register(7, "add", add);
    helpers
}

#[test]
fn not_elf() {
    assert!(matches!(elf::load(&[], None, &Helpers::new()), Err(ElfError::NotElf(_))));
    // Deterministic noise, at lengths around the ELF header's.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for len in [1, 4, 15, 16, 63, 64, 65, 1000, 4096] {
        assert!(matches!(elf::load(&noise[..len], None, &Helpers::new()), Err(ElfError::NotElf(_))), "{len}");
    }
    let mut header_only = read("examples/classifier.o");
    header_only.truncate(20);
    assert!(matches!(elf::load(&header_only, None, &Helpers::new()), Err(ElfError::NotElf(_))));
}

#[test]
fn every_truncation_is_an_error() {
    for path in ["examples/calls_rodata.o", "tests/fixtures/programs.o"] {
        let object = read(path);
        for len in 0..object.len() {
            assert!(elf::load(&object[..len], None, &Helpers::new()).is_err(), "{path} cut to {len} bytes");
            assert!(elf::inspect(&object[..len]).is_err(), "{path} cut to {len} bytes");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Data and calls; then maps (BTF, legacy, a prog array, a ring buffer).
    for path in ["examples/calls_rodata.o", "tests/fixtures/maps.o", "examples/dispatcher.o"] {
        let object = read(path);
        for _ in 0..2000 {
            let mut corrupted = object.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % corrupted.len() as u64) as usize;
                corrupted[at] = next() as u8;
            }
            // Any result will do, but it must be a result.
            let _ = elf::load(&corrupted, None, &Helpers::new());
            let _ = elf::inspect(&corrupted);
            let _ = Program::from_elf(&corrupted, None, &Helpers::linux(), &Config::default());
        }
    }
}

#[test]
fn corrupt_btf_is_an_error_naming_the_section() {
    let mut object = read("tests/fixtures/maps.o");
    let btf = section_offset(&object, ".BTF");
    object[btf] ^= 0xff;
    let error = elf::load(&object, None, &Helpers::new()).unwrap_err();
    assert!(matches!(error, ElfError::BadBtf { offset: 0, .. }), "{error}");
}

#[test]
fn wrong_machine_class_or_byte_order() {
    let object = read("examples/classifier.o");
    let mut x86 = object.clone();
    x86[E_MACHINE..E_MACHINE + 2].copy_from_slice(&62u16.to_le_bytes());
    assert_eq!(
        elf::load(&x86, None, &Helpers::new()),
        Err(ElfError::BadHeader { field: HeaderField::Machine, value: 62 })
    );
    let mut big_endian = object.clone();
    big_endian[EI_DATA] = 2;
    assert_eq!(
        elf::load(&big_endian, None, &Helpers::new()),
        Err(ElfError::BadHeader { field: HeaderField::Data, value: 2 })
    );
    let mut elf32 = object.clone();
    elf32[EI_CLASS] = 1;
    assert_eq!(
        elf::load(&elf32, None, &Helpers::new()),
        Err(ElfError::BadHeader { field: HeaderField::Class, value: 1 })
    );
}

/// The header checks iovisor/ubpf's ELF tests expect, each refusal naming
/// the field and its value.
#[test]
fn headers_libbpf_and_ubpf_refuse() {
    let object = read("examples/classifier.o");
    let refused = |at: usize, bytes: &[u8]| {
        let mut bad = object.clone();
        bad[at..at + bytes.len()].copy_from_slice(bytes);
        elf::load(&bad, None, &Helpers::new()).unwrap_err()
    };
    let header = |field, value| ElfError::BadHeader { field, value };
    // ET_EXEC and ET_DYN.
    assert_eq!(refused(E_TYPE, &2u16.to_le_bytes()), header(HeaderField::Type, 2));
    assert_eq!(refused(E_TYPE, &3u16.to_le_bytes()), header(HeaderField::Type, 3));
    assert_eq!(refused(EI_VERSION, &[0]), header(HeaderField::Version, 0));
    assert_eq!(refused(EI_VERSION, &[2]), header(HeaderField::Version, 2));
    // FreeBSD; and an OSABI no one has.
    assert_eq!(refused(EI_OSABI, &[9]), header(HeaderField::OsAbi, 9));
    assert_eq!(refused(EI_OSABI, &[0xfe]), header(HeaderField::OsAbi, 0xfe));
    assert_eq!(refused(EI_CLASS, &[7]), header(HeaderField::Class, 7));
    assert_eq!(refused(EI_DATA, &[0]), header(HeaderField::Data, 0));
    // The program section turned SHT_NULL, then SHT_NOBITS.
    let program_type = section_header_at(&object, "classifier") + SH_TYPE;
    let section_type = |sh_type| ElfError::BadProgramSectionType { section: "classifier".into(), sh_type };
    assert_eq!(refused(program_type, &0u32.to_le_bytes()), section_type(0));
    assert_eq!(refused(program_type, &8u32.to_le_bytes()), section_type(8));
    // OSABI Linux is taken, as libbpf takes it.
    let mut linux = object.clone();
    linux[EI_OSABI] = 3;
    assert!(elf::load(&linux, None, &Helpers::new()).is_ok());
}

/// Old LLVM wrote e_machine EM_NONE; libbpf and iovisor/ubpf load such
/// objects, and so does this loader.
#[test]
fn em_none_objects_load_and_run() {
    let object = read("examples/classifier.o");
    let mut em_none = object.clone();
    em_none[E_MACHINE..E_MACHINE + 2].copy_from_slice(&0u16.to_le_bytes());
    let helpers = Helpers::linux();
    let program = Program::from_elf(&em_none, None, &helpers, &Config::default()).unwrap();
    let original = Program::from_elf(&object, None, &helpers, &Config::default()).unwrap();
    assert_eq!(program.insns(), original.insns());
    for len in [0, 14, 34, 64] {
        assert_eq!(run(&program, len), run(&original, len), "{len}-byte input");
    }
}

#[test]
fn section_headers_past_the_end() {
    let mut object = read("examples/classifier.o");
    let len = object.len() as u64;
    for shoff in [len, len - 1, u64::MAX - 8] {
        put_u64(&mut object, E_SHOFF, shoff);
        let error = elf::load(&object, None, &Helpers::new()).unwrap_err();
        assert!(
            matches!(&error, ElfError::BadSection { section, .. } if section == "section header table"),
            "{shoff}: {error}"
        );
    }
}

#[test]
fn section_contents_past_the_end() {
    let object = read("examples/classifier.o");
    let header = section_header_at(&object, "classifier");
    for (field, value) in [(SH_OFFSET, object.len() as u64), (SH_SIZE, object.len() as u64), (SH_OFFSET, u64::MAX)] {
        let mut bad = object.clone();
        put_u64(&mut bad, header + field, value);
        let error = elf::load(&bad, None, &Helpers::new()).unwrap_err();
        assert!(matches!(&error, ElfError::BadSection { section, .. } if section == "classifier"), "{error}");
    }
}

#[test]
fn code_size_not_a_multiple_of_8() {
    let mut object = read("examples/classifier.o");
    let header = section_header_at(&object, "classifier");
    put_u64(&mut object, header + SH_SIZE, 12);
    let error = elf::load(&object, None, &Helpers::new()).unwrap_err();
    assert!(
        matches!(&error, ElfError::BadSection { section, what } if section == "classifier" && what.contains("multiple of 8")),
        "{error}"
    );
}

#[test]
fn overlapping_sections() {
    let mut object = read("examples/calls_rodata.o");
    let text = section_header_at(&object, ".text");
    let text_offset = u64::from_le_bytes(object[text + SH_OFFSET..text + SH_OFFSET + 8].try_into().unwrap());
    let data = section_header_at(&object, ".data");
    put_u64(&mut object, data + SH_OFFSET, text_offset + 8);
    assert_eq!(
        elf::load(&object, None, &Helpers::new()),
        Err(ElfError::Overlap { first: ".text".into(), second: ".data".into() })
    );
}

#[test]
fn unknown_program_name_lists_the_programs() {
    let object = read("tests/fixtures/programs.o");
    let Err(ElfError::ProgramNotFound(name, available)) = elf::load(&object, Some("third"), &Helpers::new()) else {
        panic!("third was found");
    };
    assert_eq!(name, "third");
    for function in ["first (section prog/first)", "second (section prog/second)", "twice (section .text)"] {
        assert!(available.contains(function), "{available}");
    }
}

#[test]
fn programs_by_function_or_section_name() {
    let object = read("tests/fixtures/programs.o");
    let helpers = Helpers::new();
    let load = |name| Program::from_elf(&object, name, &helpers, &Config::default()).unwrap();

    let linked = elf::load(&object, None, &helpers).unwrap();
    assert_eq!((linked.section.as_str(), linked.function.as_str()), ("prog/first", "first"));
    // first = twice(len) + second_global + tables[0][len % 4]
    assert_eq!(run(&load(None), 5), 10 + 20 + 2);
    assert_eq!(run(&load(Some("first")), 6), 12 + 20 + 3);
    assert_eq!(run(&load(Some("prog/first")), 7), 14 + 20 + 4);
    // second = thrice(len) + tables[1][len % 4] + (odd ? 'o' : 'e')
    assert_eq!(run(&load(Some("second")), 5), 15 + 200 + u64::from(b'o'));
    assert_eq!(run(&load(Some("prog/second")), 6), 18 + 300 + u64::from(b'e'));
    // A static function is a program too.
    assert_eq!(run(&load(Some("twice")), 0), 0);
    let twice = elf::load(&object, Some(".text"), &helpers).unwrap();
    assert_eq!((twice.section.as_str(), twice.function.as_str()), (".text", "twice"));
}

#[test]
fn linking_leaves_out_functions_not_called() {
    let object = read("tests/fixtures/programs.o");
    let info = elf::inspect(&object).unwrap();
    let size = |name: &str| info.functions.iter().find(|function| function.name == name).unwrap().insns;
    let linked = |name| elf::load(&object, Some(name), &Helpers::new()).unwrap().image.insns.len();
    assert_eq!(linked("first"), size("first") + size("twice") + size("pick"));
    assert_eq!(linked("second"), size("second") + size("thrice") + size("pick") + size("first_char"));
    assert_eq!(info.default_function.map(|index| info.functions[index].name.as_str()), Some("first"));
}

#[test]
fn data_relocations_carry_symbol_value_and_addend() {
    let object = read("tests/fixtures/programs.o");
    let linked = elf::load(&object, Some("second"), &Helpers::new()).unwrap();
    let strings = linked.image.data.iter().position(|section| section.name == ".rodata.str1.1").unwrap();
    let mut offsets: Vec<u64> =
        linked.image.data_relocs.iter().filter(|reloc| reloc.section == strings).map(|reloc| reloc.offset).collect();
    offsets.sort();
    assert_eq!(offsets, [0, 4], "\"odd\" at 0, \"even\" at 4");
    for reloc in &linked.image.data_relocs {
        assert_eq!(linked.image.insns[reloc.pc].opc, isa::LDDW);
    }

    let linked = elf::load(&object, Some("first"), &Helpers::new()).unwrap();
    let data = linked.image.data.iter().position(|section| section.name == ".data").unwrap();
    let second_global = linked.image.data_relocs.iter().find(|reloc| reloc.section == data).unwrap();
    assert_eq!(second_global.offset, 8, "second_global follows first_global");
}

#[test]
fn data_addresses_past_their_section_are_refused() {
    // chain's first instruction loads the address of chain_links, 8 bytes
    // into the 12 of .bss; its imm is the addend.
    let object = read("tests/fixtures/maps.o");
    let imm = section_offset(&object, "socket") + 4;
    let with_addend = |addend: i32| {
        let mut object = object.clone();
        object[imm..imm + 4].copy_from_slice(&addend.to_le_bytes());
        elf::load(&object, Some("chain"), &Helpers::linux())
    };
    let last_byte = with_addend(3).unwrap();
    assert_eq!(last_byte.image.data_relocs[0].offset, 11);
    for (addend, offset) in [(4, 12), (0x2f, 0x37)] {
        let error = with_addend(addend).unwrap_err();
        assert!(matches!(error, ElfError::BadRelocation { offset: 0, .. }), "{error}");
        assert!(error.to_string().contains(&format!("offset {offset} is outside .bss (12 bytes)")), "{error}");
    }
}

#[test]
fn helpers_by_name_and_by_index() {
    let object = read("tests/fixtures/helpers.o");
    let mut only_index_7 = Helpers::new();
    only_index_7.register(7, "add", add);
    let error = elf::load(&object, None, &only_index_7).unwrap_err();
    assert!(matches!(&error, ElfError::UnknownHelperName { name, .. } if name == "my_helper"), "{error}");

    let helpers = fixture_helpers();
    let linked = elf::load(&object, None, &helpers).unwrap();
    let calls: Vec<_> = linked.image.insns.iter().filter(|insn| insn.opc == isa::CALL).collect();
    assert_eq!(calls.iter().map(|call| (call.src, call.imm)).collect::<Vec<_>>(), [(0, 3), (0, 7)]);
    let program = Program::from_elf(&object, None, &helpers, &Config::default()).unwrap();
    // my_helper(len) + helper 7(len, 1000)
    assert_eq!(run(&program, 5), 50 + 1005);

    let info = elf::inspect(&object).unwrap();
    let helpers: Vec<_> = info.helper_calls.iter().map(|call| call.helper.clone()).collect();
    assert_eq!(helpers, [HelperRef::Name("my_helper".into()), HelperRef::Index(7)]);
}

#[test]
fn legacy_map_definitions_without_flags_load() {
    let object = read("tests/fixtures/map.o");
    let info = elf::inspect(&object).unwrap();
    let maps: Vec<_> = info
        .maps
        .iter()
        .map(|map| (map.name.as_str(), map.map_type, map.key_size, map.value_size, map.flags))
        .collect();
    assert_eq!(maps, [("counters", 2, 4, 8, 0)]);
    let linked = elf::load(&object, None, &Helpers::new()).unwrap();
    let lddw = linked.image.insns.iter().find(|insn| insn.opc == isa::LDDW).unwrap();
    assert_eq!((lddw.src, lddw.imm), (1, 0), "lddw of map 0, as BPF_PSEUDO_MAP_FD");
    let program = Program::from_elf(&object, None, &Helpers::linux(), &Config::default()).unwrap();
    program.map("counters").unwrap().update(&0u32.to_ne_bytes(), &41u64.to_ne_bytes(), 0).unwrap();
    assert_eq!(program.execute(&mut []), Ok(41));
}

#[test]
fn a_bad_map_definition_names_the_map() {
    let mut object = read("tests/fixtures/map.o");
    // The key size of "counters" (its second word) becomes 3.
    let info = elf::inspect(&object).unwrap();
    assert_eq!(info.maps[0].key_size, 4);
    let section = section_offset(&object, "maps");
    object[section + 4] = 3;
    let error = Program::from_elf(&object, None, &Helpers::linux(), &Config::default()).unwrap_err();
    assert!(
        matches!(&error, ElfError::Map(MapError::BadField { name, field: "key_size", .. }) if name == "counters"),
        "{error}"
    );
}

#[test]
fn old_and_new_call_relocation_numbering() {
    for (path, name) in [("examples/calls_rodata.o", None), ("tests/fixtures/programs.o", Some("second"))] {
        let object = read(path);
        let mut old = object.clone();
        assert!(rewrite_relocation_types(&mut old, 10, 2) > 0, "{path} has calls to relocate");
        let helpers = fixture_helpers();
        assert_eq!(elf::load(&old, name, &helpers), elf::load(&object, name, &helpers), "{path}");
    }
    let mut old = read("examples/calls_rodata.o");
    rewrite_relocation_types(&mut old, 10, 2);
    let program = Program::from_elf(&old, None, &Helpers::new(), &Config::default()).unwrap();
    let mut telnet = vec![0u8; 54];
    telnet[12] = 0x08;
    telnet[14] = 0x45;
    telnet[23] = 6;
    telnet[34 + 3] = 23;
    assert_eq!(program.execute(&mut telnet).unwrap(), 1);
    telnet[34 + 3] = 22;
    assert_eq!(program.execute(&mut telnet).unwrap(), 0);
}

#[test]
fn unsupported_relocation_type_on_code() {
    let mut object = read("tests/fixtures/programs.o");
    assert!(rewrite_relocation_types(&mut object, 1, 3) > 0);
    let error = elf::load(&object, None, &Helpers::new()).unwrap_err();
    assert!(
        matches!(&error, ElfError::UnsupportedRelocation { rtype: 3, symbol, .. } if symbol == "second_global"),
        "{error}"
    );
    // lddw takes no call relocation, nor a call an lddw one.
    let mut object = read("tests/fixtures/programs.o");
    rewrite_relocation_types(&mut object, 1, 10);
    assert!(matches!(
        elf::load(&object, None, &Helpers::new()),
        Err(ElfError::UnsupportedRelocation { rtype: 10, .. })
    ));
}

#[test]
fn inspect_lists_functions_data_and_relocations() {
    let info = elf::inspect(&read("tests/fixtures/programs.o")).unwrap();
    let functions: Vec<_> =
        info.functions.iter().map(|f| (f.section.as_str(), f.name.as_str(), f.offset, f.global)).collect();
    assert_eq!(
        functions,
        [
            (".text", "twice", 0, false),
            (".text", "pick", 24, false),
            (".text", "thrice", 64, false),
            (".text", "first_char", 88, false),
            ("prog/first", "first", 0, true),
            ("prog/second", "second", 0, true),
        ]
    );
    let data: Vec<_> = info.data.iter().map(|d| (d.name.as_str(), d.bytes.len(), d.writable)).collect();
    assert_eq!(data, [(".data", 16, true), (".rodata", 64, false), (".rodata.str1.1", 9, false)]);
    let relocations: Vec<_> =
        info.relocations.iter().map(|r| (r.section.as_str(), r.offset, r.rtype, r.symbol.as_str())).collect();
    assert!(relocations.contains(&("prog/first", 0x18, 1, "second_global")), "{relocations:?}");
    assert!(relocations.contains(&("prog/second", 0x10, 10, ".text")), "{relocations:?}");
    assert!(info.helper_calls.is_empty());
}
