//! Runs of instructions that a code generator may emit as one, for an
//! equal effect on everything a later instruction reads (see
//! [`super::liveness`]): an address computation, the 16-bit reads that
//! clang writes as two byte loads, a shift and an or, and the extensions
//! of 32 bits to 64 that it writes as two shifts at -mcpu v1. A plan says
//! what a run computes; the backend decides how to emit it.

use std::cell::OnceCell;

use super::checks::{Check, Checks};
use super::flow::Flow;
use super::liveness;
use crate::isa::*;
use crate::scratch::{Reused, reused};

/// A run of instructions emitted as one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fusion {
    /// `mov dst, src; add dst, x`: one address computation, `dst = base
    /// (+ index) + disp`.
    Lea { dst: u8, base: u8, index: Option<u8>, disp: i32 },
    /// Two byte loads from adjacent addresses, one of them shifted left by
    /// 8 (and maybe masked) and or-ed with the other, as clang writes a
    /// 16-bit read of a packet field (BPF has no unaligned loads): one
    /// 16-bit load, byte swapped when the byte shifted up is the
    /// lower-addressed one. The register or-ed in is written no more, so it
    /// must be dead. Both loads must need no check: nothing in the run can
    /// fault.
    BytePair {
        /// The or's destination, which gets the 16 bits.
        dst: u8,
        /// The lower byte's address: `base (+ index) + disp`, folding an
        /// `add` (or `mov; add`) of the loads' base register just before
        /// them when that register is not read again either.
        base: u8,
        index: Option<u8>,
        disp: i32,
        swap: bool,
        /// The bits kept, when the shifted byte is masked before the or.
        mask: u16,
        /// Instructions in the run.
        len: u8,
    },
    /// `[mov dst, src;] lsh dst, 32; rsh|arsh dst, 32`: `dst` = the low 32
    /// bits of `src`, zero- or sign-extended.
    Extend { dst: u8, src: u8, signed: bool, len: u8 },
}

reused!(Option<Fusion>);

/// An address computation at `pc`, `mov dst, src; add dst, x` or `add dst,
/// x`: (its instructions, the register it sets, the value as `base (+
/// index) + disp`).
fn address(insns: &[Insn], pc: usize) -> Option<(usize, u8, u8, Option<u8>, i32)> {
    let insn = insns[pc];
    match (insn.opc, insns.get(pc + 1)) {
        (MOV64_REG, Some(&add)) if insn.off == 0 && insn.dst != insn.src && add.dst == insn.dst => match add.opc {
            // dst + dst is src + src here.
            ADD64_REG => {
                let index = if add.src == insn.dst { insn.src } else { add.src };
                Some((2, insn.dst, insn.src, Some(index), 0))
            }
            ADD64_IMM => Some((2, insn.dst, insn.src, None, add.imm)),
            _ => None,
        },
        (ADD64_REG, _) => Some((1, insn.dst, insn.dst, Some(insn.src), 0)),
        (ADD64_IMM, _) => Some((1, insn.dst, insn.dst, None, insn.imm)),
        _ => None,
    }
}

/// Decides which runs of instructions are emitted as one (after the
/// checks: a byte pair needs its loads unchecked), at the slot where each
/// run starts. The runs are found in the order a code generator steps
/// through the program. Liveness is computed only once some run needs it.
pub(crate) fn plan(insns: &[Insn], flow: &Flow, checks: &Checks) -> Reused<Option<Fusion>> {
    let finder = Finder { flow, checks };
    let called_from = if flow.entry_is_called { 0 } else { flow.entry_end };
    let live_after = OnceCell::new();
    let dead = |pc: usize, reg: u8| {
        live_after.get_or_init(|| liveness::live_after(insns, called_from))[pc] & 1 << (reg & 15) == 0
    };
    let mut fusions = Reused::filled(insns.len(), None);
    let mut pc = 0;
    while pc < insns.len() {
        // Every run starts with a copy, an add, a shift or a byte load:
        // most instructions start none, told by their opcode alone.
        let fusion = match insns[pc].opc {
            MOV64_REG | ADD64_REG | ADD64_IMM | LSH64_IMM | LDXB => finder
                .extend(insns, pc)
                .or_else(|| finder.byte_pair(insns, pc, &dead))
                .or_else(|| finder.lea(insns, pc)),
            _ => None,
        };
        if fusion.is_some() {
            fusions[pc] = fusion;
        }
        pc += match fusion {
            Some(Fusion::Lea { .. }) => 2,
            Some(Fusion::BytePair { len, .. } | Fusion::Extend { len, .. }) => len as usize,
            None if insns[pc].opc == LDDW => 2,
            None => 1,
        };
    }
    fusions
}

/// What the search for fused runs reads.
struct Finder<'a> {
    flow: &'a Flow,
    checks: &'a Checks,
}

impl Finder<'_> {
    fn extend(&self, insns: &[Insn], pc: usize) -> Option<Fusion> {
        let first = insns[pc];
        let copy = first.opc == MOV64_REG && first.off == 0;
        let skip = copy as usize;
        let [left, right] = *insns.get(pc + skip..pc + skip + 2)? else { return None };
        let dst = left.dst;
        let fused = (!copy || first.dst == dst)
            && left.opc == LSH64_IMM
            && left.imm == 32
            && matches!(right.opc, RSH64_IMM | ARSH64_IMM)
            && right.imm == 32
            && right.dst == dst
            && (pc + 1..pc + skip + 2).all(|pc| self.flow.inner(pc));
        let src = if copy { first.src } else { dst };
        fused.then_some(Fusion::Extend { dst, src, signed: right.opc == ARSH64_IMM, len: skip as u8 + 2 })
    }

    fn lea(&self, insns: &[Insn], pc: usize) -> Option<Fusion> {
        match address(insns, pc)? {
            (2, dst, base, index, disp) if self.flow.inner(pc + 1) => Some(Fusion::Lea { dst, base, index, disp }),
            _ => None,
        }
    }

    /// A byte pair at `pc`, or after an address computation at `pc`.
    fn byte_pair(&self, insns: &[Insn], pc: usize, dead: &impl Fn(usize, u8) -> bool) -> Option<Fusion> {
        if let Some((skip, set, base, index, disp)) = address(insns, pc) {
            let inner = (pc + 1..pc + skip + 1).all(|pc| self.flow.inner(pc));
            let pair = inner.then(|| self.plain_byte_pair(insns, pc + skip, dead)).flatten();
            if let Some(Fusion::BytePair { dst, base: pair_base, index: None, disp: pair_disp, swap, mask, len }) = pair
            {
                if pair_base == set && (dst == set || dead(pc + skip + len as usize - 1, set)) {
                    let disp = pair_disp.checked_add(disp)?;
                    return Some(Fusion::BytePair { dst, base, index, disp, swap, mask, len: len + skip as u8 });
                }
            }
        }
        self.plain_byte_pair(insns, pc, dead)
    }

    /// `ldxb a, [base + k]; ldxb b, [base + k ± 1]; lsh a|b, 8; [and a|b,
    /// mask;] or a|b, b|a` (as clang writes it at -mcpu v3), or `ldxb a,
    /// [base + k]; lsh a, 8; [and a, mask;] ldxb b, [base + k ± 1]; or a|b,
    /// b|a` (at v1).
    #[inline]
    fn plain_byte_pair(&self, insns: &[Insn], pc: usize, dead: &impl Fn(usize, u8) -> bool) -> Option<Fusion> {
        // Most instructions start no pair: tell at once, without a call.
        if insns.get(pc)?.opc != LDXB {
            return None;
        }
        self.byte_pair_at(insns, pc, dead)
    }

    /// [`Finder::plain_byte_pair`] at a byte load.
    #[inline(never)]
    fn byte_pair_at(&self, insns: &[Insn], pc: usize, dead: &impl Fn(usize, u8) -> bool) -> Option<Fusion> {
        let run = &insns[pc..];
        let first = run[0];
        // Loaded both before the shift, or the shifted byte first.
        let both_first = run.get(1)?.opc == LDXB;
        let mut next = if both_first { 2 } else { 1 };
        let shift = *run.get(next)?;
        next += 1;
        // The shifted byte masked before the or (a fragment offset's flags
        // cleared, say): the 16 bits masked by the mask's bits 8-15 (the
        // shifted byte has no others), the other byte kept whole.
        let and = *run.get(next)?;
        let masked = matches!(and.opc, AND32_IMM | AND64_IMM) && and.dst == shift.dst;
        let mask = if masked {
            next += 1;
            and.imm as u16 | 0xff
        } else {
            0xffff
        };
        let second = if both_first {
            run[1]
        } else {
            // Shifted before the other byte is loaded: the first one.
            if shift.dst != first.dst {
                return None;
            }
            next += 1;
            *run.get(next - 1)?
        };
        let or = *run.get(next)?;
        let len = next + 1;
        let loads = first.opc == LDXB
            && second.opc == LDXB
            && first.src == second.src
            && first.dst != first.src
            && first.dst != second.dst
            && self.checks.accesses[pc].check == Check::None
            && self.checks.accesses[pc + if both_first { 1 } else { len - 2 }].check == Check::None;
        let low = match second.off.checked_sub(first.off)? {
            1 => first,
            -1 => second,
            _ => return None,
        };
        let pair = [first.dst, second.dst];
        let shifted = matches!(shift.opc, LSH32_IMM | LSH64_IMM) && shift.imm == 8 && pair.contains(&shift.dst);
        let ored = matches!(or.opc, OR32_REG | OR64_REG) && pair.contains(&or.dst) && pair.contains(&or.src);
        let inner = (pc + 1..pc + len).all(|pc| self.flow.inner(pc));
        let fused = loads && shifted && ored && or.dst != or.src && inner && dead(pc + len - 1, or.src);
        fused.then_some(Fusion::BytePair {
            dst: or.dst,
            base: first.src,
            index: None,
            disp: low.off as i32,
            swap: shift.dst == low.dst,
            mask,
            len: len as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Program;

    fn plan_of(program: &Program) -> Vec<Option<Fusion>> {
        let flow = Flow::new(program);
        plan(program.insns(), &flow, &Checks::plan(program, &flow)).to_vec()
    }

    #[test]
    fn clangs_16_bit_reads_become_one_load() {
        use crate::helpers::Helpers;
        use crate::program::Config;
        let pairs = |object: &[u8]| {
            let program = Program::from_elf(object, None, &Helpers::new(), &Config::default()).expect("loads");
            let fused = plan_of(&program).into_iter().enumerate().filter_map(|(pc, fusion)| match fusion {
                Some(Fusion::BytePair { index, swap, mask, len, .. }) => Some((pc, index.is_some(), swap, mask, len)),
                _ => None,
            });
            fused.collect::<Vec<_>>()
        };
        // The ethertype (twice), through `r1 + 12` and `r1 + 16`; the
        // fragment offset, masked between its shift and its or; the
        // destination port, through `r1 + r3 + 2`.
        let classifier = pairs(include_bytes!("../../examples/classifier.o"));
        let expected = [
            (2, false, true, 0xffff, 4),
            (12, false, true, 0xffff, 4),
            (42, false, true, 0x1fff, 5),
            (53, true, true, 0xffff, 5),
        ];
        assert_eq!(classifier, expected);
        // The checksum's loop reads `r1 + r4` and `r1 + r4 + 1`.
        let checksum = pairs(include_bytes!("../../tests/fixtures/checksum.o"));
        assert_eq!(checksum, [(6, true, true, 0xffff, 6)]);
        // At -mcpu v1, clang shifts the first byte before it loads the
        // second: the loop of the C API benchmark's checksum.
        let checksum_v1 = pairs(include_bytes!("../../benches/capi/checksum.v1.o"));
        assert_eq!(checksum_v1, [(8, false, true, 0xffff, 4)]);
    }

    /// Byte pairs in every shape clang might write them, and near misses:
    /// either order, the second load before or after the shift, either
    /// byte shifted and maybe masked, either width, the
    /// or either way round, the address computed just before or not (r13
    /// as its base or index too), the spare register and the base read
    /// again or not, the loads proved or checked. Both engines must agree
    /// on the result, the count and the memory, and enough programs must be
    /// fused for that to say something.
    #[test]
    fn byte_pairs_read_what_their_bytes_hold() {
        use std::sync::Arc;

        use crate::helpers::Helpers;
        use crate::jit::JitProgram;
        use crate::program::Config;
        use crate::testing::engines;
        use crate::testing::testgen::{self, ByteSource};

        // r1 keeps the input's address, r2 its length; r3 a small constant;
        // r9 the computed address; r7 sometimes a copy of r1 or r3.
        const VALUES: [u8; 7] = [0, 4, 5, 6, 7, 8, 9];
        let (mut fused_programs, mut interleaved_programs) = (0, 0);
        for seed in 0..5_000 {
            let bytes = testgen::seed_bytes(seed);
            let mut rng = ByteSource::new(&bytes);
            let mut insns = vec![Insn::new(MOV64_IMM, 3, 0, 0, rng.below(4) as i32)];
            for &r in &VALUES {
                insns.push(Insn::new(MOV64_IMM, r, 0, 0, 0x100 + rng.below(256) as i32));
            }
            let mut exits = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let k = rng.below(12) as i16;
                if rng.below(4) != 0 {
                    // Proves the reads below, or (one short) does not.
                    exits.push(insns.len());
                    insns.push(Insn::new(JLT_IMM, 2, 0, 0, k as i32 + 5 - rng.below(2) as i32));
                }
                // The address and the constant, also in r7 (r13, which as a
                // base needs a displacement byte).
                let address = if rng.below(3) == 0 {
                    insns.push(Insn::new(MOV64_REG, 7, 1, 0, 0));
                    7
                } else {
                    1
                };
                let constant = if address == 1 && rng.below(3) == 0 {
                    insns.push(Insn::new(MOV64_REG, 7, 3, 0, 0));
                    7
                } else {
                    3
                };
                let base = match rng.below(5) {
                    0 => address,
                    1 => {
                        insns.push(Insn::new(MOV64_REG, 9, address, 0, 0));
                        insns.push(Insn::new(ADD64_REG, 9, constant, 0, 0));
                        9
                    }
                    2 => {
                        insns.push(Insn::new(MOV64_REG, 9, address, 0, 0));
                        insns.push(Insn::new(ADD64_IMM, 9, 0, 0, 2));
                        9
                    }
                    3 => {
                        // Apart, so only the add is folded.
                        insns.push(Insn::new(MOV64_REG, 9, address, 0, 0));
                        insns.push(Insn::new(XOR64_REG, 0, 3, 0, 0));
                        insns.push(Insn::new(ADD64_REG, 9, constant, 0, 0));
                        9
                    }
                    _ => {
                        insns.push(Insn::new(MOV64_REG, 9, 1, 0, 0));
                        insns.push(Insn::new(ADD64_REG, 9, 9, 0, 0));
                        insns.push(Insn::new(SUB64_REG, 9, 1, 0, 0));
                        9
                    }
                };
                let (a, b) = (rng.pick(&VALUES), rng.pick(&VALUES));
                if a == b || a == base {
                    continue;
                }
                let (first, second) = if rng.below(2) == 0 { (k, k + 1) } else { (k + 1, k) };
                // Both loads first (clang at v3), or the second after the
                // shift (at v1; a near miss when the byte shifted is the
                // one not loaded yet).
                let interleaved = rng.below(2) == 0;
                insns.push(Insn::new(LDXB, a, base, first, 0));
                if !interleaved {
                    insns.push(Insn::new(LDXB, b, base, second, 0));
                }
                let (shifted, other) = if rng.below(2 + 3 * interleaved as u32) != 0 { (a, b) } else { (b, a) };
                let amount = if rng.below(8) == 0 { 4 } else { 8 };
                insns.push(Insn::new(rng.pick(&[LSH32_IMM, LSH64_IMM]), shifted, 0, 0, amount));
                if rng.below(3) == 0 {
                    // Masked (or, a near miss, the other byte masked).
                    let masked = if rng.below(4) == 0 { other } else { shifted };
                    let mask = rng.pick(&[0x1f00, 0x1fff, -256, 0x0ff0, 0x8000, 0]);
                    insns.push(Insn::new(rng.pick(&[AND32_IMM, AND64_IMM]), masked, 0, 0, mask));
                }
                if interleaved {
                    insns.push(Insn::new(LDXB, b, base, second, 0));
                }
                let (dst, src) = if rng.below(2) == 0 { (shifted, other) } else { (other, shifted) };
                insns.push(Insn::new(rng.pick(&[OR32_REG, OR64_REG]), dst, src, 0, 0));
                // Read some registers again (the spare, the base, others).
                for _ in 0..rng.below(3) {
                    insns.push(Insn::new(rng.pick(&[XOR64_REG, ADD64_REG]), 0, rng.pick(&[a, b, 9, 4, 6]), 0, 0));
                }
            }
            // Some registers into the result; the others are dead.
            for _ in 0..rng.below(4) {
                insns.push(Insn::new(XOR64_REG, 0, rng.pick(&VALUES), 0, 0));
            }
            let exit = insns.len();
            insns.push(Insn::new(EXIT, 0, 0, 0, 0));
            for pc in exits {
                insns[pc].off = (exit - pc - 1) as i16;
            }
            let program = Arc::new(
                Program::load(&encode_program(&insns), &Helpers::new(), &Config::default())
                    .unwrap_or_else(|error| panic!("seed {seed}: {error}")),
            );
            let plan = plan_of(&program);
            let pairs =
                || plan.iter().enumerate().filter(|(_, fusion)| matches!(fusion, Some(Fusion::BytePair { .. })));
            fused_programs += pairs().next().is_some() as u32;
            // Fused with the second load after the shift.
            interleaved_programs += pairs().any(|(pc, _)| {
                let run = &program.insns()[pc..];
                run.iter().position(|insn| insn.opc == LSH32_IMM || insn.opc == LSH64_IMM)
                    < run.iter().skip(1).position(|insn| insn.opc == LDXB).map(|at| at + 1)
            }) as u32;
            let jit = JitProgram::compile(program.clone()).expect("compiles");
            for _ in 0..4 {
                let len = rng.below(20) as usize;
                let input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                let _ = engines::assert_agree(&program, &jit, &input, &format_args!("seed {seed}, program {insns:?}"));
            }
        }
        assert!(fused_programs > 1_000, "only {fused_programs} programs had a fused pair");
        assert!(interleaved_programs > 300, "only {interleaved_programs} programs had a fused v1 pair");
    }

    /// Extensions of 32 bits to 64 as two shifts, with the copy before
    /// them or not, and near misses: other amounts or widths, the second
    /// shift of another register, a copy to another register or a
    /// sign-extending one, a jump landing inside the run. Both engines
    /// must agree, and enough programs must be fused for that to say
    /// something.
    #[test]
    fn extensions_keep_the_low_32_bits() {
        use std::sync::Arc;

        use crate::helpers::Helpers;
        use crate::jit::JitProgram;
        use crate::program::Config;
        use crate::testing::engines;
        use crate::testing::testgen::{self, ByteSource};

        const VALUES: [u8; 5] = [0, 3, 4, 5, 6];
        let mut fused_programs = 0;
        for seed in 0..3_000 {
            let bytes = testgen::seed_bytes(seed);
            let mut rng = ByteSource::new(&bytes);
            let mut insns = Vec::new();
            for &r in &VALUES {
                let value = rng.u64();
                insns.push(Insn::new(LDDW, r, 0, 0, value as i32));
                insns.push(Insn::new(0, 0, 0, 0, (value >> 32) as i32));
            }
            for _ in 0..1 + rng.below(3) {
                let (dst, src) = (rng.pick(&VALUES), rng.pick(&VALUES));
                // Skips the next instruction, landing inside the run.
                if rng.below(6) == 0 {
                    insns.push(Insn::new(JEQ_IMM, 2, 0, 1, rng.below(3) as i32));
                }
                match rng.below(4) {
                    0 => {}
                    1 => insns.push(Insn::new(MOV64_REG, rng.pick(&VALUES), src, 0, 0)),
                    2 => insns.push(Insn::new(MOV64_REG, dst, src, rng.pick(&[8, 16, 32]), 0)),
                    _ => insns.push(Insn::new(MOV64_REG, dst, src, 0, 0)),
                }
                let (left, amount) = rng.pick(&[(LSH64_IMM, 32), (LSH64_IMM, 32), (LSH64_IMM, 31), (LSH32_IMM, 16)]);
                insns.push(Insn::new(left, dst, 0, 0, amount));
                let (right, amount) =
                    rng.pick(&[(RSH64_IMM, 32), (ARSH64_IMM, 32), (RSH64_IMM, 33), (ARSH64_IMM, 31), (RSH32_IMM, 16)]);
                let shifted = if rng.below(8) == 0 { rng.pick(&VALUES) } else { dst };
                insns.push(Insn::new(right, shifted, 0, 0, amount));
                insns.push(Insn::new(XOR64_REG, 0, rng.pick(&[dst, src, shifted]), 0, 0));
            }
            insns.push(Insn::new(EXIT, 0, 0, 0, 0));
            let program = Arc::new(
                Program::load(&encode_program(&insns), &Helpers::new(), &Config::default())
                    .unwrap_or_else(|error| panic!("seed {seed}: {error}")),
            );
            fused_programs +=
                plan_of(&program).iter().any(|fusion| matches!(fusion, Some(Fusion::Extend { .. }))) as u32;
            let jit = JitProgram::compile(program.clone()).expect("compiles");
            for len in [0, 1] {
                let _ = engines::assert_agree(
                    &program,
                    &jit,
                    &vec![0; len],
                    &format_args!("seed {seed}, program {insns:?}"),
                );
            }
        }
        assert!(fused_programs > 600, "only {fused_programs} programs had a fused extension");
    }
}
