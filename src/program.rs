//! A verified image: code the verifier accepted, with its maps and global
//! data placed in memory, the helpers it may call and the memory regions it
//! may touch besides its input and stack. The front doors from ELF bytes
//! are in `object`; running a program is the engines' job (`interp`,
//! `jit`).

use std::sync::{Arc, OnceLock};

use crate::error::{LoadError, LoadErrorKind};
use crate::helpers::{HelperFn, Helpers};
use crate::helpers::{builtin, linux};
use crate::image::{DEFAULT_INSTRUCTION_LIMIT, Image, MAX_HELPER_INDEX, ProgramType, Region, xdp_context};
use crate::isa::{self, Insn, Slot};
use crate::maps::{self, Map};
use crate::verifier;

/// Settings an embedder chooses when loading.
#[derive(Clone, Debug)]
pub struct Config {
    /// Instructions one run may execute before it is stopped (local calls and
    /// helpers count as one each).
    pub instruction_limit: u64,
    /// Extra host memory the program may access, for example a buffer whose
    /// address the embedder passes in a register.
    pub regions: Vec<Region>,
    /// Maps of a program this one replaces. A map the new program declares
    /// (in `.maps` or `maps`) is taken from here, contents and all, when one
    /// has its name and shape: type, key and value sizes, max_entries and
    /// flags ([`MapDef::same_shape`]). Prog arrays, whose programs belong to
    /// the old object, and global data, whose layout is the old program's,
    /// are always new.
    ///
    /// [`MapDef::same_shape`]: crate::image::MapDef::same_shape
    pub reuse_maps: Vec<Arc<Map>>,
    /// The program's type; `None` takes it from the ELF section as libbpf
    /// does ([`ProgramType::of_section`]), and makes raw bytecode a filter.
    pub program_type: Option<ProgramType>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            instruction_limit: DEFAULT_INSTRUCTION_LIMIT,
            regions: Vec::new(),
            reuse_maps: Vec::new(),
            program_type: None,
        }
    }
}

/// Early `callx` encodings (iovisor/ubpf, older bpf_conformance) put the
/// register in imm; the kernel's puts it in dst. Both are accepted.
fn normalize_callx(insns: &mut [Insn]) {
    for insn in insns.iter_mut().filter(|insn| insn.opc == isa::CALLX && insn.dst == 0) {
        if let Ok(reg @ 1..=10) = u8::try_from(insn.imm) {
            (insn.dst, insn.imm) = (reg, 0);
        }
    }
}

/// Points each `lddw` of a map ([`isa::lddw_names_map`]) at the map's handle or
/// value, leaving a plain 64-bit immediate.
fn resolve_map_lddws(insns: &mut [Insn], maps: &[Arc<Map>], declared: usize) -> Result<(), LoadError> {
    let mut pc = 0;
    while pc + 1 < insns.len() {
        let insn = insns[pc];
        if insn.opc != isa::LDDW {
            pc += 1;
            continue;
        }
        if !isa::lddw_names_map(insn.src) {
            pc += 2;
            continue;
        }
        let map = usize::try_from(insn.imm).ok().filter(|&index| index < declared).map(|index| &maps[index]);
        let map = map.ok_or_else(|| {
            verifier::error(pc, insn, LoadErrorKind::NoSuchMap { index: insn.imm.into(), maps: declared })
        })?;
        let addr = if !isa::lddw_loads_map_value(insn.src) {
            if insns[pc + 1].imm != 0 {
                return Err(verifier::error(pc, insn, LoadErrorKind::BadLddwTail));
            }
            map.handle()
        } else {
            let offset = insns[pc + 1].imm;
            let value = map.direct_value().filter(|region| u64::try_from(offset).is_ok_and(|off| off < region.len));
            let value = value.ok_or_else(|| {
                verifier::error(pc, insn, LoadErrorKind::BadMapValue { map: map.name().into(), offset: offset.into() })
            })?;
            value.start + offset as u64
        };
        insns[pc] = Insn { src: 0, imm: addr as i32, ..insn };
        insns[pc + 1].imm = (addr >> 32) as i32;
        pc += 2;
    }
    Ok(())
}

/// Refuses a call of a helper that works only on another program type's
/// context, as the kernel does at load.
fn check_helpers_apply(insns: &[Insn], program_type: ProgramType) -> Result<(), LoadError> {
    if program_type == ProgramType::Xdp {
        return Ok(());
    }
    let calls = insns.iter().enumerate().filter(|(_, insn)| insn.opc == isa::CALL && insn.src == isa::CALL_HELPER);
    for (pc, insn) in calls {
        if let Some(helper) = u32::try_from(insn.imm).ok().filter(|&helper| linux::is_xdp_only(helper)) {
            let program_type = program_type.name();
            return Err(verifier::error(pc, *insn, LoadErrorKind::HelperNotForType { helper, program_type }));
        }
    }
    Ok(())
}

/// A verified program, ready to run from any number of threads.
pub struct Program {
    insns: Vec<Insn>,
    /// The same instructions packed for the interpreter, on its first run
    /// (a program only compiled needs none).
    slots: OnceLock<Vec<Slot>>,
    functions: Vec<usize>,
    /// As [`verifier::Verified::loops`].
    loops: Vec<u32>,
    helpers: Vec<Option<HelperFn>>,
    /// By helper index, as `helpers`: may the helper stop the run?
    may_stop: Vec<bool>,
    /// Does the code call such a helper (by index, or with `callx`)?
    calls_stopping_helpers: bool,
    unwind: Option<u32>,
    /// The image's maps, then its data sections' maps.
    maps: Vec<Arc<Map>>,
    data_maps: usize,
    regions: Vec<Region>,
    instruction_limit: u64,
    /// The programs of the same object, which its prog arrays may name but
    /// do not keep alive.
    siblings: Vec<Arc<Program>>,
    program_type: ProgramType,
    /// See [`Program::packet_pointers`]: the first `.1` (a program is
    /// copied into engines by value, so it stays small).
    packet_pointers: ([i16; 3], u8),
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("insns", &self.insns.len())
            .field("maps", &self.maps.iter().map(|map| map.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Program {
    /// Loads raw bytecode (8 bytes per slot, little-endian).
    pub fn load(bytecode: &[u8], helpers: &Helpers, config: &Config) -> Result<Program, LoadError> {
        let insns = isa::decode_program(bytecode).ok_or_else(|| {
            verifier::error(bytecode.len() / 8, Insn::default(), LoadErrorKind::PartialSlot(bytecode.len()))
        })?;
        Program::from_image(Image { insns, ..Image::default() }, helpers, config)
    }

    /// Creates the image's maps and global data, points its `lddw`s there,
    /// and verifies the code.
    pub fn from_image(image: Image, helpers: &Helpers, config: &Config) -> Result<Program, LoadError> {
        let maps = maps::create_for(&image, &config.reuse_maps)
            .map_err(|error| verifier::error(0, Insn::default(), LoadErrorKind::Map(error)))?;
        Program::with_maps(image, maps, helpers, config)
    }

    /// As [`Program::from_image`], with maps already created by
    /// [`maps::create_for`] (for this image, or for another one of the
    /// same object, so that programs share them).
    pub fn with_maps(
        mut image: Image,
        maps: Vec<Arc<Map>>,
        helpers: &Helpers,
        config: &Config,
    ) -> Result<Program, LoadError> {
        let declared = image.maps.len();
        assert_eq!(maps.len(), declared + image.data.len(), "maps created by maps::create_for");
        for reloc in &image.data_relocs {
            let (Some(section), true) = (maps.get(declared + reloc.section), reloc.pc + 1 < image.insns.len()) else {
                return Err(verifier::error(
                    reloc.pc,
                    image.insns.get(reloc.pc).copied().unwrap_or_default(),
                    LoadErrorKind::LddwTruncated,
                ));
            };
            let start = section.direct_value().map_or(0, |region| region.start);
            let addr = start.wrapping_add(reloc.offset);
            image.insns[reloc.pc].imm = addr as i32;
            image.insns[reloc.pc + 1].imm = (addr >> 32) as i32;
        }
        resolve_map_lddws(&mut image.insns, &maps, declared)?;
        normalize_callx(&mut image.insns);
        let verifier::Verified { functions, loops } = verifier::verify(&image.insns, helpers)?;
        let program_type = config.program_type.unwrap_or_default();
        check_helpers_apply(&image.insns, program_type)?;
        if program_type == ProgramType::Xdp {
            verifier::rewrite_xdp_context(&mut image.insns)?;
        }
        let mut regions: Vec<Region> = maps.iter().filter_map(|map| map.region()).collect();
        regions.extend(config.regions.iter().copied());
        let mut table = Vec::new();
        let mut may_stop = Vec::new();
        for (index, helper) in helpers.iter().filter(|(index, _)| *index < MAX_HELPER_INDEX) {
            table.resize(table.len().max(index as usize + 1), None);
            may_stop.resize(table.len(), false);
            table[index as usize] = Some(helper.func);
            may_stop[index as usize] = helper.may_stop;
        }
        let stops = |index: i32| usize::try_from(index).ok().and_then(|index| may_stop.get(index)) == Some(&true);
        let calls_stopping_helpers = image.insns.iter().any(|insn| match insn.opc {
            isa::CALL => insn.src == isa::CALL_HELPER && stops(insn.imm),
            isa::CALLX => may_stop.contains(&true),
            _ => false,
        });
        // Only an XDP program has context loads; in block order.
        let fields = [xdp_context::DATA, xdp_context::DATA_END, xdp_context::DATA_META];
        let mut loaded = [false; 3];
        if program_type == ProgramType::Xdp {
            for insn in
                image.insns.iter().filter(|insn| insn.opc == isa::LDXDW && insn.imm == xdp_context::CONTEXT_LOAD)
            {
                if let Some(at) = fields.iter().position(|&field| field == insn.off) {
                    loaded[at] = true;
                }
            }
        }
        let mut packet_pointers = ([0; 3], 0);
        for (field, _) in fields.into_iter().zip(loaded).filter(|&(_, loaded)| loaded) {
            packet_pointers.0[packet_pointers.1 as usize] = field;
            packet_pointers.1 += 1;
        }
        Ok(Program {
            slots: OnceLock::new(),
            insns: image.insns,
            functions,
            loops,
            helpers: table,
            may_stop,
            calls_stopping_helpers,
            unwind: helpers.unwind(),
            data_maps: image.data.len(),
            maps,
            regions,
            instruction_limit: config.instruction_limit,
            siblings: Vec::new(),
            program_type,
            packet_pointers,
        })
    }

    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The instructions packed for the interpreter.
    pub fn slots(&self) -> &[Slot] {
        self.slots.get_or_init(|| self.insns.iter().map(Insn::pack).collect())
    }

    /// First instruction of each function, in order; the entry is at 0.
    pub fn functions(&self) -> &[usize] {
        &self.functions
    }

    /// Does the jump from `from` to `to` close a loop: can control come
    /// back to `from` from `to`?
    pub fn closes_loop(&self, from: usize, to: usize) -> bool {
        self.loops.get(from).is_some_and(|&id| id != verifier::NO_LOOP && self.loops.get(to) == Some(&id))
    }

    pub fn helper(&self, index: u64) -> Option<HelperFn> {
        self.helpers.get(usize::try_from(index).ok()?).copied().flatten()
    }

    pub fn helper_table(&self) -> &[Option<HelperFn>] {
        &self.helpers
    }

    /// May helper `index` stop the run (a built-in that checks its
    /// arguments, or the tail call)?
    pub fn helper_may_stop(&self, index: u64) -> bool {
        usize::try_from(index).ok().and_then(|index| self.may_stop.get(index)).copied().unwrap_or(false)
    }

    /// Does the program call a helper that may stop the run (or call
    /// helpers by register, with such helpers registered)? Then its runs
    /// publish a run state for the built-in helpers, and the engines look at
    /// the stop word after such calls.
    pub fn has_stopping_helpers(&self) -> bool {
        self.calls_stopping_helpers
    }

    /// Does the program write nothing but its own stack frames? Then a run
    /// leaves its input as it was, and may be given memory it only reads
    /// (a classic filter's translation, whose only stores are to its
    /// scratch words, is such a program). True when every store and atomic
    /// addresses r10 plus an offset inside the frame (the verifier keeps r10
    /// the frame pointer) and no helper is called but those that write
    /// nothing (`wire_len`, see [`builtin::reads_only_facts`]), as a
    /// helper may write wherever its arguments point.
    pub fn writes_only_stack(&self) -> bool {
        let frame = -(isa::STACK_FRAME_SIZE as i64);
        self.insns.iter().all(|insn| match insn.class() {
            isa::BPF_ST | isa::BPF_STX => {
                let start = i64::from(insn.off);
                insn.dst == isa::FRAME_REG && start >= frame && start + isa::access_size(insn.opc) as i64 <= 0
            }
            _ if insn.opc == isa::CALL && insn.src != isa::CALL_LOCAL => {
                self.helper(insn.imm as u32 as u64).is_some_and(builtin::reads_only_facts)
            }
            _ => insn.opc != isa::CALLX,
        })
    }

    /// The program's maps: those it declares, then one per global data
    /// section (named after the section).
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// The map named `name`.
    pub fn map(&self, name: &str) -> Option<&Arc<Map>> {
        self.maps.iter().find(|map| map.name() == name)
    }

    pub fn unwind_helper(&self) -> Option<u32> {
        self.unwind
    }

    /// Global data and embedder regions, besides input memory and stack.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Contents of global data section `index`, as they are now.
    pub fn data(&self, index: usize) -> Option<Vec<u8>> {
        if index >= self.data_maps {
            return None;
        }
        self.maps[self.maps.len() - self.data_maps + index].lookup(&0u32.to_ne_bytes()).ok().flatten()
    }

    /// Keeps `programs` (tail-call targets) alive as long as this one.
    pub(crate) fn keep_alive(&mut self, programs: Vec<Arc<Program>>) {
        self.siblings = programs;
    }

    /// The block offsets of the packet pointers an XDP program's context
    /// loads read (`data`, `data_end`, `data_meta`, those it reads, in that
    /// order): those a run checks on entry ([`crate::memory::context_fault`]).
    pub fn packet_pointers(&self) -> &[i16] {
        &self.packet_pointers.0[..self.packet_pointers.1 as usize]
    }

    pub fn program_type(&self) -> ProgramType {
        self.program_type
    }

    pub fn instruction_limit(&self) -> u64 {
        self.instruction_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    fn writes_only_stack(source: &str) -> bool {
        let image = Image { insns: assemble(source).unwrap(), ..Image::default() };
        Program::from_image(image, &Helpers::linux(), &Config::default()).unwrap().writes_only_stack()
    }

    #[test]
    fn only_in_frame_stores_through_r10_and_no_helpers_write_only_the_stack() {
        assert!(writes_only_stack("stxw [%r10-4], %r1\nldxw %r0, [%r1]\nexit"));
        assert!(writes_only_stack("stdw [%r10-512], 7\nmov %r0, 0\nexit"));
        assert!(!writes_only_stack("stxw [%r1], %r2\nmov %r0, 0\nexit"));
        assert!(!writes_only_stack("mov %r2, %r10\nstxw [%r2-4], %r1\nmov %r0, 0\nexit"));
        assert!(!writes_only_stack("stxw [%r10+0], %r1\nmov %r0, 0\nexit"));
        assert!(!writes_only_stack("stxdw [%r10-516], %r1\nmov %r0, 0\nexit"));
        assert!(!writes_only_stack("call 5\nexit"));
        assert!(writes_only_stack("mov %r1, %r2\ncall 256\nexit"));
    }
}
