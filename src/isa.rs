//! The eBPF instruction set of RFC 9669 (up to cpu v4): field constants,
//! opcodes, the instruction word, and [`FORMS`], the one table of instruction
//! forms that the assembler, disassembler, verifier, interpreter and JIT read;
//! from a form, which registers an instruction reads and writes ([`Regs`])
//! and where a jump or local call lands.

/// Bytes in one instruction slot.
pub const INSN_SIZE: usize = 8;
/// Most instruction slots a program may have.
pub const MAX_INSNS: usize = 65536;
/// Registers r0..r10.
pub const NUM_REGS: usize = 11;
/// Entries of a register-indexed table: as many as a 4-bit register field
/// names, so that a field indexes the table without a check (the verifier
/// keeps fields to r0..r10).
pub const REG_SLOTS: usize = 16;
/// The read-only frame pointer.
pub const FRAME_REG: u8 = 10;
/// Bytes of stack in each call frame.
pub const STACK_FRAME_SIZE: usize = 512;
/// Call frames a program may have live at once (the entry frame included).
pub const MAX_CALL_DEPTH: usize = 16;

// Instruction classes (low 3 bits of the opcode).
pub const BPF_LD: u8 = 0x00;
pub const BPF_LDX: u8 = 0x01;
pub const BPF_ST: u8 = 0x02;
pub const BPF_STX: u8 = 0x03;
pub const BPF_ALU: u8 = 0x04;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_JMP32: u8 = 0x06;
pub const BPF_ALU64: u8 = 0x07;
pub const CLASS_MASK: u8 = 0x07;

// Load/store size (bits 3-4).
pub const BPF_W: u8 = 0x00;
pub const BPF_H: u8 = 0x08;
pub const BPF_B: u8 = 0x10;
pub const BPF_DW: u8 = 0x18;
pub const SIZE_MASK: u8 = 0x18;

// Load/store mode (bits 5-7).
pub const BPF_IMM: u8 = 0x00;
pub const BPF_ABS: u8 = 0x20;
pub const BPF_IND: u8 = 0x40;
pub const BPF_MEM: u8 = 0x60;
pub const BPF_MEMSX: u8 = 0x80;
pub const BPF_ATOMIC: u8 = 0xc0;
pub const MODE_MASK: u8 = 0xe0;

// Operand source for ALU and JMP (bit 3).
pub const BPF_K: u8 = 0x00;
pub const BPF_X: u8 = 0x08;
pub const SOURCE_MASK: u8 = 0x08;

// ALU operations (bits 4-7).
pub const BPF_ADD: u8 = 0x00;
pub const BPF_SUB: u8 = 0x10;
pub const BPF_MUL: u8 = 0x20;
pub const BPF_DIV: u8 = 0x30;
pub const BPF_OR: u8 = 0x40;
pub const BPF_AND: u8 = 0x50;
pub const BPF_LSH: u8 = 0x60;
pub const BPF_RSH: u8 = 0x70;
pub const BPF_NEG: u8 = 0x80;
pub const BPF_MOD: u8 = 0x90;
pub const BPF_XOR: u8 = 0xa0;
pub const BPF_MOV: u8 = 0xb0;
pub const BPF_ARSH: u8 = 0xc0;
pub const BPF_END: u8 = 0xd0;
pub const OP_MASK: u8 = 0xf0;

// Jump operations (bits 4-7).
pub const BPF_JA: u8 = 0x00;
pub const BPF_JEQ: u8 = 0x10;
pub const BPF_JGT: u8 = 0x20;
pub const BPF_JGE: u8 = 0x30;
pub const BPF_JSET: u8 = 0x40;
pub const BPF_JNE: u8 = 0x50;
pub const BPF_JSGT: u8 = 0x60;
pub const BPF_JSGE: u8 = 0x70;
pub const BPF_CALL: u8 = 0x80;
pub const BPF_EXIT: u8 = 0x90;
pub const BPF_JLT: u8 = 0xa0;
pub const BPF_JLE: u8 = 0xb0;
pub const BPF_JSLT: u8 = 0xc0;
pub const BPF_JSLE: u8 = 0xd0;

// Atomic operations (the imm field of BPF_ATOMIC instructions).
pub const ATOMIC_ADD: i32 = 0x00;
pub const ATOMIC_OR: i32 = 0x40;
pub const ATOMIC_AND: i32 = 0x50;
pub const ATOMIC_XOR: i32 = 0xa0;
pub const ATOMIC_FETCH: i32 = 0x01;
pub const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
pub const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

// The src field of a call instruction.
pub const CALL_HELPER: u8 = 0;
pub const CALL_LOCAL: u8 = 1;

// The src field of lddw (RFC 9669 section 5.4), numbered as Linux numbers
// its BPF_PSEUDO_* forms.
/// `imm64`: the two imms are the value.
pub const LDDW_IMM64: u8 = 0;
/// `map_fd`: imm names a map; loads the map's handle (`BPF_PSEUDO_MAP_FD`).
pub const LDDW_MAP_FD: u8 = 1;
/// `map_value`: imm names a map; loads the address of its value plus the
/// second slot's imm (`BPF_PSEUDO_MAP_VALUE`).
pub const LDDW_MAP_VALUE: u8 = 2;
/// `var_addr`: the address of variable imm (`BPF_PSEUDO_BTF_ID`).
pub const LDDW_VARIABLE_ADDR: u8 = 3;
/// `code_addr`: the address of instruction imm (`BPF_PSEUDO_FUNC`).
pub const LDDW_CODE_ADDR: u8 = 4;
/// `map_idx`: as `map_fd`, the map named by its index (`BPF_PSEUDO_MAP_IDX`).
pub const LDDW_MAP_IDX: u8 = 5;
/// `map_idx_value`: as `map_value`, the map named by its index
/// (`BPF_PSEUDO_MAP_IDX_VALUE`).
pub const LDDW_MAP_IDX_VALUE: u8 = 6;

/// The lddw pseudo forms by src, with the keyword the assembler writes
/// before their immediate: `lddw %r1, map_fd 3`, `lddw %r1, map_value 3+8`.
pub const LDDW_PSEUDO_KEYWORDS: [(u8, &str); 6] = [
    (LDDW_MAP_FD, "map_fd"),
    (LDDW_MAP_VALUE, "map_value"),
    (LDDW_VARIABLE_ADDR, "var_addr"),
    (LDDW_CODE_ADDR, "code_addr"),
    (LDDW_MAP_IDX, "map_idx"),
    (LDDW_MAP_IDX_VALUE, "map_idx_value"),
];

/// Does an lddw with this src name a map by its imm (and load its handle or
/// an address in its value)?
pub fn lddw_names_map(src: u8) -> bool {
    matches!(src, LDDW_MAP_FD | LDDW_MAP_VALUE | LDDW_MAP_IDX | LDDW_MAP_IDX_VALUE)
}

/// Does an lddw with this src load an address in a map's value (rather than
/// the map's handle, or no map at all)?
pub fn lddw_loads_map_value(src: u8) -> bool {
    matches!(src, LDDW_MAP_VALUE | LDDW_MAP_IDX_VALUE)
}

macro_rules! opcodes {
    ($($(#[doc = $doc:literal])* $name:ident = $value:expr;)*) => {
        $( $(#[doc = $doc])* pub const $name: u8 = $value; )*
    };
}

opcodes! {
    /// `add32 dst, imm`: dst = (u32)(dst + imm)
    ADD32_IMM = BPF_ALU | BPF_K | BPF_ADD;
    /// `add32 dst, src`: dst = (u32)(dst + src)
    ADD32_REG = BPF_ALU | BPF_X | BPF_ADD;
    /// `sub32 dst, imm`: dst = (u32)(dst - imm)
    SUB32_IMM = BPF_ALU | BPF_K | BPF_SUB;
    /// `sub32 dst, src`: dst = (u32)(dst - src)
    SUB32_REG = BPF_ALU | BPF_X | BPF_SUB;
    /// `mul32 dst, imm`: dst = (u32)(dst * imm)
    MUL32_IMM = BPF_ALU | BPF_K | BPF_MUL;
    /// `mul32 dst, src`: dst = (u32)(dst * src)
    MUL32_REG = BPF_ALU | BPF_X | BPF_MUL;
    /// `div32`/`sdiv32 dst, imm` (offset 0 or 1): unsigned or signed divide, 0 when imm is 0
    DIV32_IMM = BPF_ALU | BPF_K | BPF_DIV;
    /// `div32`/`sdiv32 dst, src` (offset 0 or 1): unsigned or signed divide, 0 when src is 0
    DIV32_REG = BPF_ALU | BPF_X | BPF_DIV;
    /// `or32 dst, imm`
    OR32_IMM = BPF_ALU | BPF_K | BPF_OR;
    /// `or32 dst, src`
    OR32_REG = BPF_ALU | BPF_X | BPF_OR;
    /// `and32 dst, imm`
    AND32_IMM = BPF_ALU | BPF_K | BPF_AND;
    /// `and32 dst, src`
    AND32_REG = BPF_ALU | BPF_X | BPF_AND;
    /// `lsh32 dst, imm`: shift count masked to 5 bits
    LSH32_IMM = BPF_ALU | BPF_K | BPF_LSH;
    /// `lsh32 dst, src`: shift count masked to 5 bits
    LSH32_REG = BPF_ALU | BPF_X | BPF_LSH;
    /// `rsh32 dst, imm`: logical shift, count masked to 5 bits
    RSH32_IMM = BPF_ALU | BPF_K | BPF_RSH;
    /// `rsh32 dst, src`: logical shift, count masked to 5 bits
    RSH32_REG = BPF_ALU | BPF_X | BPF_RSH;
    /// `neg32 dst`: dst = (u32)-dst
    NEG32 = BPF_ALU | BPF_K | BPF_NEG;
    /// `mod32`/`smod32 dst, imm` (offset 0 or 1): dst unchanged (truncated) when imm is 0
    MOD32_IMM = BPF_ALU | BPF_K | BPF_MOD;
    /// `mod32`/`smod32 dst, src` (offset 0 or 1): dst unchanged (truncated) when src is 0
    MOD32_REG = BPF_ALU | BPF_X | BPF_MOD;
    /// `xor32 dst, imm`
    XOR32_IMM = BPF_ALU | BPF_K | BPF_XOR;
    /// `xor32 dst, src`
    XOR32_REG = BPF_ALU | BPF_X | BPF_XOR;
    /// `mov32 dst, imm`
    MOV32_IMM = BPF_ALU | BPF_K | BPF_MOV;
    /// `mov32 dst, src`, or `movsx832`/`movsx1632` with offset 8/16
    MOV32_REG = BPF_ALU | BPF_X | BPF_MOV;
    /// `arsh32 dst, imm`: arithmetic shift, count masked to 5 bits
    ARSH32_IMM = BPF_ALU | BPF_K | BPF_ARSH;
    /// `arsh32 dst, src`: arithmetic shift, count masked to 5 bits
    ARSH32_REG = BPF_ALU | BPF_X | BPF_ARSH;
    /// `le16`/`le32`/`le64 dst`: convert to little endian (imm is the width)
    LE = BPF_ALU | BPF_K | BPF_END;
    /// `be16`/`be32`/`be64 dst`: convert to big endian (imm is the width)
    BE = BPF_ALU | BPF_X | BPF_END;

    /// `add dst, imm`
    ADD64_IMM = BPF_ALU64 | BPF_K | BPF_ADD;
    /// `add dst, src`
    ADD64_REG = BPF_ALU64 | BPF_X | BPF_ADD;
    /// `sub dst, imm`
    SUB64_IMM = BPF_ALU64 | BPF_K | BPF_SUB;
    /// `sub dst, src`
    SUB64_REG = BPF_ALU64 | BPF_X | BPF_SUB;
    /// `mul dst, imm`
    MUL64_IMM = BPF_ALU64 | BPF_K | BPF_MUL;
    /// `mul dst, src`
    MUL64_REG = BPF_ALU64 | BPF_X | BPF_MUL;
    /// `div`/`sdiv dst, imm` (offset 0 or 1): 0 when imm is 0
    DIV64_IMM = BPF_ALU64 | BPF_K | BPF_DIV;
    /// `div`/`sdiv dst, src` (offset 0 or 1): 0 when src is 0
    DIV64_REG = BPF_ALU64 | BPF_X | BPF_DIV;
    /// `or dst, imm`
    OR64_IMM = BPF_ALU64 | BPF_K | BPF_OR;
    /// `or dst, src`
    OR64_REG = BPF_ALU64 | BPF_X | BPF_OR;
    /// `and dst, imm`
    AND64_IMM = BPF_ALU64 | BPF_K | BPF_AND;
    /// `and dst, src`
    AND64_REG = BPF_ALU64 | BPF_X | BPF_AND;
    /// `lsh dst, imm`: shift count masked to 6 bits
    LSH64_IMM = BPF_ALU64 | BPF_K | BPF_LSH;
    /// `lsh dst, src`: shift count masked to 6 bits
    LSH64_REG = BPF_ALU64 | BPF_X | BPF_LSH;
    /// `rsh dst, imm`: logical shift, count masked to 6 bits
    RSH64_IMM = BPF_ALU64 | BPF_K | BPF_RSH;
    /// `rsh dst, src`: logical shift, count masked to 6 bits
    RSH64_REG = BPF_ALU64 | BPF_X | BPF_RSH;
    /// `neg dst`: dst = -dst
    NEG64 = BPF_ALU64 | BPF_K | BPF_NEG;
    /// `mod`/`smod dst, imm` (offset 0 or 1): dst unchanged when imm is 0
    MOD64_IMM = BPF_ALU64 | BPF_K | BPF_MOD;
    /// `mod`/`smod dst, src` (offset 0 or 1): dst unchanged when src is 0
    MOD64_REG = BPF_ALU64 | BPF_X | BPF_MOD;
    /// `xor dst, imm`
    XOR64_IMM = BPF_ALU64 | BPF_K | BPF_XOR;
    /// `xor dst, src`
    XOR64_REG = BPF_ALU64 | BPF_X | BPF_XOR;
    /// `mov dst, imm`: dst = (s64)imm
    MOV64_IMM = BPF_ALU64 | BPF_K | BPF_MOV;
    /// `mov dst, src`, or `movsx864`/`movsx1664`/`movsx3264` with offset 8/16/32
    MOV64_REG = BPF_ALU64 | BPF_X | BPF_MOV;
    /// `arsh dst, imm`: arithmetic shift, count masked to 6 bits
    ARSH64_IMM = BPF_ALU64 | BPF_K | BPF_ARSH;
    /// `arsh dst, src`: arithmetic shift, count masked to 6 bits
    ARSH64_REG = BPF_ALU64 | BPF_X | BPF_ARSH;
    /// `bswap16`/`bswap32`/`bswap64 dst`: unconditional byte swap (imm is the width)
    BSWAP = BPF_ALU64 | BPF_K | BPF_END;

    /// `lddw dst, imm64`: two slots; src selects a pseudo form (map fd, map value, ...)
    LDDW = BPF_LD | BPF_DW | BPF_IMM;

    /// `ldabsw imm`: r0 = the input's big-endian word at imm; the run ends
    /// with 0 when it lies outside the input (a legacy packet load)
    LDABSW = BPF_LD | BPF_ABS | BPF_W;
    /// `ldabsh imm`: as `ldabsw`, a half word
    LDABSH = BPF_LD | BPF_ABS | BPF_H;
    /// `ldabsb imm`: as `ldabsw`, a byte
    LDABSB = BPF_LD | BPF_ABS | BPF_B;
    /// `ldindw src, imm`: as `ldabsw`, at (s32)(src + imm)
    LDINDW = BPF_LD | BPF_IND | BPF_W;
    /// `ldindh src, imm`: as `ldindw`, a half word
    LDINDH = BPF_LD | BPF_IND | BPF_H;
    /// `ldindb src, imm`: as `ldindw`, a byte
    LDINDB = BPF_LD | BPF_IND | BPF_B;

    /// `ldxw dst, [src+off]`
    LDXW = BPF_LDX | BPF_MEM | BPF_W;
    /// `ldxh dst, [src+off]`
    LDXH = BPF_LDX | BPF_MEM | BPF_H;
    /// `ldxb dst, [src+off]`
    LDXB = BPF_LDX | BPF_MEM | BPF_B;
    /// `ldxdw dst, [src+off]`
    LDXDW = BPF_LDX | BPF_MEM | BPF_DW;
    /// `ldxsw dst, [src+off]`: sign-extending load
    LDXSW = BPF_LDX | BPF_MEMSX | BPF_W;
    /// `ldxsh dst, [src+off]`: sign-extending load
    LDXSH = BPF_LDX | BPF_MEMSX | BPF_H;
    /// `ldxsb dst, [src+off]`: sign-extending load
    LDXSB = BPF_LDX | BPF_MEMSX | BPF_B;

    /// `stw [dst+off], imm`
    STW = BPF_ST | BPF_MEM | BPF_W;
    /// `sth [dst+off], imm`
    STH = BPF_ST | BPF_MEM | BPF_H;
    /// `stb [dst+off], imm`
    STB = BPF_ST | BPF_MEM | BPF_B;
    /// `stdw [dst+off], imm`: stores (s64)imm
    STDW = BPF_ST | BPF_MEM | BPF_DW;

    /// `stxw [dst+off], src`
    STXW = BPF_STX | BPF_MEM | BPF_W;
    /// `stxh [dst+off], src`
    STXH = BPF_STX | BPF_MEM | BPF_H;
    /// `stxb [dst+off], src`
    STXB = BPF_STX | BPF_MEM | BPF_B;
    /// `stxdw [dst+off], src`
    STXDW = BPF_STX | BPF_MEM | BPF_DW;
    /// `lock <op>32 [dst+off], src`: 32-bit atomic, the operation in imm
    ATOMIC32 = BPF_STX | BPF_ATOMIC | BPF_W;
    /// `lock <op> [dst+off], src`: 64-bit atomic, the operation in imm
    ATOMIC64 = BPF_STX | BPF_ATOMIC | BPF_DW;

    /// `ja off`: pc += off
    JA = BPF_JMP | BPF_JA;
    /// `jeq dst, imm, off`
    JEQ_IMM = BPF_JMP | BPF_K | BPF_JEQ;
    /// `jeq dst, src, off`
    JEQ_REG = BPF_JMP | BPF_X | BPF_JEQ;
    /// `jgt dst, imm, off`: unsigned >
    JGT_IMM = BPF_JMP | BPF_K | BPF_JGT;
    /// `jgt dst, src, off`: unsigned >
    JGT_REG = BPF_JMP | BPF_X | BPF_JGT;
    /// `jge dst, imm, off`: unsigned >=
    JGE_IMM = BPF_JMP | BPF_K | BPF_JGE;
    /// `jge dst, src, off`: unsigned >=
    JGE_REG = BPF_JMP | BPF_X | BPF_JGE;
    /// `jset dst, imm, off`: dst & imm != 0
    JSET_IMM = BPF_JMP | BPF_K | BPF_JSET;
    /// `jset dst, src, off`: dst & src != 0
    JSET_REG = BPF_JMP | BPF_X | BPF_JSET;
    /// `jne dst, imm, off`
    JNE_IMM = BPF_JMP | BPF_K | BPF_JNE;
    /// `jne dst, src, off`
    JNE_REG = BPF_JMP | BPF_X | BPF_JNE;
    /// `jsgt dst, imm, off`: signed >
    JSGT_IMM = BPF_JMP | BPF_K | BPF_JSGT;
    /// `jsgt dst, src, off`: signed >
    JSGT_REG = BPF_JMP | BPF_X | BPF_JSGT;
    /// `jsge dst, imm, off`: signed >=
    JSGE_IMM = BPF_JMP | BPF_K | BPF_JSGE;
    /// `jsge dst, src, off`: signed >=
    JSGE_REG = BPF_JMP | BPF_X | BPF_JSGE;
    /// `call imm` (src 0: helper by index) or `call local` (src 1: pc += imm)
    CALL = BPF_JMP | BPF_K | BPF_CALL;
    /// `callx dst`: call the helper whose index is in a register
    CALLX = BPF_JMP | BPF_X | BPF_CALL;
    /// `exit`: return r0 (or return from a local call)
    EXIT = BPF_JMP | BPF_EXIT;
    /// `jlt dst, imm, off`: unsigned <
    JLT_IMM = BPF_JMP | BPF_K | BPF_JLT;
    /// `jlt dst, src, off`: unsigned <
    JLT_REG = BPF_JMP | BPF_X | BPF_JLT;
    /// `jle dst, imm, off`: unsigned <=
    JLE_IMM = BPF_JMP | BPF_K | BPF_JLE;
    /// `jle dst, src, off`: unsigned <=
    JLE_REG = BPF_JMP | BPF_X | BPF_JLE;
    /// `jslt dst, imm, off`: signed <
    JSLT_IMM = BPF_JMP | BPF_K | BPF_JSLT;
    /// `jslt dst, src, off`: signed <
    JSLT_REG = BPF_JMP | BPF_X | BPF_JSLT;
    /// `jsle dst, imm, off`: signed <=
    JSLE_IMM = BPF_JMP | BPF_K | BPF_JSLE;
    /// `jsle dst, src, off`: signed <=
    JSLE_REG = BPF_JMP | BPF_X | BPF_JSLE;

    /// `ja32 imm` (also `gotol`): pc += imm, the long jump
    JA32 = BPF_JMP32 | BPF_JA;
    /// `jeq32 dst, imm, off`: compares the low 32 bits
    JEQ32_IMM = BPF_JMP32 | BPF_K | BPF_JEQ;
    /// `jeq32 dst, src, off`
    JEQ32_REG = BPF_JMP32 | BPF_X | BPF_JEQ;
    /// `jgt32 dst, imm, off`
    JGT32_IMM = BPF_JMP32 | BPF_K | BPF_JGT;
    /// `jgt32 dst, src, off`
    JGT32_REG = BPF_JMP32 | BPF_X | BPF_JGT;
    /// `jge32 dst, imm, off`
    JGE32_IMM = BPF_JMP32 | BPF_K | BPF_JGE;
    /// `jge32 dst, src, off`
    JGE32_REG = BPF_JMP32 | BPF_X | BPF_JGE;
    /// `jset32 dst, imm, off`
    JSET32_IMM = BPF_JMP32 | BPF_K | BPF_JSET;
    /// `jset32 dst, src, off`
    JSET32_REG = BPF_JMP32 | BPF_X | BPF_JSET;
    /// `jne32 dst, imm, off`
    JNE32_IMM = BPF_JMP32 | BPF_K | BPF_JNE;
    /// `jne32 dst, src, off`
    JNE32_REG = BPF_JMP32 | BPF_X | BPF_JNE;
    /// `jsgt32 dst, imm, off`
    JSGT32_IMM = BPF_JMP32 | BPF_K | BPF_JSGT;
    /// `jsgt32 dst, src, off`
    JSGT32_REG = BPF_JMP32 | BPF_X | BPF_JSGT;
    /// `jsge32 dst, imm, off`
    JSGE32_IMM = BPF_JMP32 | BPF_K | BPF_JSGE;
    /// `jsge32 dst, src, off`
    JSGE32_REG = BPF_JMP32 | BPF_X | BPF_JSGE;
    /// `jlt32 dst, imm, off`
    JLT32_IMM = BPF_JMP32 | BPF_K | BPF_JLT;
    /// `jlt32 dst, src, off`
    JLT32_REG = BPF_JMP32 | BPF_X | BPF_JLT;
    /// `jle32 dst, imm, off`
    JLE32_IMM = BPF_JMP32 | BPF_K | BPF_JLE;
    /// `jle32 dst, src, off`
    JLE32_REG = BPF_JMP32 | BPF_X | BPF_JLE;
    /// `jslt32 dst, imm, off`
    JSLT32_IMM = BPF_JMP32 | BPF_K | BPF_JSLT;
    /// `jslt32 dst, src, off`
    JSLT32_REG = BPF_JMP32 | BPF_X | BPF_JSLT;
    /// `jsle32 dst, imm, off`
    JSLE32_IMM = BPF_JMP32 | BPF_K | BPF_JSLE;
    /// `jsle32 dst, src, off`
    JSLE32_REG = BPF_JMP32 | BPF_X | BPF_JSLE;
}

/// An instruction in its encoded slot, read as a little-endian `u64`: the
/// opcode in bits 0-7, dst in 8-11, src in 12-15, the offset in 16-31 and
/// the immediate in 32-63. The interpreter loads one and takes each field
/// with a shift only where an instruction uses it, which is cheaper than
/// copying an [`Insn`] per instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u64);

impl Slot {
    #[inline(always)]
    pub fn opc(self) -> u8 {
        self.0 as u8
    }

    /// dst, as an index into sixteen registers.
    #[inline(always)]
    pub fn dst(self) -> usize {
        (self.0 >> 8) as usize & 15
    }

    /// src, as an index into sixteen registers.
    #[inline(always)]
    pub fn src(self) -> usize {
        (self.0 >> 12) as usize & 15
    }

    #[inline(always)]
    pub fn off(self) -> i16 {
        (self.0 >> 16) as i16
    }

    #[inline(always)]
    pub fn imm(self) -> i32 {
        (self.0 >> 32) as i32
    }
}

/// One decoded instruction slot. The second slot of `lddw` is an `Insn` too,
/// with opcode 0 and the high half of the immediate in `imm`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insn {
    pub opc: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { opc, dst, src, off, imm }
    }

    /// Decodes one little-endian slot: opcode, dst (low nibble), src (high
    /// nibble), offset, immediate.
    pub fn decode(slot: [u8; INSN_SIZE]) -> Insn {
        Insn {
            opc: slot[0],
            dst: slot[1] & 0x0f,
            src: slot[1] >> 4,
            off: i16::from_le_bytes([slot[2], slot[3]]),
            imm: i32::from_le_bytes([slot[4], slot[5], slot[6], slot[7]]),
        }
    }

    /// This instruction as the interpreter reads it.
    pub fn pack(&self) -> Slot {
        Slot(u64::from_le_bytes(self.encode()))
    }

    /// Encodes this instruction as one slot; registers keep only their 4 bits.
    pub fn encode(&self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [self.opc, (self.dst & 0x0f) | (self.src << 4), off[0], off[1], imm[0], imm[1], imm[2], imm[3]]
    }

    pub fn class(&self) -> u8 {
        self.opc & CLASS_MASK
    }

    /// The registers this instruction reads: a helper call its arguments
    /// r1-r5, a local call r0-r9 (the callee may read any), `exit` r0.
    /// None where no form describes the slot (an lddw's second half).
    pub fn reads(&self) -> Regs {
        let Some(form) = form_of(self) else { return Regs::NONE };
        let (dst, src) = (Regs::of(self.dst), Regs::of(self.src));
        match form.operands {
            // mov (and movsx) sets dst without reading it.
            Operands::DstImm if self.is_mov() => Regs::NONE,
            Operands::DstSrc if self.is_mov() => src,
            Operands::DstImm | Operands::Dst | Operands::MemImm | Operands::DstImmJump => dst,
            Operands::DstSrc | Operands::DstSrcJump => dst | src,
            // cmpxchg compares with r0.
            Operands::MemSrc if self.atomic_op() == Some(ATOMIC_CMPXCHG) => dst | src | Regs::R0,
            Operands::MemSrc => dst | src,
            Operands::DstMem | Operands::PacketInd => src,
            Operands::DstImm64 | Operands::Jump | Operands::Jump32 | Operands::PacketAbs => Regs::NONE,
            Operands::CallHelper => Regs::ARGS,
            Operands::CallReg => Regs::ARGS | dst,
            Operands::CallLocal => Regs::WRITABLE,
            Operands::Nothing => Regs::R0,
        }
    }

    /// [`Insn::reads`] of an instruction of a verified program (one of
    /// [`FORMS`]), without the form's lookup for operations and loads: an
    /// operation reads its dst but when it is a mov, and its src when it
    /// takes a register (neg and the byte swaps take none, whatever their
    /// source bit); a load from memory reads its src.
    #[inline]
    pub(crate) fn reads_verified(&self) -> Regs {
        match self.class() {
            BPF_ALU | BPF_ALU64 => {
                let op = self.opc & OP_MASK;
                let dst = if op == BPF_MOV { Regs::NONE } else { Regs::of(self.dst) };
                let takes_src = self.opc & BPF_X != 0 && op != BPF_NEG && op != BPF_END;
                if takes_src { dst | Regs::of(self.src) } else { dst }
            }
            BPF_LDX => Regs::of(self.src),
            _ => self.reads(),
        }
    }

    /// The registers this instruction itself writes (at most one): dst of
    /// an operation or a load; the old value a fetching atomic returns, in
    /// src (r0 for cmpxchg); r0 after a helper call. A local call writes
    /// none itself: its callee's instructions do.
    pub fn writes(&self) -> Regs {
        let Some(form) = form_of(self) else { return Regs::NONE };
        match form.operands {
            Operands::DstImm | Operands::DstSrc | Operands::Dst | Operands::DstImm64 | Operands::DstMem => {
                Regs::of(self.dst)
            }
            Operands::MemSrc => match self.atomic_op() {
                Some(ATOMIC_CMPXCHG) => Regs::R0,
                Some(op) if op & ATOMIC_FETCH != 0 => Regs::of(self.src),
                _ => Regs::NONE,
            },
            // A legacy packet load leaves r1-r5 as they are (Linux's
            // verifier lets it clobber them; programs cannot tell).
            Operands::CallHelper | Operands::CallReg | Operands::PacketAbs | Operands::PacketInd => Regs::R0,
            Operands::MemImm
            | Operands::Jump
            | Operands::Jump32
            | Operands::DstImmJump
            | Operands::DstSrcJump
            | Operands::CallLocal
            | Operands::Nothing => Regs::NONE,
        }
    }

    /// A legacy packet load (`ldabs*`/`ldind*`), which may end the run?
    pub fn is_packet_load(&self) -> bool {
        self.class() == BPF_LD && matches!(self.opc & MODE_MASK, BPF_ABS | BPF_IND)
    }

    /// How far this jump goes from the slot after it: off, or imm for
    /// `ja32`. `None` for anything but a jump (calls and `exit` included).
    pub fn jump_offset(&self) -> Option<i64> {
        if !self.is_jump_class() {
            return None;
        }
        match form_of(self)?.operands {
            Operands::Jump | Operands::DstImmJump | Operands::DstSrcJump => Some(self.off.into()),
            Operands::Jump32 => Some(self.imm.into()),
            _ => None,
        }
    }

    /// Where this jump at `pc` lands, if it is a jump: in a verified
    /// program, an instruction of the same function.
    pub fn jump_target(&self, pc: usize) -> Option<usize> {
        self.jump_offset().map(|offset| branch_target(pc, offset) as usize)
    }

    /// How far this local call goes from the slot after it (imm), if it is
    /// a local call.
    pub fn local_call_offset(&self) -> Option<i64> {
        if !self.is_jump_class() {
            return None;
        }
        (form_of(self)?.operands == Operands::CallLocal).then_some(self.imm.into())
    }

    /// Where this local call at `pc` lands, if it is one: in a verified
    /// program, the first instruction of a function.
    pub fn local_call_target(&self, pc: usize) -> Option<usize> {
        self.local_call_offset().map(|offset| branch_target(pc, offset) as usize)
    }

    /// Of class JMP or JMP32, as every jump and call is: most instructions
    /// are not, and need no look-up of their form to say so.
    fn is_jump_class(&self) -> bool {
        matches!(self.class(), BPF_JMP | BPF_JMP32)
    }

    /// `mov` or `movsx`, of either width: sets dst without reading it.
    fn is_mov(&self) -> bool {
        matches!(self.class(), BPF_ALU | BPF_ALU64) && self.opc & OP_MASK == BPF_MOV
    }

    /// The operation (imm) of an atomic; `None` for any other instruction.
    fn atomic_op(&self) -> Option<i32> {
        (self.class() == BPF_STX && self.opc & MODE_MASK == BPF_ATOMIC).then_some(self.imm)
    }
}

/// The slot that a jump or local call at `pc` going `offset` lands on:
/// `pc + 1 + offset`, which may lie outside the program (the verifier
/// refuses that).
pub fn branch_target(pc: usize, offset: i64) -> i64 {
    pc as i64 + 1 + offset
}

/// A set of registers, a bit each (bit n: rn), as many as a 4-bit field
/// names: those an instruction reads or writes, those live at a point.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Regs(u16);

impl Regs {
    pub const NONE: Regs = Regs(0);
    /// r0: what `exit` returns and a helper call sets.
    pub const R0: Regs = Regs(1);
    /// r1-r5: a helper's arguments.
    pub const ARGS: Regs = Regs(0b11_1110);
    /// r0-r9: every register but the read-only frame pointer.
    pub const WRITABLE: Regs = Regs((1 << FRAME_REG) - 1);

    /// `{reg}` (of a 4-bit field, as decoded).
    pub const fn of(reg: u8) -> Regs {
        Regs(1 << (reg & 15))
    }

    /// Bit n set for rn.
    pub const fn bits(self) -> u16 {
        self.0
    }

    pub const fn union(self, other: Regs) -> Regs {
        Regs(self.0 | other.0)
    }

    pub const fn contains(self, reg: u8) -> bool {
        self.0 & 1 << (reg & 15) != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The lowest-numbered register of the set.
    pub fn first(self) -> Option<u8> {
        (self.0 != 0).then(|| self.0.trailing_zeros() as u8)
    }

    /// The registers of the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..REG_SLOTS as u8).filter(move |&reg| self.contains(reg))
    }
}

impl std::ops::BitOr for Regs {
    type Output = Regs;
    fn bitor(self, other: Regs) -> Regs {
        self.union(other)
    }
}

impl std::ops::BitOrAssign for Regs {
    fn bitor_assign(&mut self, other: Regs) {
        self.0 |= other.0;
    }
}

impl std::ops::BitAnd for Regs {
    type Output = Regs;
    fn bitand(self, other: Regs) -> Regs {
        Regs(self.0 & other.0)
    }
}

/// The registers of `self` that are not in `other`.
impl std::ops::Sub for Regs {
    type Output = Regs;
    fn sub(self, other: Regs) -> Regs {
        Regs(self.0 & !other.0)
    }
}

impl std::ops::SubAssign for Regs {
    fn sub_assign(&mut self, other: Regs) {
        self.0 &= !other.0;
    }
}

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.iter().map(|reg| format!("r{reg}")).collect();
        write!(f, "{{{}}}", names.join(", "))
    }
}

/// Decodes a whole program; `None` when its length is not a multiple of 8.
pub fn decode_program(bytes: &[u8]) -> Option<Vec<Insn>> {
    if bytes.len() % INSN_SIZE != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSN_SIZE)
            .map(|slot| Insn::decode(slot.try_into().expect("chunks_exact yields 8 bytes")))
            .collect(),
    )
}

pub fn encode_program(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|insn| insn.encode()).collect()
}

/// Which operands an instruction form has, and so which fields it uses; every
/// field a form does not use must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// `op dst, imm`
    DstImm,
    /// `op dst, src`
    DstSrc,
    /// `op dst` (neg, byte swaps)
    Dst,
    /// `lddw dst, imm64` over two slots; `src` picks the pseudo form
    DstImm64,
    /// `op dst, [src+off]`
    DstMem,
    /// `op imm`: a legacy packet load at offset imm, into r0
    PacketAbs,
    /// `op src, imm`: a legacy packet load at offset src + imm, into r0
    PacketInd,
    /// `op [dst+off], imm`
    MemImm,
    /// `op [dst+off], src` (stores and atomics)
    MemSrc,
    /// `ja off`
    Jump,
    /// `ja32 imm`: the jump distance is in imm
    Jump32,
    /// `op dst, imm, off`
    DstImmJump,
    /// `op dst, src, off`
    DstSrcJump,
    /// `call imm`: helper by index
    CallHelper,
    /// `call local imm`: pc-relative call to a function of the program
    CallLocal,
    /// `callx dst`: helper whose index is in a register
    CallReg,
    /// `exit`
    Nothing,
}

/// Which fields of a slot an instruction form's operands occupy (its
/// selector's field aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub dst: bool,
    pub src: bool,
    pub off: bool,
    pub imm: bool,
}

impl Operands {
    /// The fields these operands occupy.
    pub const fn fields(self) -> Fields {
        let (dst, src, off, imm) = match self {
            Operands::DstImm | Operands::DstImm64 => (true, false, false, true),
            Operands::DstSrc => (true, true, false, false),
            Operands::Dst | Operands::CallReg => (true, false, false, false),
            Operands::DstMem | Operands::MemSrc | Operands::DstSrcJump => (true, true, true, false),
            Operands::MemImm | Operands::DstImmJump => (true, false, true, true),
            Operands::Jump => (false, false, true, false),
            Operands::Jump32 | Operands::CallHelper | Operands::CallLocal | Operands::PacketAbs => {
                (false, false, false, true)
            }
            Operands::PacketInd => (false, true, false, true),
            Operands::Nothing => (false, false, false, false),
        };
        Fields { dst, src, off, imm }
    }
}

/// A field whose value selects among forms sharing one opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    None,
    Off(i16),
    Imm(i32),
    Src(u8),
}

/// One instruction form of RFC 9669: an opcode, the field value that picks
/// it where several forms share the opcode, its mnemonic and operands.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub opc: u8,
    pub selector: Selector,
    pub mnemonic: &'static str,
    pub operands: Operands,
    /// The fields neither the operands nor the selector occupy, which must
    /// be zero, as bits: [`Form::UNUSED_DST`] and the others.
    unused: u8,
}

impl Form {
    /// Does this form describe `insn` (opcode and selector; not the other fields)?
    pub fn selects(&self, insn: &Insn) -> bool {
        self.opc == insn.opc
            && match self.selector {
                Selector::None => true,
                Selector::Off(off) => insn.off == off,
                Selector::Imm(imm) => insn.imm == imm,
                Selector::Src(src) => insn.src == src,
            }
    }

    /// Two slots (`lddw`)?
    pub fn is_wide(&self) -> bool {
        self.operands == Operands::DstImm64
    }

    pub(crate) const UNUSED_DST: u8 = 1;
    pub(crate) const UNUSED_SRC: u8 = 2;
    pub(crate) const UNUSED_OFF: u8 = 4;
    pub(crate) const UNUSED_IMM: u8 = 8;

    /// The fields this form leaves unused, which must be zero, as bits
    /// ([`Form::UNUSED_DST`] and the others): known once for each form, so
    /// that the verifier checks an instruction's fields in one test.
    pub(crate) fn unused(&self) -> u8 {
        self.unused
    }

    /// The bits ([`Form::UNUSED_DST`] and the others) of the fields named.
    pub(crate) const fn fields_set(dst: bool, src: bool, off: bool, imm: bool) -> u8 {
        (if dst { Form::UNUSED_DST } else { 0 })
            | (if src { Form::UNUSED_SRC } else { 0 })
            | (if off { Form::UNUSED_OFF } else { 0 })
            | (if imm { Form::UNUSED_IMM } else { 0 })
    }
}

const fn form(opc: u8, selector: Selector, mnemonic: &'static str, operands: Operands) -> Form {
    let fields = operands.fields();
    let (off, imm, src) = match selector {
        Selector::None => (false, false, false),
        Selector::Off(_) => (true, false, false),
        Selector::Imm(_) => (false, true, false),
        Selector::Src(_) => (false, false, true),
    };
    let unused = Form::fields_set(!fields.dst, !(fields.src || src), !(fields.off || off), !(fields.imm || imm));
    Form { opc, selector, mnemonic, operands, unused }
}

use Operands as O;
use Selector as S;

/// Every instruction form of RFC 9669 that qemu-ubpf accepts. Mnemonics are
/// those of the bpf_conformance and iovisor/ubpf assemblers; the first form
/// listed for a given encoding is the one the disassembler prints.
#[rustfmt::skip]
pub static FORMS: &[Form] = &[
    form(ADD32_IMM,  S::None,     "add32",     O::DstImm),
    form(ADD32_REG,  S::None,     "add32",     O::DstSrc),
    form(SUB32_IMM,  S::None,     "sub32",     O::DstImm),
    form(SUB32_REG,  S::None,     "sub32",     O::DstSrc),
    form(MUL32_IMM,  S::None,     "mul32",     O::DstImm),
    form(MUL32_REG,  S::None,     "mul32",     O::DstSrc),
    form(DIV32_IMM,  S::Off(0),   "div32",     O::DstImm),
    form(DIV32_REG,  S::Off(0),   "div32",     O::DstSrc),
    form(DIV32_IMM,  S::Off(1),   "sdiv32",    O::DstImm),
    form(DIV32_REG,  S::Off(1),   "sdiv32",    O::DstSrc),
    form(OR32_IMM,   S::None,     "or32",      O::DstImm),
    form(OR32_REG,   S::None,     "or32",      O::DstSrc),
    form(AND32_IMM,  S::None,     "and32",     O::DstImm),
    form(AND32_REG,  S::None,     "and32",     O::DstSrc),
    form(LSH32_IMM,  S::None,     "lsh32",     O::DstImm),
    form(LSH32_REG,  S::None,     "lsh32",     O::DstSrc),
    form(RSH32_IMM,  S::None,     "rsh32",     O::DstImm),
    form(RSH32_REG,  S::None,     "rsh32",     O::DstSrc),
    form(NEG32,      S::None,     "neg32",     O::Dst),
    form(MOD32_IMM,  S::Off(0),   "mod32",     O::DstImm),
    form(MOD32_REG,  S::Off(0),   "mod32",     O::DstSrc),
    form(MOD32_IMM,  S::Off(1),   "smod32",    O::DstImm),
    form(MOD32_REG,  S::Off(1),   "smod32",    O::DstSrc),
    form(XOR32_IMM,  S::None,     "xor32",     O::DstImm),
    form(XOR32_REG,  S::None,     "xor32",     O::DstSrc),
    form(MOV32_IMM,  S::None,     "mov32",     O::DstImm),
    form(MOV32_REG,  S::Off(0),   "mov32",     O::DstSrc),
    form(MOV32_REG,  S::Off(8),   "movsx832",  O::DstSrc),
    form(MOV32_REG,  S::Off(16),  "movsx1632", O::DstSrc),
    form(ARSH32_IMM, S::None,     "arsh32",    O::DstImm),
    form(ARSH32_REG, S::None,     "arsh32",    O::DstSrc),
    form(LE,         S::Imm(16),  "le16",      O::Dst),
    form(LE,         S::Imm(32),  "le32",      O::Dst),
    form(LE,         S::Imm(64),  "le64",      O::Dst),
    form(BE,         S::Imm(16),  "be16",      O::Dst),
    form(BE,         S::Imm(32),  "be32",      O::Dst),
    form(BE,         S::Imm(64),  "be64",      O::Dst),

    form(ADD64_IMM,  S::None,     "add",       O::DstImm),
    form(ADD64_REG,  S::None,     "add",       O::DstSrc),
    form(SUB64_IMM,  S::None,     "sub",       O::DstImm),
    form(SUB64_REG,  S::None,     "sub",       O::DstSrc),
    form(MUL64_IMM,  S::None,     "mul",       O::DstImm),
    form(MUL64_REG,  S::None,     "mul",       O::DstSrc),
    form(DIV64_IMM,  S::Off(0),   "div",       O::DstImm),
    form(DIV64_REG,  S::Off(0),   "div",       O::DstSrc),
    form(DIV64_IMM,  S::Off(1),   "sdiv",      O::DstImm),
    form(DIV64_REG,  S::Off(1),   "sdiv",      O::DstSrc),
    form(OR64_IMM,   S::None,     "or",        O::DstImm),
    form(OR64_REG,   S::None,     "or",        O::DstSrc),
    form(AND64_IMM,  S::None,     "and",       O::DstImm),
    form(AND64_REG,  S::None,     "and",       O::DstSrc),
    form(LSH64_IMM,  S::None,     "lsh",       O::DstImm),
    form(LSH64_REG,  S::None,     "lsh",       O::DstSrc),
    form(RSH64_IMM,  S::None,     "rsh",       O::DstImm),
    form(RSH64_REG,  S::None,     "rsh",       O::DstSrc),
    form(NEG64,      S::None,     "neg",       O::Dst),
    form(MOD64_IMM,  S::Off(0),   "mod",       O::DstImm),
    form(MOD64_REG,  S::Off(0),   "mod",       O::DstSrc),
    form(MOD64_IMM,  S::Off(1),   "smod",      O::DstImm),
    form(MOD64_REG,  S::Off(1),   "smod",      O::DstSrc),
    form(XOR64_IMM,  S::None,     "xor",       O::DstImm),
    form(XOR64_REG,  S::None,     "xor",       O::DstSrc),
    form(MOV64_IMM,  S::None,     "mov",       O::DstImm),
    form(MOV64_REG,  S::Off(0),   "mov",       O::DstSrc),
    form(MOV64_REG,  S::Off(8),   "movsx864",  O::DstSrc),
    form(MOV64_REG,  S::Off(16),  "movsx1664", O::DstSrc),
    form(MOV64_REG,  S::Off(32),  "movsx3264", O::DstSrc),
    form(ARSH64_IMM, S::None,     "arsh",      O::DstImm),
    form(ARSH64_REG, S::None,     "arsh",      O::DstSrc),
    form(BSWAP,      S::Imm(16),  "bswap16",   O::Dst),
    form(BSWAP,      S::Imm(32),  "bswap32",   O::Dst),
    form(BSWAP,      S::Imm(64),  "bswap64",   O::Dst),
    form(BSWAP,      S::Imm(16),  "swap16",    O::Dst),
    form(BSWAP,      S::Imm(32),  "swap32",    O::Dst),
    form(BSWAP,      S::Imm(64),  "swap64",    O::Dst),

    form(LDDW,       S::Src(LDDW_IMM64),          "lddw", O::DstImm64),
    form(LDDW,       S::Src(LDDW_MAP_FD),         "lddw", O::DstImm64),
    form(LDDW,       S::Src(LDDW_MAP_VALUE),      "lddw", O::DstImm64),
    form(LDDW,       S::Src(LDDW_VARIABLE_ADDR),  "lddw", O::DstImm64),
    form(LDDW,       S::Src(LDDW_CODE_ADDR),      "lddw", O::DstImm64),
    form(LDDW,       S::Src(LDDW_MAP_IDX),        "lddw", O::DstImm64),
    form(LDDW,       S::Src(LDDW_MAP_IDX_VALUE),  "lddw", O::DstImm64),

    form(LDXW,       S::None,     "ldxw",      O::DstMem),
    form(LDXH,       S::None,     "ldxh",      O::DstMem),
    form(LDXB,       S::None,     "ldxb",      O::DstMem),
    form(LDXDW,      S::None,     "ldxdw",     O::DstMem),
    form(LDXSW,      S::None,     "ldxsw",     O::DstMem),
    form(LDXSH,      S::None,     "ldxsh",     O::DstMem),
    form(LDXSB,      S::None,     "ldxsb",     O::DstMem),
    form(LDABSW,     S::None,     "ldabsw",    O::PacketAbs),
    form(LDABSH,     S::None,     "ldabsh",    O::PacketAbs),
    form(LDABSB,     S::None,     "ldabsb",    O::PacketAbs),
    form(LDINDW,     S::None,     "ldindw",    O::PacketInd),
    form(LDINDH,     S::None,     "ldindh",    O::PacketInd),
    form(LDINDB,     S::None,     "ldindb",    O::PacketInd),
    form(STW,        S::None,     "stw",       O::MemImm),
    form(STH,        S::None,     "sth",       O::MemImm),
    form(STB,        S::None,     "stb",       O::MemImm),
    form(STDW,       S::None,     "stdw",      O::MemImm),
    form(STXW,       S::None,     "stxw",      O::MemSrc),
    form(STXH,       S::None,     "stxh",      O::MemSrc),
    form(STXB,       S::None,     "stxb",      O::MemSrc),
    form(STXDW,      S::None,     "stxdw",     O::MemSrc),

    form(ATOMIC32,   S::Imm(ATOMIC_ADD),                "lock add32",       O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_ADD | ATOMIC_FETCH), "lock fetch add32", O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_OR),                 "lock or32",        O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_OR | ATOMIC_FETCH),  "lock fetch or32",  O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_AND),                "lock and32",       O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_AND | ATOMIC_FETCH), "lock fetch and32", O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_XOR),                "lock xor32",       O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_XOR | ATOMIC_FETCH), "lock fetch xor32", O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_XCHG),               "lock xchg32",      O::MemSrc),
    form(ATOMIC32,   S::Imm(ATOMIC_CMPXCHG),            "lock cmpxchg32",   O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_ADD),                "lock add",         O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_ADD | ATOMIC_FETCH), "lock fetch add",   O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_OR),                 "lock or",          O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_OR | ATOMIC_FETCH),  "lock fetch or",    O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_AND),                "lock and",         O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_AND | ATOMIC_FETCH), "lock fetch and",   O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_XOR),                "lock xor",         O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_XOR | ATOMIC_FETCH), "lock fetch xor",   O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_XCHG),               "lock xchg",        O::MemSrc),
    form(ATOMIC64,   S::Imm(ATOMIC_CMPXCHG),            "lock cmpxchg",     O::MemSrc),

    form(JA,         S::None,     "ja",        O::Jump),
    form(JEQ_IMM,    S::None,     "jeq",       O::DstImmJump),
    form(JEQ_REG,    S::None,     "jeq",       O::DstSrcJump),
    form(JGT_IMM,    S::None,     "jgt",       O::DstImmJump),
    form(JGT_REG,    S::None,     "jgt",       O::DstSrcJump),
    form(JGE_IMM,    S::None,     "jge",       O::DstImmJump),
    form(JGE_REG,    S::None,     "jge",       O::DstSrcJump),
    form(JSET_IMM,   S::None,     "jset",      O::DstImmJump),
    form(JSET_REG,   S::None,     "jset",      O::DstSrcJump),
    form(JNE_IMM,    S::None,     "jne",       O::DstImmJump),
    form(JNE_REG,    S::None,     "jne",       O::DstSrcJump),
    form(JSGT_IMM,   S::None,     "jsgt",      O::DstImmJump),
    form(JSGT_REG,   S::None,     "jsgt",      O::DstSrcJump),
    form(JSGE_IMM,   S::None,     "jsge",      O::DstImmJump),
    form(JSGE_REG,   S::None,     "jsge",      O::DstSrcJump),
    form(CALL,       S::Src(CALL_HELPER), "call", O::CallHelper),
    form(CALL,       S::Src(CALL_LOCAL),  "call", O::CallLocal),
    form(CALLX,      S::None,     "callx",     O::CallReg),
    form(EXIT,       S::None,     "exit",      O::Nothing),
    form(JLT_IMM,    S::None,     "jlt",       O::DstImmJump),
    form(JLT_REG,    S::None,     "jlt",       O::DstSrcJump),
    form(JLE_IMM,    S::None,     "jle",       O::DstImmJump),
    form(JLE_REG,    S::None,     "jle",       O::DstSrcJump),
    form(JSLT_IMM,   S::None,     "jslt",      O::DstImmJump),
    form(JSLT_REG,   S::None,     "jslt",      O::DstSrcJump),
    form(JSLE_IMM,   S::None,     "jsle",      O::DstImmJump),
    form(JSLE_REG,   S::None,     "jsle",      O::DstSrcJump),

    form(JA32,       S::None,     "ja32",      O::Jump32),
    form(JA32,       S::None,     "gotol",     O::Jump32),
    form(JEQ32_IMM,  S::None,     "jeq32",     O::DstImmJump),
    form(JEQ32_REG,  S::None,     "jeq32",     O::DstSrcJump),
    form(JGT32_IMM,  S::None,     "jgt32",     O::DstImmJump),
    form(JGT32_REG,  S::None,     "jgt32",     O::DstSrcJump),
    form(JGE32_IMM,  S::None,     "jge32",     O::DstImmJump),
    form(JGE32_REG,  S::None,     "jge32",     O::DstSrcJump),
    form(JSET32_IMM, S::None,     "jset32",    O::DstImmJump),
    form(JSET32_REG, S::None,     "jset32",    O::DstSrcJump),
    form(JNE32_IMM,  S::None,     "jne32",     O::DstImmJump),
    form(JNE32_REG,  S::None,     "jne32",     O::DstSrcJump),
    form(JSGT32_IMM, S::None,     "jsgt32",    O::DstImmJump),
    form(JSGT32_REG, S::None,     "jsgt32",    O::DstSrcJump),
    form(JSGE32_IMM, S::None,     "jsge32",    O::DstImmJump),
    form(JSGE32_REG, S::None,     "jsge32",    O::DstSrcJump),
    form(JLT32_IMM,  S::None,     "jlt32",     O::DstImmJump),
    form(JLT32_REG,  S::None,     "jlt32",     O::DstSrcJump),
    form(JLE32_IMM,  S::None,     "jle32",     O::DstImmJump),
    form(JLE32_REG,  S::None,     "jle32",     O::DstSrcJump),
    form(JSLT32_IMM, S::None,     "jslt32",    O::DstImmJump),
    form(JSLT32_REG, S::None,     "jslt32",    O::DstSrcJump),
    form(JSLE32_IMM, S::None,     "jsle32",    O::DstImmJump),
    form(JSLE32_REG, S::None,     "jsle32",    O::DstSrcJump),
];

/// [`FORMS`] grouped by opcode, so that finding a form is one index and a
/// short scan: the verifier and the JIT's analyses do it for every
/// instruction, several times. Built when compiling: `order` lists the
/// indices of [`FORMS`] by opcode (in table order within an opcode), and
/// an opcode's indices are `order[start[opc]..start[opc + 1]]`; `sole` is
/// the index of an opcode's only form where no field selects it (most
/// opcodes), else [`SCAN`].
struct FormsByOpcode {
    start: [u16; 257],
    order: [u16; FORMS.len()],
    sole: [u16; 256],
}

/// In [`FormsByOpcode::sole`]: look through the opcode's forms.
const SCAN: u16 = u16::MAX;

static FORMS_BY_OPCODE: FormsByOpcode = {
    let mut start = [0u16; 257];
    let mut i = 0;
    while i < FORMS.len() {
        start[FORMS[i].opc as usize + 1] += 1;
        i += 1;
    }
    let mut opc = 0;
    while opc < 256 {
        start[opc + 1] += start[opc];
        opc += 1;
    }
    let mut next = start;
    let mut order = [0u16; FORMS.len()];
    i = 0;
    while i < FORMS.len() {
        let opc = FORMS[i].opc as usize;
        order[next[opc] as usize] = i as u16;
        next[opc] += 1;
        i += 1;
    }
    let mut sole = [SCAN; 256];
    opc = 0;
    while opc < 256 {
        if start[opc + 1] - start[opc] == 1 {
            let only = order[start[opc] as usize];
            if matches!(FORMS[only as usize].selector, Selector::None) {
                sole[opc] = only;
            }
        }
        opc += 1;
    }
    FormsByOpcode { start, order, sole }
};

/// The form that describes `insn` (the first listed, where aliases exist).
/// Inlined: loading, verifying and planning ask several times an
/// instruction, and most opcodes have one form, a table lookup.
#[inline]
pub fn form_of(insn: &Insn) -> Option<&'static Form> {
    let sole = FORMS_BY_OPCODE.sole[insn.opc as usize];
    if sole != SCAN {
        return Some(&FORMS[sole as usize]);
    }
    form_by_selector(insn)
}

/// [`form_of`] for an opcode with several forms, or none.
fn form_by_selector(insn: &Insn) -> Option<&'static Form> {
    let by_opcode = &FORMS_BY_OPCODE;
    let (from, to) = (by_opcode.start[insn.opc as usize], by_opcode.start[insn.opc as usize + 1]);
    by_opcode.order[from as usize..to as usize].iter().map(|&i| &FORMS[i as usize]).find(|form| form.selects(insn))
}

/// Forms with this mnemonic, in table order.
pub fn forms_named(mnemonic: &str) -> impl Iterator<Item = &'static Form> + '_ {
    FORMS.iter().filter(move |form| form.mnemonic == mnemonic)
}

/// Is `value` the index of a register (r0..r10)?
pub fn is_register(value: u8) -> bool {
    (value as usize) < NUM_REGS
}

/// Bytes moved by a load, store or atomic with this opcode.
pub fn access_size(opc: u8) -> usize {
    match opc & SIZE_MASK {
        BPF_B => 1,
        BPF_H => 2,
        BPF_W => 4,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips() {
        let insn = Insn::new(LDXW, 3, 10, -8, -123456);
        assert_eq!(Insn::decode(insn.encode()), insn);
        assert_eq!(insn.encode(), [0x61, 0xa3, 0xf8, 0xff, 0xc0, 0x1d, 0xfe, 0xff]);
    }

    #[test]
    fn every_encoding_has_one_canonical_form() {
        for form in FORMS {
            let first = FORMS.iter().find(|other| other.opc == form.opc && other.selector == form.selector).unwrap();
            // Aliases (swap16, gotol) must come after the name the disassembler prints.
            if !std::ptr::eq(first, form) {
                assert!(matches!(form.mnemonic, "swap16" | "swap32" | "swap64" | "gotol"), "{form:?}");
            }
        }
    }

    /// The off, imm and src fields of an instruction of `form`: what its
    /// selector fixes, else 0, 0 and r2.
    fn selected_fields(form: &Form) -> (i16, i32, u8) {
        match form.selector {
            Selector::None => (0, 0, 2),
            Selector::Off(off) => (off, 0, 2),
            Selector::Imm(imm) => (0, imm, 2),
            Selector::Src(src) => (0, 0, src),
        }
    }

    #[test]
    fn operations_and_loads_write_their_dst_only() {
        // The JIT's facts rely on it, without looking up the form.
        let forms = FORMS.iter().filter(|form| matches!(form.opc & CLASS_MASK, BPF_ALU | BPF_ALU64 | BPF_LDX));
        assert!(forms.clone().count() > 70);
        for form in forms {
            let (off, imm, src) = selected_fields(form);
            let insn = Insn::new(form.opc, 3, src, off, imm);
            assert_eq!(insn.writes(), Regs::of(3), "{form:?}");
        }
    }

    #[test]
    fn reads_of_verified_instructions_match_their_forms() {
        for form in FORMS {
            let (off, imm, src) = selected_fields(form);
            let fields = form.operands.fields();
            let src = if fields.src || matches!(form.selector, Selector::Src(_)) { src } else { 0 };
            let insn = Insn::new(form.opc, if fields.dst { 3 } else { 0 }, src, off, imm);
            assert_eq!(insn.reads_verified(), insn.reads(), "{form:?}");
        }
    }

    #[test]
    fn opcode_fields_compose() {
        assert_eq!(LDDW, 0x18);
        assert_eq!(CALL, 0x85);
        assert_eq!(CALLX, 0x8d);
        assert_eq!(EXIT, 0x95);
        assert_eq!(ATOMIC64, 0xdb);
        assert_eq!(LDXSB, 0x91);
        assert_eq!(JA32, 0x06);
        assert_eq!(BSWAP, 0xd7);
    }

    /// An instruction of `form`, its selector's field set, dst r7 and src
    /// r8 where it has them (registers no instruction reads or writes
    /// implicitly), and the given off and imm where it uses them.
    fn sample(form: &Form, off: i16, imm: i32) -> Insn {
        let fields = form.operands.fields();
        let mut insn = Insn::new(
            form.opc,
            if fields.dst { 7 } else { 0 },
            if fields.src { 8 } else { 0 },
            if fields.off { off } else { 0 },
            if fields.imm { imm } else { 0 },
        );
        match form.selector {
            Selector::None => {}
            Selector::Off(off) => insn.off = off,
            Selector::Imm(imm) => insn.imm = imm,
            Selector::Src(src) => insn.src = src,
        }
        insn
    }

    #[test]
    fn every_form_reads_and_writes_only_what_it_names() {
        for form in FORMS {
            let insn = sample(form, 0, 0);
            let fields = form.operands.fields();
            let named = |used: bool, reg: u8| if used { Regs::of(reg) } else { Regs::NONE };
            let named = named(fields.dst, 7) | named(fields.src, 8);
            let (reads, writes) = (insn.reads(), insn.writes());
            // What a form reads or writes beyond its fields: a call's
            // arguments and result, exit's r0, cmpxchg's r0.
            let implicit = (reads | writes) - named;
            match form.operands {
                Operands::CallHelper | Operands::CallReg => assert_eq!(implicit, Regs::ARGS | Regs::R0, "{form:?}"),
                Operands::CallLocal => assert_eq!(implicit, Regs::WRITABLE, "{form:?}"),
                Operands::Nothing | Operands::PacketAbs | Operands::PacketInd => {
                    assert_eq!(implicit, Regs::R0, "{form:?}")
                }
                _ if insn.imm == ATOMIC_CMPXCHG => assert_eq!(implicit, Regs::R0, "{form:?}"),
                _ => assert_eq!(implicit, Regs::NONE, "{form:?}"),
            }
            assert!(writes.iter().count() <= 1, "{form:?} writes {writes:?}");
            // Operations and loads write dst and only dst; so the verifier
            // can refuse r10 there.
            let sets_dst = matches!(insn.class(), BPF_ALU | BPF_ALU64 | BPF_LDX) || insn.opc == LDDW;
            assert_eq!(writes == Regs::of(7), sets_dst, "{form:?} writes {writes:?}");
        }
    }

    #[test]
    fn reads_and_writes_of_each_kind() {
        let cases = [
            (Insn::new(MOV64_REG, 1, 2, 0, 0), Regs::of(2), Regs::of(1)),
            (Insn::new(MOV32_REG, 1, 2, 8, 0), Regs::of(2), Regs::of(1)),
            (Insn::new(MOV64_IMM, 1, 0, 0, 5), Regs::NONE, Regs::of(1)),
            (Insn::new(ADD64_REG, 1, 2, 0, 0), Regs::of(1) | Regs::of(2), Regs::of(1)),
            (Insn::new(NEG64, 1, 0, 0, 0), Regs::of(1), Regs::of(1)),
            (Insn::new(BE, 1, 0, 0, 16), Regs::of(1), Regs::of(1)),
            (Insn::new(LDDW, 1, 0, 0, 5), Regs::NONE, Regs::of(1)),
            (Insn::new(LDXW, 1, 2, 0, 0), Regs::of(2), Regs::of(1)),
            (Insn::new(STW, 1, 0, 0, 3), Regs::of(1), Regs::NONE),
            (Insn::new(STXW, 1, 2, 0, 0), Regs::of(1) | Regs::of(2), Regs::NONE),
            (Insn::new(ATOMIC64, 1, 2, 0, ATOMIC_ADD), Regs::of(1) | Regs::of(2), Regs::NONE),
            (Insn::new(ATOMIC32, 1, 2, 0, ATOMIC_OR | ATOMIC_FETCH), Regs::of(1) | Regs::of(2), Regs::of(2)),
            (Insn::new(ATOMIC64, 1, 2, 0, ATOMIC_XCHG), Regs::of(1) | Regs::of(2), Regs::of(2)),
            (Insn::new(ATOMIC64, 1, 2, 0, ATOMIC_CMPXCHG), Regs::R0 | Regs::of(1) | Regs::of(2), Regs::R0),
            (Insn::new(JA, 0, 0, 3, 0), Regs::NONE, Regs::NONE),
            (Insn::new(JEQ_IMM, 1, 0, 3, 0), Regs::of(1), Regs::NONE),
            (Insn::new(JSLT32_REG, 1, 2, 3, 0), Regs::of(1) | Regs::of(2), Regs::NONE),
            (Insn::new(CALL, 0, CALL_HELPER, 0, 1), Regs::ARGS, Regs::R0),
            (Insn::new(CALLX, 7, 0, 0, 0), Regs::ARGS | Regs::of(7), Regs::R0),
            (Insn::new(CALL, 0, CALL_LOCAL, 0, 1), Regs::WRITABLE, Regs::NONE),
            (Insn::new(EXIT, 0, 0, 0, 0), Regs::R0, Regs::NONE),
            // An lddw's second slot, which no form describes.
            (Insn::new(0, 0, 0, 0, 5), Regs::NONE, Regs::NONE),
        ];
        for (insn, reads, writes) in cases {
            assert_eq!((insn.reads(), insn.writes()), (reads, writes), "{insn:?}");
        }
    }

    #[test]
    fn jumps_and_local_calls_land_relative_to_the_next_slot() {
        for form in FORMS {
            let insn = sample(form, -3, 5);
            let jump = match form.operands {
                Operands::Jump | Operands::DstImmJump | Operands::DstSrcJump => Some(7),
                Operands::Jump32 => Some(15),
                _ => None,
            };
            assert_eq!(insn.jump_target(9), jump, "{form:?}");
            let call = (form.operands == Operands::CallLocal).then_some(15);
            assert_eq!(insn.local_call_target(9), call, "{form:?}");
        }
        assert_eq!(branch_target(0, -2), -1);
        assert_eq!(Insn::new(JA, 0, 0, -1, 0).jump_target(0), Some(0));
    }

    #[test]
    fn lddw_pseudo_sources_are_the_forms_of_lddw() {
        let forms: Vec<u8> = forms_named("lddw")
            .map(|form| match form.selector {
                Selector::Src(src) => src,
                other => panic!("lddw selected by {other:?}"),
            })
            .collect();
        let keywords: Vec<u8> = LDDW_PSEUDO_KEYWORDS.iter().map(|&(src, _)| src).collect();
        assert_eq!(forms[0], LDDW_IMM64);
        assert_eq!(forms[1..], keywords);
        for (src, keyword) in LDDW_PSEUDO_KEYWORDS {
            assert_eq!(lddw_names_map(src), keyword.starts_with("map_"), "{keyword}");
            assert_eq!(lddw_loads_map_value(src), keyword.ends_with("_value"), "{keyword}");
        }
        assert!(!lddw_names_map(LDDW_IMM64) && !lddw_loads_map_value(LDDW_IMM64));
    }

    #[test]
    fn register_sets() {
        let set = Regs::of(1) | Regs::of(10);
        assert!(set.contains(10) && !set.contains(2));
        assert_eq!(set - Regs::of(1), Regs::of(10));
        assert_eq!(set.first(), Some(1));
        assert_eq!(Regs::NONE.first(), None);
        assert_eq!(Regs::WRITABLE.iter().collect::<Vec<_>>(), (0..FRAME_REG).collect::<Vec<_>>());
        assert_eq!(format!("{:?}", Regs::R0 | Regs::of(3)), "{r0, r3}");
    }
}
