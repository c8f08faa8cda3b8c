//! Classic BPF (what `tcpdump -d` prints and `SO_ATTACH_FILTER` takes),
//! checked as Linux's `bpf_check_classic` checks it and translated into eBPF
//! with the semantics of Linux's `bpf_convert_filter`:
//!
//! - A is r0, X is r7, and the sixteen scratch words M[0..15] live in the
//!   stack, M[k] at `r10 - 64 + 4k`. Both A and X start at zero.
//! - Packet loads become the legacy eBPF packet loads (`ldabs*`/`ldind*`):
//!   network byte order, and a load past the end of the packet ends the
//!   program with 0, so the packet passes unfiltered... or, in a socket
//!   filter, is cut to nothing.
//! - Arithmetic is 32-bit and unsigned; a division or modulo by X = 0 ends
//!   the program with 0.
//! - The packet length (`ld len`) is its length on the wire, as libpcap's
//!   own filter and Linux's (`skb->len`) see it: the built-in helper
//!   `wire_len` ([`builtin::WIRE_LEN`]) given the run's input length, which
//!   a filter gets in r2 and the translation keeps in r9. That is the input
//!   length itself unless the host says a snapshot length cut the packet
//!   short (replay of such a record).
//!
//! A classic program's result is the number of bytes to keep, so zero means
//! "no match". Under the filter semantics (non-zero drops), a translated
//! expression drops the packets it matches.

use thiserror::Error;

use crate::error::LoadError;
use crate::helpers::Helpers;
use crate::helpers::builtin::{self, WIRE_LEN, WIRE_LEN_NAME};
use crate::image::Image;
use crate::isa::{self, Insn};
use crate::program::{Config, Program};

pub mod libpcap;
pub mod object_file;

/// Most instructions in a classic program (Linux's `BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Scratch memory words (Linux's `BPF_MEMWORDS`).
pub const MEM_WORDS: u32 = 16;

// Classic opcode fields beyond eBPF's: the classes that eBPF renamed, and
// the modes and operations eBPF does not have.
const CLASS_RET: u16 = 0x06;
const CLASS_MISC: u16 = 0x07;
const MODE_LEN: u16 = 0x80;
const MODE_MSH: u16 = 0xa0;
const RVAL_A: u16 = 0x10;
const MISC_TAX: u16 = 0x00;
const MISC_TXA: u16 = 0x80;

/// Where Linux's ancillary loads begin (`SKF_AD_OFF`): an absolute load at
/// this offset or above reads socket-buffer metadata, not the packet.
const ANCILLARY_BASE: u32 = 0xffff_f000;
const ANCILLARY_VLAN_TAG: u32 = 44;
const ANCILLARY_VLAN_TAG_PRESENT: u32 = 48;
const ANCILLARY_ALU_XOR_X: u32 = 40;
const ANCILLARY_NAMES: [(u32, &str); 16] = [
    (0, "protocol"),
    (4, "pkttype"),
    (8, "ifindex"),
    (12, "nlattr"),
    (16, "nlattr_nest"),
    (20, "mark"),
    (24, "queue"),
    (28, "hatype"),
    (32, "rxhash"),
    (36, "cpu"),
    (40, "alu_xor_x"),
    (44, "vlan_tci"),
    (48, "vlan_avail"),
    (52, "pay_offset"),
    (56, "random"),
    (60, "vlan_tpid"),
];

const REG_A: u8 = 0;
const REG_X: u8 = 7;
/// Keeps A across the byte load of `ldx 4*([k]&0xf)` and the call of
/// `ldx len`; a legacy packet load may clobber r1..r5, as in the kernel,
/// and a call does.
const REG_SAVED_A: u8 = 8;
const REG_LEN: u8 = 9;
const REG_PACKET: u8 = 6;

/// One classic instruction (`struct sock_filter`, libpcap's `struct
/// bpf_insn`), laid out as C lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ClassicInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Why a classic program was refused, and at which instruction.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("classic BPF instruction {index}: {kind}")]
pub struct CbpfError {
    pub index: usize,
    pub kind: CbpfErrorKind,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CbpfErrorKind {
    #[error("the program is empty")]
    Empty,
    #[error("the program has {0} instructions, more than {MAX_INSNS}")]
    TooLong(usize),
    #[error("opcode {0:#06x} is not a classic BPF instruction")]
    UnknownOpcode(u16),
    #[error("division or modulo by the constant 0")]
    DivisionByZero,
    #[error("shift by {0}, 32 or more")]
    ShiftTooLarge(u32),
    #[error("scratch word M[{0}] does not exist (there are {MEM_WORDS})")]
    NoSuchScratchWord(u32),
    #[error("scratch word M[{0}] may be read before anything is stored in it")]
    ScratchReadBeforeWrite(u32),
    #[error("the jump leaves the program")]
    JumpOutOfRange,
    #[error("the program's last instruction is not a return")]
    NoFinalReturn,
    #[error("the ancillary load of {0} reads socket-buffer metadata that a frame here does not carry")]
    UnsupportedAncillary(&'static str),
    #[error("the load at offset {0} reads relative to a header only the kernel locates (SKF_NET_OFF/SKF_LL_OFF)")]
    HeaderRelativeLoad(i32),
    #[error("cannot parse `{0}` as `code jt jf k`")]
    Syntax(String),
    #[error("the count line says {expected} instructions, but {found} follow")]
    CountMismatch { expected: usize, found: usize },
}

/// Why a filter (an expression, or a classic program) did not become a
/// program.
#[derive(Debug, Error)]
pub enum FilterError {
    /// libpcap refused the expression: its message.
    #[error("{0}")]
    Expression(String),
    /// libpcap, which compiles expressions, could not be loaded: why, and
    /// the package to install.
    #[error("{0}")]
    Libpcap(String),
    #[error(transparent)]
    Classic(#[from] CbpfError),
    /// The translation did not verify: a fault of the translation.
    #[error("the translated program does not load: {0}")]
    Load(#[from] LoadError),
}

fn error(index: usize, kind: CbpfErrorKind) -> CbpfError {
    CbpfError { index, kind }
}

/// Parses what `tcpdump -ddd` prints: a line with the instruction count,
/// then one `code jt jf k` line (decimal) per instruction. A parse error
/// names the instruction the line would have been.
pub fn parse_decimal(text: &str) -> Result<Vec<ClassicInsn>, CbpfError> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let count_line = lines.next().ok_or(error(0, CbpfErrorKind::Empty))?;
    let expected: usize = count_line.parse().map_err(|_| error(0, CbpfErrorKind::Syntax(count_line.to_string())))?;
    let mut program = Vec::with_capacity(expected.min(MAX_INSNS));
    for (index, line) in lines.enumerate() {
        let syntax = || error(index, CbpfErrorKind::Syntax(line.to_string()));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [code, jt, jf, k] = fields[..] else { return Err(syntax()) };
        program.push(ClassicInsn {
            code: code.parse().map_err(|_| syntax())?,
            jt: jt.parse().map_err(|_| syntax())?,
            jf: jf.parse().map_err(|_| syntax())?,
            k: k.parse().map_err(|_| syntax())?,
        });
    }
    if program.len() != expected {
        return Err(error(program.len(), CbpfErrorKind::CountMismatch { expected, found: program.len() }));
    }
    Ok(program)
}

/// What one classic instruction is, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// A op= K or A op= X (`op` an eBPF ALU operation, `source` BPF_K/BPF_X).
    Alu {
        op: u8,
        source: u8,
    },
    Neg,
    /// A = P[k:size] (`size` an eBPF size field).
    LoadAbs {
        size: u8,
    },
    /// A = P[X + k:size].
    LoadInd {
        size: u8,
    },
    LoadLen {
        to_x: bool,
    },
    LoadImm {
        to_x: bool,
    },
    LoadMem {
        to_x: bool,
    },
    /// X = 4 * (P[k] & 0xf).
    LoadIpHeaderLen,
    Ancillary(u32),
    Store {
        from_x: bool,
    },
    Tax,
    Txa,
    Jump,
    /// if A op K/X goto jt else goto jf (`op` an eBPF jump operation).
    JumpIf {
        op: u8,
        source: u8,
    },
    ReturnK,
    ReturnA,
}

fn decode(code: u16) -> Option<Op> {
    const LD: u16 = isa::BPF_LD as u16;
    const LDX: u16 = isa::BPF_LDX as u16;
    const W: u16 = isa::BPF_W as u16;
    const B: u16 = isa::BPF_B as u16;
    const IMM: u16 = isa::BPF_IMM as u16;
    const MEM: u16 = isa::BPF_MEM as u16;
    const LD_LEN: u16 = LD | W | MODE_LEN;
    const LD_IMM: u16 = LD | IMM;
    const LD_MEM: u16 = LD | MEM;
    const LDX_LEN: u16 = LDX | W | MODE_LEN;
    const LDX_MSH: u16 = LDX | B | MODE_MSH;
    const LDX_IMM: u16 = LDX | IMM;
    const LDX_MEM: u16 = LDX | MEM;
    const ST: u16 = isa::BPF_ST as u16;
    const STX: u16 = isa::BPF_STX as u16;
    const RET_K: u16 = CLASS_RET;
    const RET_A: u16 = CLASS_RET | RVAL_A;
    const TAX: u16 = CLASS_MISC | MISC_TAX;
    const TXA: u16 = CLASS_MISC | MISC_TXA;

    let [low, high] = code.to_le_bytes();
    if high != 0 {
        return None;
    }
    let (class, size, mode, op, source) =
        (low & isa::CLASS_MASK, low & isa::SIZE_MASK, low & isa::MODE_MASK, low & isa::OP_MASK, low & isa::SOURCE_MASK);
    let packet_size = matches!(size, isa::BPF_W | isa::BPF_H | isa::BPF_B);
    Some(match code {
        LD_LEN => Op::LoadLen { to_x: false },
        LD_IMM => Op::LoadImm { to_x: false },
        LD_MEM => Op::LoadMem { to_x: false },
        LDX_LEN => Op::LoadLen { to_x: true },
        LDX_MSH => Op::LoadIpHeaderLen,
        LDX_IMM => Op::LoadImm { to_x: true },
        LDX_MEM => Op::LoadMem { to_x: true },
        ST => Op::Store { from_x: false },
        STX => Op::Store { from_x: true },
        RET_K => Op::ReturnK,
        RET_A => Op::ReturnA,
        TAX => Op::Tax,
        TXA => Op::Txa,
        _ if class == isa::BPF_LD && mode == isa::BPF_ABS && packet_size => Op::LoadAbs { size },
        _ if class == isa::BPF_LD && mode == isa::BPF_IND && packet_size => Op::LoadInd { size },
        // Classic's ALU class is eBPF's 32-bit ALU class.
        _ if class == isa::BPF_ALU => match op {
            isa::BPF_NEG if source == isa::BPF_K => Op::Neg,
            isa::BPF_ADD
            | isa::BPF_SUB
            | isa::BPF_MUL
            | isa::BPF_DIV
            | isa::BPF_MOD
            | isa::BPF_AND
            | isa::BPF_OR
            | isa::BPF_XOR
            | isa::BPF_LSH
            | isa::BPF_RSH => Op::Alu { op, source },
            _ => return None,
        },
        _ if class == isa::BPF_JMP => match op {
            isa::BPF_JA if source == isa::BPF_K => Op::Jump,
            isa::BPF_JEQ | isa::BPF_JGT | isa::BPF_JGE | isa::BPF_JSET => Op::JumpIf { op, source },
            _ => return None,
        },
        _ => return None,
    })
}

fn ancillary_name(offset: u32) -> &'static str {
    ANCILLARY_NAMES.iter().find(|(o, _)| *o == offset).map_or("an unknown field", |(_, name)| name)
}

/// Checks a classic program as Linux's `bpf_check_classic` does, and
/// decodes it.
fn check(program: &[ClassicInsn]) -> Result<Vec<Op>, CbpfError> {
    if program.is_empty() {
        return Err(error(0, CbpfErrorKind::Empty));
    }
    if program.len() > MAX_INSNS {
        return Err(error(MAX_INSNS, CbpfErrorKind::TooLong(program.len())));
    }
    let len = program.len();
    let mut ops = Vec::with_capacity(len);
    for (pc, insn) in program.iter().enumerate() {
        let fail = |kind| Err(error(pc, kind));
        let Some(mut op) = decode(insn.code) else { return fail(CbpfErrorKind::UnknownOpcode(insn.code)) };
        match op {
            Op::Alu { op: isa::BPF_DIV | isa::BPF_MOD, source: isa::BPF_K } if insn.k == 0 => {
                return fail(CbpfErrorKind::DivisionByZero);
            }
            Op::Alu { op: isa::BPF_LSH | isa::BPF_RSH, source: isa::BPF_K } if insn.k >= 32 => {
                return fail(CbpfErrorKind::ShiftTooLarge(insn.k));
            }
            Op::LoadMem { .. } | Op::Store { .. } if insn.k >= MEM_WORDS => {
                return fail(CbpfErrorKind::NoSuchScratchWord(insn.k));
            }
            Op::Jump if insn.k as usize >= len - pc - 1 => return fail(CbpfErrorKind::JumpOutOfRange),
            Op::JumpIf { .. } if pc + insn.jt as usize + 1 >= len || pc + insn.jf as usize + 1 >= len => {
                return fail(CbpfErrorKind::JumpOutOfRange);
            }
            // An absolute load at an ancillary offset reads metadata, whatever
            // its size (as Linux's bpf_anc_helper reads it).
            Op::LoadAbs { .. } if insn.k >= ANCILLARY_BASE => op = Op::Ancillary(insn.k - ANCILLARY_BASE),
            _ => {}
        }
        ops.push(op);
    }
    if !matches!(ops[len - 1], Op::ReturnK | Op::ReturnA) {
        return Err(error(len - 1, CbpfErrorKind::NoFinalReturn));
    }
    check_scratch_reads(program, &ops)?;
    Ok(ops)
}

/// Every read of M[k] must follow a store to it on every path, as Linux's
/// `check_load_and_stores` decides it: a forward walk that meets each jump
/// target with what every jump to it has stored.
fn check_scratch_reads(program: &[ClassicInsn], ops: &[Op]) -> Result<(), CbpfError> {
    let mut stored_at = vec![u16::MAX; program.len()];
    let mut stored: u16 = 0;
    for (pc, (insn, op)) in program.iter().zip(ops).enumerate() {
        stored &= stored_at[pc];
        match op {
            Op::Store { .. } => stored |= 1 << insn.k,
            Op::LoadMem { .. } if stored & (1 << insn.k) == 0 => {
                return Err(error(pc, CbpfErrorKind::ScratchReadBeforeWrite(insn.k)));
            }
            Op::Jump => {
                stored_at[pc + 1 + insn.k as usize] &= stored;
                stored = u16::MAX;
            }
            Op::JumpIf { .. } => {
                stored_at[pc + 1 + insn.jt as usize] &= stored;
                stored_at[pc + 1 + insn.jf as usize] &= stored;
                stored = u16::MAX;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where M[k] lives, from the frame pointer.
fn scratch_offset(k: u32) -> i16 {
    -4 * (MEM_WORDS - k) as i16
}

fn alu32(op: u8, source: u8, dst: u8, src: u8, imm: i32) -> Insn {
    Insn::new(isa::BPF_ALU | source | op, dst, src, 0, imm)
}

fn mov32_reg(dst: u8, src: u8) -> Insn {
    alu32(isa::BPF_MOV, isa::BPF_X, dst, src, 0)
}

fn mov32_imm(dst: u8, imm: u32) -> Insn {
    alu32(isa::BPF_MOV, isa::BPF_K, dst, 0, imm as i32)
}

const EXIT: Insn = Insn::new(isa::EXIT, 0, 0, 0, 0);
/// r0 = the packet's length on the wire, given r1 = its input length.
const CALL_WIRE_LEN: Insn = Insn::new(isa::CALL, 0, isa::CALL_HELPER, 0, WIRE_LEN as i32);

/// A jump whose offset is patched once every classic instruction's place
/// in the eBPF program is known.
struct PendingJump {
    at: usize,
    to_classic: usize,
}

/// Checks a classic program and translates it into an eBPF filter: r1 is
/// the packet and r2 its length, as for every filter.
pub fn translate(program: &[ClassicInsn]) -> Result<Vec<Insn>, CbpfError> {
    let ops = check(program)?;
    let mut out = vec![
        alu32(isa::BPF_XOR, isa::BPF_X, REG_A, REG_A, 0),
        alu32(isa::BPF_XOR, isa::BPF_X, REG_X, REG_X, 0),
        Insn::new(isa::MOV64_REG, REG_PACKET, 1, 0, 0),
        Insn::new(isa::MOV64_REG, REG_LEN, 2, 0, 0),
    ];
    let mut starts = Vec::with_capacity(program.len());
    let mut jumps = Vec::new();
    for (pc, (insn, op)) in program.iter().zip(&ops).enumerate() {
        starts.push(out.len());
        let k = insn.k;
        match *op {
            Op::Alu { op: op @ (isa::BPF_DIV | isa::BPF_MOD), source: isa::BPF_X } => {
                // Dividing by X = 0 ends a classic program with 0.
                out.push(Insn::new(isa::BPF_JMP32 | isa::BPF_K | isa::BPF_JNE, REG_X, 0, 2, 0));
                out.push(mov32_imm(REG_A, 0));
                out.push(EXIT);
                out.push(alu32(op, isa::BPF_X, REG_A, REG_X, 0));
            }
            Op::Alu { op, source: isa::BPF_K } => out.push(alu32(op, isa::BPF_K, REG_A, 0, k as i32)),
            Op::Alu { op, source } => out.push(alu32(op, source, REG_A, REG_X, 0)),
            Op::Neg => out.push(alu32(isa::BPF_NEG, isa::BPF_K, REG_A, 0, 0)),
            Op::LoadAbs { size } => {
                if (k as i32) < 0 {
                    return Err(error(pc, CbpfErrorKind::HeaderRelativeLoad(k as i32)));
                }
                out.push(Insn::new(isa::BPF_LD | isa::BPF_ABS | size, 0, 0, 0, k as i32));
            }
            Op::LoadInd { size } => out.push(Insn::new(isa::BPF_LD | isa::BPF_IND | size, 0, REG_X, 0, k as i32)),
            Op::LoadLen { to_x: false } => {
                out.push(Insn::new(isa::MOV64_REG, 1, REG_LEN, 0, 0));
                out.push(CALL_WIRE_LEN);
                out.push(mov32_reg(REG_A, 0));
            }
            Op::LoadLen { to_x: true } => {
                out.push(Insn::new(isa::MOV64_REG, REG_SAVED_A, REG_A, 0, 0));
                out.push(Insn::new(isa::MOV64_REG, 1, REG_LEN, 0, 0));
                out.push(CALL_WIRE_LEN);
                out.push(mov32_reg(REG_X, 0));
                out.push(Insn::new(isa::MOV64_REG, REG_A, REG_SAVED_A, 0, 0));
            }
            Op::LoadImm { to_x } => out.push(mov32_imm(if to_x { REG_X } else { REG_A }, k)),
            Op::LoadMem { to_x } => out.push(Insn::new(
                isa::BPF_LDX | isa::BPF_MEM | isa::BPF_W,
                if to_x { REG_X } else { REG_A },
                isa::FRAME_REG,
                scratch_offset(k),
                0,
            )),
            Op::LoadIpHeaderLen => {
                if (k as i32) < 0 {
                    return Err(error(pc, CbpfErrorKind::HeaderRelativeLoad(k as i32)));
                }
                out.push(Insn::new(isa::MOV64_REG, REG_SAVED_A, REG_A, 0, 0));
                out.push(Insn::new(isa::BPF_LD | isa::BPF_ABS | isa::BPF_B, 0, 0, 0, k as i32));
                out.push(alu32(isa::BPF_AND, isa::BPF_K, REG_A, 0, 0xf));
                out.push(alu32(isa::BPF_LSH, isa::BPF_K, REG_A, 0, 2));
                out.push(mov32_reg(REG_X, REG_A));
                out.push(Insn::new(isa::MOV64_REG, REG_A, REG_SAVED_A, 0, 0));
            }
            Op::Ancillary(ANCILLARY_ALU_XOR_X) => out.push(alu32(isa::BPF_XOR, isa::BPF_X, REG_A, REG_X, 0)),
            // Frames here carry their VLAN tags in their bytes: no tag was
            // taken off by a NIC, so none is present as metadata.
            Op::Ancillary(ANCILLARY_VLAN_TAG | ANCILLARY_VLAN_TAG_PRESENT) => out.push(mov32_imm(REG_A, 0)),
            // No field at this offset: Linux's load fails when it runs (the
            // offset is taken from the network header, far past the packet)
            // and ends the program with 0, as libpcap's own interpreter does.
            Op::Ancillary(offset) if ANCILLARY_NAMES.iter().all(|(field, _)| *field != offset) => {
                out.push(mov32_imm(REG_A, 0));
                out.push(EXIT);
            }
            Op::Ancillary(offset) => {
                return Err(error(pc, CbpfErrorKind::UnsupportedAncillary(ancillary_name(offset))));
            }
            Op::Store { from_x } => out.push(Insn::new(
                isa::BPF_STX | isa::BPF_MEM | isa::BPF_W,
                isa::FRAME_REG,
                if from_x { REG_X } else { REG_A },
                scratch_offset(k),
                0,
            )),
            Op::Tax => out.push(mov32_reg(REG_X, REG_A)),
            Op::Txa => out.push(mov32_reg(REG_A, REG_X)),
            Op::Jump => {
                jumps.push(PendingJump { at: out.len(), to_classic: pc + 1 + k as usize });
                out.push(Insn::new(isa::JA, 0, 0, 0, 0));
            }
            Op::JumpIf { op, source } => {
                let (imm, src) = if source == isa::BPF_K { (k as i32, 0) } else { (0, REG_X) };
                let (jt, jf) = (pc + 1 + insn.jt as usize, pc + 1 + insn.jf as usize);
                // Compare the low 32 bits: A and X always hold 32-bit values,
                // and K is unsigned, which a 64-bit compare would sign-extend.
                jumps.push(PendingJump { at: out.len(), to_classic: jt });
                out.push(Insn::new(isa::BPF_JMP32 | source | op, REG_A, src, 0, imm));
                if jf != pc + 1 {
                    jumps.push(PendingJump { at: out.len(), to_classic: jf });
                    out.push(Insn::new(isa::JA, 0, 0, 0, 0));
                }
            }
            Op::ReturnK => {
                out.push(mov32_imm(REG_A, k));
                out.push(EXIT);
            }
            Op::ReturnA => out.push(EXIT),
        }
    }
    for jump in jumps {
        let offset = starts[jump.to_classic] as i64 - jump.at as i64 - 1;
        // 4096 classic instructions expand to well under 32767 eBPF ones.
        out[jump.at].off = i16::try_from(offset).expect("a classic program's jumps fit eBPF's 16-bit offsets");
    }
    Ok(out)
}

/// Translates a classic program and loads it as a filter program: verified,
/// with `wire_len` its only helper, ready for either engine.
pub fn load(program: &[ClassicInsn], config: &Config) -> Result<Program, FilterError> {
    let insns = translate(program)?;
    Ok(Program::from_image(Image { insns, ..Image::default() }, &helpers(), config)?)
}

/// The helpers a translation calls: `wire_len` alone.
fn helpers() -> Helpers {
    let mut helpers = Helpers::new();
    helpers.register(WIRE_LEN, WIRE_LEN_NAME, builtin::wire_len);
    helpers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> ClassicInsn {
        ClassicInsn { code, jt, jf, k }
    }

    /// `tcpdump -ddd 'tcp port 443 and not src net 10.0.0.0/8'` on Ethernet.
    const TCP_443: &str = "23\n40 0 0 12\n21 0 6 34525\n48 0 0 20\n21 0 18 6\n40 0 0 54\n21 15 0 443\n40 0 0 56\n\
        21 13 14 443\n21 0 13 2048\n48 0 0 23\n21 0 11 6\n40 0 0 20\n69 9 0 8191\n177 0 0 14\n72 0 0 14\n\
        21 2 0 443\n72 0 0 16\n21 0 4 443\n32 0 0 26\n84 0 0 4278190080\n21 1 0 167772160\n6 0 0 65535\n6 0 0 0\n";

    fn refused(program: &[ClassicInsn]) -> CbpfError {
        translate(program).expect_err("the program should be refused")
    }

    #[test]
    fn a_translation_writes_only_its_stack() {
        // `st M[3]`, `ldx M[3]`, `ret a` after a packet load.
        let program = [insn(0x28, 0, 0, 12), insn(0x02, 0, 0, 3), insn(0x61, 0, 0, 3), insn(0x16, 0, 0, 0)];
        assert!(load(&program, &Config::default()).unwrap().writes_only_stack());
    }

    /// `ld len` and `ldx len` (which keeps A across its call) give the
    /// length on the wire in every engine: the interpreter, the JIT, and
    /// the JIT's runs over input it only reads (replay's batch loop).
    #[test]
    fn len_is_the_length_on_the_wire_and_keeps_the_other_register() {
        use std::sync::Arc;

        use crate::helpers::builtin::{PacketFacts, set_packet};
        use crate::interp::{self, Stack};
        use crate::jit::JitProgram;
        // `ld len; ret a`, and `ld #7; ldx len; add x; ret a`.
        let len = [insn(0x80, 0, 0, 0), insn(0x16, 0, 0, 0)];
        let len_x = [insn(0x00, 0, 0, 7), insn(0x81, 0, 0, 0), insn(0x0c, 0, 0, 0), insn(0x16, 0, 0, 0)];
        let programs = [&len[..], &len_x[..]].map(|classic| Arc::new(load(classic, &Config::default()).unwrap()));
        assert!(programs.iter().all(|program| program.writes_only_stack()));
        let jits = programs.clone().map(|program| JitProgram::compile(program).ok());
        let mut packet = [0u8; 60];
        // Each program's result in each engine that runs here.
        let mut results = || {
            let mut results = Vec::new();
            for (program, jit) in programs.iter().zip(&jits) {
                results.push(interp::execute(program, &mut packet));
                if let Some(jit) = jit {
                    results.push(jit.execute(&mut packet));
                    let mut stack = Stack::default();
                    results.push(jit.read_only(&mut stack).expect("a filter that reads only").run(&packet));
                }
            }
            results
        };
        let engines = if jits[0].is_some() { 3 } else { 1 };
        let expect = |len: u64, len_x: u64| [vec![Ok(len); engines], vec![Ok(len_x); engines]].concat();
        assert_eq!(results(), expect(60, 67));
        set_packet(Some(PacketFacts { time_ns: 0, beyond_capture: 1440 }));
        let cut_short = results();
        // A record may claim fewer bytes on the wire than it holds.
        set_packet(Some(PacketFacts { time_ns: 0, beyond_capture: -40 }));
        let claimed_short = results();
        set_packet(None);
        assert_eq!(cut_short, expect(1500, 1507));
        assert_eq!(claimed_short, expect(20, 27));
    }

    #[test]
    fn tcpdump_output_parses_and_translates() {
        let program = parse_decimal(TCP_443).unwrap();
        assert_eq!(program.len(), 23);
        assert_eq!(program[13], insn(0xb1, 0, 0, 14));
        let ebpf = translate(&program).unwrap();
        assert_eq!(ebpf.last().unwrap().opc, isa::EXIT);
        // Every jump lands on the first eBPF instruction of a classic one.
        for (at, insn) in ebpf.iter().enumerate() {
            if insn.opc == isa::JA || insn.class() == isa::BPF_JMP32 {
                let target = (at as i64 + 1 + insn.off as i64) as usize;
                assert!(target < ebpf.len(), "jump at {at} leaves the program");
            }
        }
    }

    #[test]
    fn a_translation_verifies_and_matches_as_tcpdump_would() {
        let program = load(&parse_decimal(TCP_443).unwrap(), &Config::default()).unwrap();
        // Ethernet, IPv4 (IHL 5) from `source`, TCP to port 443.
        let frame = |source: [u8; 4], port: u16| {
            let mut frame = vec![0u8; 54];
            frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            frame[14] = 0x45;
            frame[23] = 6;
            frame[26..30].copy_from_slice(&source);
            frame[36..38].copy_from_slice(&port.to_be_bytes());
            frame
        };
        assert_ne!(program.execute(&mut frame([192, 0, 2, 1], 443)), Ok(0));
        assert_eq!(program.execute(&mut frame([10, 0, 2, 1], 443)), Ok(0));
        assert_eq!(program.execute(&mut frame([192, 0, 2, 1], 80)), Ok(0));
        // Cut short before the port: the load past the end returns 0.
        assert_eq!(program.execute(&mut frame([192, 0, 2, 1], 443)[..36].to_vec()), Ok(0));
    }

    #[test]
    fn parse_errors_name_the_instruction() {
        assert_eq!(
            parse_decimal("2\n6 0 0 0\n6 0 x 0\n").unwrap_err(),
            error(1, CbpfErrorKind::Syntax("6 0 x 0".into()))
        );
        assert!(matches!(
            parse_decimal("3\n6 0 0 0\n").unwrap_err().kind,
            CbpfErrorKind::CountMismatch { expected: 3, found: 1 }
        ));
        assert_eq!(parse_decimal("").unwrap_err().kind, CbpfErrorKind::Empty);
    }

    #[test]
    fn the_kernels_checks_refuse_what_it_refuses() {
        let ret = insn(0x06, 0, 0, 0);
        assert_eq!(refused(&[]).kind, CbpfErrorKind::Empty);
        assert_eq!(refused(&vec![ret; MAX_INSNS + 1]).kind, CbpfErrorKind::TooLong(MAX_INSNS + 1));
        assert!(translate(&vec![ret; MAX_INSNS]).is_ok());
        // div #0 and mod #0; div x is checked at run time instead.
        assert_eq!(refused(&[insn(0x34, 0, 0, 0), ret]), error(0, CbpfErrorKind::DivisionByZero));
        assert_eq!(refused(&[insn(0x94, 0, 0, 0), ret]), error(0, CbpfErrorKind::DivisionByZero));
        assert!(translate(&[insn(0x3c, 0, 0, 0), ret]).is_ok());
        assert_eq!(refused(&[insn(0x64, 0, 0, 32), ret]).kind, CbpfErrorKind::ShiftTooLarge(32));
        assert_eq!(refused(&[insn(0x02, 0, 0, 16), ret]).kind, CbpfErrorKind::NoSuchScratchWord(16));
        // ja past the end; a conditional whose false branch is the end.
        assert_eq!(refused(&[insn(0x05, 0, 0, 1), ret]).kind, CbpfErrorKind::JumpOutOfRange);
        assert_eq!(refused(&[insn(0x15, 0, 1, 0), ret]).kind, CbpfErrorKind::JumpOutOfRange);
        assert_eq!(refused(&[insn(0x00, 0, 0, 1)]), error(0, CbpfErrorKind::NoFinalReturn));
        // ret x, ld dw, and a byte in the opcode's high half are not classic.
        assert_eq!(refused(&[insn(0x0e, 0, 0, 0)]).kind, CbpfErrorKind::UnknownOpcode(0x0e));
        assert_eq!(refused(&[insn(0x38, 0, 0, 0), ret]).kind, CbpfErrorKind::UnknownOpcode(0x38));
        assert_eq!(refused(&[insn(0x106, 0, 0, 0)]).kind, CbpfErrorKind::UnknownOpcode(0x106));
    }

    #[test]
    fn scratch_words_must_be_stored_on_every_path_before_a_read() {
        let ret_a = insn(0x16, 0, 0, 0);
        // st M[3]; ld M[3]: fine.
        assert!(translate(&[insn(0x02, 0, 0, 3), insn(0x60, 0, 0, 3), ret_a]).is_ok());
        // ld M[3] first.
        assert_eq!(refused(&[insn(0x60, 0, 0, 3), ret_a]), error(0, CbpfErrorKind::ScratchReadBeforeWrite(3)));
        // jeq #0 jt 1 jf 0; st M[1]; ldx M[1]: the true branch skips the store.
        let one_path = [insn(0x15, 1, 0, 0), insn(0x02, 0, 0, 1), insn(0x61, 0, 0, 1), ret_a];
        assert_eq!(refused(&one_path), error(2, CbpfErrorKind::ScratchReadBeforeWrite(1)));
        // Both paths meet at a store.
        let both = [insn(0x15, 1, 0, 0), insn(0x02, 0, 0, 1), insn(0x03, 0, 0, 1), insn(0x61, 0, 0, 1), ret_a];
        assert!(translate(&both).is_ok());
        let stored_first = [insn(0x02, 0, 0, 1), insn(0x15, 1, 0, 0), insn(0x03, 0, 0, 1), insn(0x61, 0, 0, 1), ret_a];
        assert!(translate(&stored_first).is_ok());
    }

    #[test]
    fn ancillary_loads_are_translated_or_refused_by_name() {
        let ret_a = insn(0x16, 0, 0, 0);
        for field in [ANCILLARY_VLAN_TAG, ANCILLARY_VLAN_TAG_PRESENT, ANCILLARY_ALU_XOR_X] {
            assert!(translate(&[insn(0x20, 0, 0, ANCILLARY_BASE + field), ret_a]).is_ok());
        }
        assert_eq!(
            refused(&[insn(0x28, 0, 0, ANCILLARY_BASE), ret_a]),
            error(0, CbpfErrorKind::UnsupportedAncillary("protocol"))
        );
        // No field at SKF_AD_OFF + 0xffe (`ip[-2]` on raw IP): the run ends
        // with 0 there, as in Linux and in tcpdump.
        let unknown = [insn(0x30, 0, 0, 0xffff_fffe), insn(0x06, 0, 0, 1)];
        let program = load(&unknown, &Config::default()).unwrap();
        assert_eq!(program.execute(&mut [0u8; 64]).unwrap(), 0);
        // SKF_NET_OFF + 9: relative to the network header.
        assert_eq!(
            refused(&[insn(0x30, 0, 0, (-0x100000i32 + 9) as u32), ret_a]).kind,
            CbpfErrorKind::HeaderRelativeLoad(-0x100000 + 9)
        );
    }

    #[test]
    fn unsigned_constants_compare_as_32_bit_values() {
        // jeq #0xff000000: a 64-bit compare would sign-extend the immediate.
        let ebpf = translate(&[insn(0x15, 0, 1, 0xff00_0000), insn(0x06, 0, 0, 1), insn(0x06, 0, 0, 0)]).unwrap();
        let compare = ebpf.iter().find(|i| i.class() == isa::BPF_JMP32).unwrap();
        assert_eq!(compare.imm, 0xff00_0000u32 as i32);
    }
}
