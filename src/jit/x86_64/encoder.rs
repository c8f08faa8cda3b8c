//! x86-64 encodings of the most frequent instruction forms, written
//! directly: dynasm builds each byte at run time behind a capacity check,
//! which made it most of the cost of compiling. Jumps to labels, and the
//! rarer forms, still go through dynasm.

use dynasmrt::x64::Rq;

/// The longest instruction encoded here, and then some.
pub(super) const MAX_LEN: usize = 16;
// `Encoding::push` masks its index with `MAX_LEN - 1`.
const _: () = assert!(MAX_LEN.is_power_of_two());

/// One instruction's bytes.
pub(super) struct Encoding {
    pub(super) buf: [u8; MAX_LEN],
    pub(super) len: usize,
}

impl Encoding {
    fn new() -> Encoding {
        Encoding { buf: [0; MAX_LEN], len: 0 }
    }

    // No instruction here is longer than `MAX_LEN`: the index is masked
    // rather than checked, as a check per byte cost more than the store.
    fn push(&mut self, byte: u8) {
        debug_assert!(self.len < MAX_LEN);
        self.buf[self.len & (MAX_LEN - 1)] = byte;
        self.len += 1;
    }

    fn extend(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.push(byte);
        }
    }

    /// A REX prefix with W and the high bits of the ModRM reg and r/m
    /// (or base) fields, left out when it would be plain 0x40 unless
    /// `force` (byte registers sil, dil, bpl, spl need it).
    fn rex(&mut self, w: bool, reg: u8, rm: u8, force: bool) {
        let rex = 0x40 | (w as u8) << 3 | (reg >> 3 & 1) << 2 | (rm >> 3 & 1);
        if rex != 0x40 || force {
            self.push(rex);
        }
    }
}

/// An immediate operand of a memory form.
#[derive(Clone, Copy)]
pub(super) enum Imm {
    None,
    I8(i8),
    I16(i16),
    I32(i32),
}

/// `opcode` with registers: ModRM reg = `reg`, r/m = `rm`.
pub(super) fn rr(w: bool, opcode: &[u8], reg: Rq, rm: Rq) -> Encoding {
    let (reg, rm) = (reg as u8, rm as u8);
    let mut b = Encoding::new();
    b.rex(w, reg, rm, false);
    b.extend(opcode);
    b.push(0xc0 | (reg & 7) << 3 | (rm & 7));
    b
}

/// A group-1 operation (`/ext`: add 0, or 1, and 4, sub 5, xor 6,
/// cmp 7) of `rm` with a sign-extended immediate.
pub(super) fn group1(w: bool, ext: u8, rm: Rq, imm: i32) -> Encoding {
    let rm = rm as u8;
    let mut b = Encoding::new();
    b.rex(w, 0, rm, false);
    match i8::try_from(imm) {
        Ok(imm) => b.extend(&[0x83, 0xc0 | ext << 3 | (rm & 7), imm as u8]),
        Err(_) => {
            b.extend(&[0x81, 0xc0 | ext << 3 | (rm & 7)]);
            b.extend(&imm.to_le_bytes());
        }
    }
    b
}

/// `test rm, imm32` (sign-extended for 64 bits).
pub(super) fn test_imm(w: bool, rm: Rq, imm: i32) -> Encoding {
    let rm = rm as u8;
    let mut b = Encoding::new();
    b.rex(w, 0, rm, false);
    b.extend(&[0xf7, 0xc0 | (rm & 7)]);
    b.extend(&imm.to_le_bytes());
    b
}

/// `imul dst, src, imm`.
pub(super) fn imul_imm(w: bool, dst: Rq, src: Rq, imm: i32) -> Encoding {
    let (dst, src) = (dst as u8, src as u8);
    let mut b = Encoding::new();
    b.rex(w, dst, src, false);
    match i8::try_from(imm) {
        Ok(imm) => b.extend(&[0x6b, 0xc0 | (dst & 7) << 3 | (src & 7), imm as u8]),
        Err(_) => {
            b.extend(&[0x69, 0xc0 | (dst & 7) << 3 | (src & 7)]);
            b.extend(&imm.to_le_bytes());
        }
    }
    b
}

/// `mov dst32, imm32`, zero-extending.
pub(super) fn mov32_imm(dst: Rq, imm: i32) -> Encoding {
    let dst = dst as u8;
    let mut b = Encoding::new();
    b.rex(false, 0, dst, false);
    b.push(0xb8 | (dst & 7));
    b.extend(&imm.to_le_bytes());
    b
}

/// `mov dst64, imm32`, sign-extending.
pub(super) fn mov64_imm(dst: Rq, imm: i32) -> Encoding {
    let dst = dst as u8;
    let mut b = Encoding::new();
    b.rex(true, 0, dst, false);
    b.extend(&[0xc7, 0xc0 | (dst & 7)]);
    b.extend(&imm.to_le_bytes());
    b
}

/// A shift by a count (`/ext`: shl 4, shr 5, sar 7).
pub(super) fn shift_imm(w: bool, ext: u8, dst: Rq, count: u8) -> Encoding {
    let dst = dst as u8;
    let mut b = Encoding::new();
    b.rex(w, 0, dst, false);
    b.extend(&[0xc1, 0xc0 | ext << 3 | (dst & 7), count]);
    b
}

/// `rol dst16, count`: a byte swap of the low 16 bits when `count` is
/// 8, keeping the rest.
pub(super) fn rol16_imm(dst: Rq, count: u8) -> Encoding {
    let dst = dst as u8;
    let mut b = Encoding::new();
    b.push(0x66);
    b.rex(false, 0, dst, false);
    b.extend(&[0xc1, 0xc0 | (dst & 7), count]);
    b
}

/// `opcode` with the memory operand `[base + disp]` (ModRM reg =
/// `reg`, a register or an opcode extension) and an immediate;
/// `operand16` adds the 0x66 prefix, `byte_reg` forces a REX prefix so
/// that `reg` names sil, dil, bpl or spl rather than a high byte.
/// Inlined: its callers pass constant prefixes, opcodes and immediate
/// kinds, which then cost nothing.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn mem(
    operand16: bool,
    w: bool,
    byte_reg: bool,
    opcode: &[u8],
    reg: u8,
    base: Rq,
    disp: i32,
    imm: Imm,
) -> Encoding {
    let base = base as u8;
    let mut b = Encoding::new();
    if operand16 {
        b.push(0x66);
    }
    b.rex(w, reg, base, byte_reg && (4..8).contains(&reg));
    b.extend(opcode);
    // rbp and r13 as a base always take a displacement.
    let (mode, disp8) = match i8::try_from(disp) {
        Ok(0) if base & 7 != 5 => (0, None),
        Ok(disp) => (1, Some(disp)),
        Err(_) => (2, None),
    };
    b.push(mode << 6 | (reg & 7) << 3 | (base & 7));
    if base & 7 == 4 {
        // rsp and r12 as a base need a SIB byte: no index.
        b.push(0x24);
    }
    match (mode, disp8) {
        (1, Some(disp)) => b.push(disp as u8),
        (2, _) => b.extend(&disp.to_le_bytes()),
        _ => {}
    }
    match imm {
        Imm::None => {}
        Imm::I8(imm) => b.push(imm as u8),
        Imm::I16(imm) => b.extend(&imm.to_le_bytes()),
        Imm::I32(imm) => b.extend(&imm.to_le_bytes()),
    }
    b
}

/// `mov dst32, fs:[disp32]`: a word at a fixed offset from the thread
/// pointer (no base, no index: SIB 0x25).
pub(super) fn load32_fs(dst: Rq, disp: i32) -> Encoding {
    let dst = dst as u8;
    let mut b = Encoding::new();
    b.push(0x64);
    b.rex(false, dst, 0, false);
    b.extend(&[0x8b, (dst & 7) << 3 | 4, 0x25]);
    b.extend(&disp.to_le_bytes());
    b
}
