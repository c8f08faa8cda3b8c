//! What the targets share: deterministic helpers, a small instruction
//! budget, and the one engine comparison (`qemu_ubpf::testing::engines`)
//! wherever a program runs. A difference panics, which the fuzzer reports.

#![allow(dead_code)]

use std::sync::Arc;

use qemu_ubpf::error::ExecError;
use qemu_ubpf::helpers::linux;
use qemu_ubpf::jit::JitProgram;
use qemu_ubpf::testing::{engines, testgen};
use qemu_ubpf::xdp::Buffer;
use qemu_ubpf::{Config, Helpers, Program, ProgramType};

/// Enough for every committed program over a small packet; endless loops
/// end quickly.
pub const INSTRUCTION_LIMIT: u64 = 20_000;

pub fn config() -> Config {
    Config { instruction_limit: INSTRUCTION_LIMIT, ..Config::default() }
}

extern "C" fn fixed_clock(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    1_700_000_000_000_000_000
}

extern "C" fn fixed_random(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    a.wrapping_mul(0x9e37_79b9) & 0xffff_ffff
}

/// Linux's helpers, with the clock and the random numbers fixed so that
/// both engines see the same values.
pub fn helpers() -> Helpers {
    let mut helpers = Helpers::linux();
    helpers.register(linux::KTIME_GET_NS, "bpf_ktime_get_ns", fixed_clock);
    helpers.register(linux::KTIME_GET_BOOT_NS, "bpf_ktime_get_boot_ns", fixed_clock);
    helpers.register(linux::GET_PRANDOM_U32, "bpf_get_prandom_u32", fixed_random);
    helpers
}

/// A 64-byte Ethernet/IPv4/UDP frame to 1.1.1.1.
pub const FRAME: [u8; 64] = {
    let mut frame = [0u8; 64];
    frame[12] = 0x08;
    frame[14] = 0x45;
    frame[17] = 50;
    frame[22] = 64;
    frame[23] = 17;
    frame[26] = 10;
    frame[29] = 1;
    frame[30] = 1;
    frame[31] = 1;
    frame[32] = 1;
    frame[33] = 1;
    frame
};

/// Runs a program that `load` gives (twice: one load per engine, so that
/// both start from the same global data and maps) over `input` in the
/// interpreter and the JIT, XDP programs over an XDP buffer of `input`, and
/// panics when they differ. `None` when it does not load.
///
/// An access is checked against every region, so a wild one (a data
/// pointer plus a large offset), or a pointer stored as data, gives what
/// depends on where the allocator put each load: the comparer explains the
/// cases it can. A difference is confirmed on [`LAYOUTS`] pairs of fresh
/// loads, each among allocations of other sizes, and reported only when
/// every pair shows the same difference: a difference between the engines
/// does not depend on where memory lies, nor on which engine's load came
/// first.
pub fn compare(input: &[u8], load: impl Fn() -> Option<Program>) -> Option<Result<u64, ExecError>> {
    let mut first: Option<Difference> = None;
    for layout in 0..LAYOUTS {
        // Moves the loads' regions, and the input copy allocated after
        // them, apart by another amount each time; kept until compared.
        // Every other pair is loaded in the other order: which load lies
        // nearer the input and the other allocations is where the allocator
        // put it, not which engine runs it.
        let _before: Vec<Vec<u8>> = (0..layout).map(|step| vec![0; 40 << (2 * step)]).collect();
        let earlier = load()?;
        let _between = vec![0u8; 24 << layout];
        let later = load().expect("a program that loaded once loads again");
        let _after = vec![0u8; 3000 * layout + 8];
        let (interpreted, compiled) = if layout % 2 == 0 { (earlier, later) } else { (later, earlier) };
        let compiled = Arc::new(compiled);
        match compare_loads(input, &interpreted, compiled)? {
            Ok(result) => return Some(result),
            Err(difference) => match &first {
                // Layout: the interpreter's result stands for the run.
                Some(seen) if seen.detail != difference.detail => return Some(difference.interpreted),
                Some(_) => {}
                None => first = Some(difference),
            },
        }
    }
    panic!("{}", first.expect("a difference on every layout").report)
}

/// A difference the comparer found: its first detail, the interpreter's
/// result and the whole report, with the listing.
struct Difference {
    detail: String,
    interpreted: Result<u64, ExecError>,
    report: String,
}

/// How many pairs of loads a difference must show on.
const LAYOUTS: usize = 4;

/// One comparison of the two loads.
fn compare_loads(
    input: &[u8],
    interpreted: &Program,
    compiled: Arc<Program>,
) -> Option<Result<Result<u64, ExecError>, Difference>> {
    let jit = match JitProgram::compile(compiled.clone()) {
        Ok(jit) => jit,
        Err(error) => panic!("the JIT refused a verified program: {error}\n{}", testgen::listing(compiled.insns())),
    };
    let run = |memory: &mut [u8]| {
        let (result, executed) = jit.execute_counted(memory);
        (result, Some(executed))
    };
    let result = if interpreted.program_type() == ProgramType::Xdp {
        let buffer = Buffer::new(input, &[], Default::default()).ok()?;
        engines::compare_xdp(&buffer, interpreted, &compiled, run)
    } else {
        engines::compare(input, interpreted, &compiled, run)
    };
    Some(result.map_err(|divergence| Difference {
        report: format!("{divergence}{}", testgen::listing(compiled.insns())),
        interpreted: divergence.interpreter.result.clone(),
        detail: divergence.detail,
    }))
}

/// Reads choices from the fuzzer's bytes; zeros once they run out.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next `len` bytes, fewer when fewer are left.
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}
