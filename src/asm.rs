//! The assembler: text in the syntax of the bpf_conformance test vectors and
//! of iovisor/ubpf, turned into instruction slots. Mnemonics and operand
//! shapes come from [`isa::FORMS`]; this module knows only the syntax.
//!
//! - One instruction per line; `#` starts a comment anywhere; blank lines are
//!   skipped. `name:` defines a label (alone on its line, or before an
//!   instruction). A mnemonic of several words (`lock fetch add32`) may be
//!   spaced freely.
//! - Registers are `%r0`..`%r10` or `r0`..`r10`.
//! - Numbers are decimal or `0x` hex with an optional sign. A 32-bit immediate
//!   takes any value of i32 or u32 (`0xffffffff` is -1); an lddw immediate
//!   any value of i64 or u64.
//! - Memory operands are `[%r1]`, `[%r1+4]`, `[%r10-0x8]`.
//! - Jump and local call targets are a label or a relative offset `+N`/`-N`
//!   in slots, as encoded. The label `exit`, unless defined, is the first
//!   `exit` instruction (the conformance vectors rely on this).
//! - Calls: `call N` (also `call helper N`), `call local target`,
//!   `callx %rN` (also `call %rN`).
//! - lddw pseudo forms (RFC 9669 section 5.4) write the src kind, the first
//!   slot's imm, and, where not zero, the second slot's imm as a signed
//!   addend: `lddw %r1, map_fd 3`, `lddw %r1, map_value 3+8`, and likewise
//!   `var_addr`, `code_addr`, `map_idx`, `map_idx_value` (the keywords of
//!   [`isa::LDDW_PSEUDO_KEYWORDS`]).
//! - `.insn opc=0x95 dst=0 src=0 off=0 imm=0` emits one raw slot (absent
//!   fields are zero), so that any encoding can be written down.

use std::collections::HashMap;

use crate::error::{AsmError, AsmErrorKind};
use crate::isa::{self, FORMS, Form, Insn, Operands, Selector};

/// Assembles a program; errors name the 1-based line at fault.
pub fn assemble(source: &str) -> Result<Vec<Insn>, AsmError> {
    let mut labels: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut parsed = Vec::new();
    let mut slots = 0;
    let mut first_exit = None;
    for (index, raw_line) in source.lines().enumerate() {
        let line = index + 1;
        let at_line = |kind| AsmError { line, kind };
        let mut text = raw_line.split('#').next().unwrap_or_default().trim();
        if let Some((name, rest)) = text.split_once(':') {
            let name = name.trim();
            if !is_label_name(name) {
                return Err(at_line(AsmErrorKind::BadLabelName(name.to_string())));
            }
            if let Some((_, defined_on)) = labels.insert(name, (slots, line)) {
                return Err(at_line(AsmErrorKind::DuplicateLabel { name: name.to_string(), first: defined_on }));
            }
            text = rest.trim();
        }
        if text.is_empty() {
            continue;
        }
        let instruction = parse_instruction(text).map_err(at_line)?;
        if instruction.insn.opc == isa::EXIT && first_exit.is_none() {
            first_exit = Some(slots);
        }
        let width = if instruction.high.is_some() { 2 } else { 1 };
        parsed.push((line, slots, instruction));
        slots += width;
    }

    let mut insns = Vec::with_capacity(slots);
    for (line, pc, instruction) in parsed {
        let mut insn = instruction.insn;
        if let Some(target) = instruction.target {
            let offset = match target.place {
                Destination::Relative(offset) => offset,
                Destination::Label(name) => {
                    let implicit_exit = if name == "exit" { first_exit } else { None };
                    let destination = labels.get(name).map(|&(slot, _)| slot).or(implicit_exit);
                    let destination = destination
                        .ok_or_else(|| AsmError { line, kind: AsmErrorKind::UndefinedLabel(name.to_string()) })?;
                    destination as i128 - pc as i128 - 1
                }
            };
            let out_of_range = || AsmError { line, kind: AsmErrorKind::JumpOutOfRange(offset) };
            match target.field {
                Field::Off => insn.off = i16::try_from(offset).map_err(|_| out_of_range())?,
                Field::Imm => insn.imm = i32::try_from(offset).map_err(|_| out_of_range())?,
            }
        }
        insns.push(insn);
        if let Some(high) = instruction.high {
            insns.push(Insn::new(0, 0, 0, 0, high));
        }
    }
    Ok(insns)
}

/// One instruction before its jump target is resolved.
struct ParsedInsn<'a> {
    insn: Insn,
    /// The imm of an lddw's second slot.
    high: Option<i32>,
    target: Option<Target<'a>>,
}

struct Target<'a> {
    place: Destination<'a>,
    field: Field,
}

enum Destination<'a> {
    Relative(i128),
    Label(&'a str),
}

/// Where a jump distance is encoded: `off` for ordinary jumps, `imm` for
/// `ja32` and local calls.
#[derive(Clone, Copy)]
enum Field {
    Off,
    Imm,
}

/// An operand, classified by its syntax alone.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Reg(u8),
    Mem(u8, i16),
    /// `local target`, the operand of a local call.
    Local(&'a str),
    /// A number, label, or lddw pseudo value; its form decides which.
    Value(&'a str),
}

fn parse_instruction(text: &str) -> Result<ParsedInsn<'_>, AsmErrorKind> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.first() == Some(&".insn") {
        return parse_raw(&words[1..]);
    }
    let (mnemonic, rest) = split_mnemonic(text, &words).ok_or_else(|| unknown_mnemonic(&words))?;
    let rest = rest.trim();
    let operands = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(',').map(|operand| classify(operand.trim())).collect::<Result<Vec<_>, _>>()?
    };

    let candidates: Vec<&Form> = forms_for(&mnemonic).filter(|form| arity(form.operands) == operands.len()).collect();
    if candidates.is_empty() {
        let takes = distinct(forms_for(&mnemonic).map(|form| arity(form.operands)));
        return Err(AsmErrorKind::OperandCount { mnemonic, takes, given: operands.len() });
    }
    for form in &candidates {
        if let Some(instruction) = encode(form, &operands)? {
            return Ok(instruction);
        }
    }
    let shapes = distinct(candidates.iter().map(|form| syntax(form.operands)));
    Err(AsmErrorKind::OperandShape { mnemonic, shapes })
}

fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut unique = Vec::new();
    for item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}

/// The longest run of leading words that names a form, and the text after it.
fn split_mnemonic<'a>(text: &'a str, words: &[&str]) -> Option<(String, &'a str)> {
    let longest = FORMS.iter().map(|form| form.mnemonic.split(' ').count()).max().unwrap_or(1);
    (1..=longest.min(words.len())).rev().find_map(|count| {
        let mnemonic = words[..count].join(" ");
        let known = forms_for(&mnemonic).next().is_some();
        known.then(|| (mnemonic, skip_words(text, count)))
    })
}

fn skip_words(text: &str, count: usize) -> &str {
    (0..count).fold(text, |rest, _| {
        let rest = rest.trim_start();
        &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..]
    })
}

fn unknown_mnemonic(words: &[&str]) -> AsmErrorKind {
    let is_mnemonic_word = |word: &str| FORMS.iter().any(|form| form.mnemonic.split(' ').any(|part| part == word));
    // Report `lock fetch bogus` whole, but not the operands after `bogus`.
    let mut count = 1;
    while count < words.len()
        && is_mnemonic_word(words[count - 1])
        && words[count].chars().all(|c| c.is_ascii_alphanumeric())
    {
        count += 1;
    }
    AsmErrorKind::UnknownMnemonic(words[..count.min(words.len())].join(" "))
}

/// Forms spelled `mnemonic`; `call %rN` is the bpf_conformance spelling of `callx`.
fn forms_for(mnemonic: &str) -> impl Iterator<Item = &'static Form> + '_ {
    // `call %rN` is the bpf_conformance spelling of `callx %rN`.
    let callx = FORMS.iter().filter(move |form| mnemonic == "call" && form.operands == Operands::CallReg);
    isa::forms_named(mnemonic).chain(callx)
}

/// The operands of a form, as shown in error messages.
fn syntax(operands: Operands) -> &'static str {
    match operands {
        Operands::DstImm => "%dst, imm",
        Operands::DstSrc => "%dst, %src",
        Operands::Dst => "%dst",
        Operands::DstImm64 => "%dst, imm64",
        Operands::DstMem => "%dst, [%src+off]",
        Operands::MemImm => "[%dst+off], imm",
        Operands::MemSrc => "[%dst+off], %src",
        Operands::Jump | Operands::Jump32 => "target",
        Operands::DstImmJump => "%dst, imm, target",
        Operands::DstSrcJump => "%dst, %src, target",
        Operands::CallHelper | Operands::PacketAbs => "imm",
        Operands::PacketInd => "%src, imm",
        Operands::CallLocal => "local target",
        Operands::CallReg => "%reg",
        Operands::Nothing => "",
    }
}

fn arity(operands: Operands) -> usize {
    match syntax(operands) {
        "" => 0,
        shape => shape.split(',').count(),
    }
}

/// Builds `form` from `operands`; `Ok(None)` when their shape is not the form's.
fn encode<'a>(form: &Form, operands: &[Operand<'a>]) -> Result<Option<ParsedInsn<'a>>, AsmErrorKind> {
    use Operand::{Local, Mem, Reg, Value};
    let mut insn = Insn::new(form.opc, 0, 0, 0, 0);
    let mut high = None;
    let mut target = None;
    match (form.operands, operands) {
        (Operands::DstImm, &[Reg(dst), Value(imm)]) => {
            insn.dst = dst;
            insn.imm = imm32(imm)?;
        }
        (Operands::DstSrc, &[Reg(dst), Reg(src)]) => {
            insn.dst = dst;
            insn.src = src;
        }
        (Operands::Dst | Operands::CallReg, &[Reg(dst)]) => insn.dst = dst,
        (Operands::DstImm64, &[Reg(dst), Value(value)]) => {
            let (src, value) = lddw_pseudo(value);
            if form.selector != Selector::Src(src) {
                return Ok(None);
            }
            insn.dst = dst;
            let (low, high_imm) = if src == isa::LDDW_IMM64 { imm64(value)? } else { pseudo_imms(value)? };
            insn.imm = low;
            high = Some(high_imm);
        }
        (Operands::DstMem, &[Reg(dst), Mem(src, off)]) => {
            insn.dst = dst;
            insn.src = src;
            insn.off = off;
        }
        (Operands::MemImm, &[Mem(dst, off), Value(imm)]) => {
            insn.dst = dst;
            insn.off = off;
            insn.imm = imm32(imm)?;
        }
        (Operands::MemSrc, &[Mem(dst, off), Reg(src)]) => {
            insn.dst = dst;
            insn.src = src;
            insn.off = off;
        }
        (Operands::Jump, &[Value(place)]) => target = Some(parse_target(place, Field::Off)?),
        (Operands::Jump32, &[Value(place)]) | (Operands::CallLocal, &[Local(place)]) => {
            target = Some(parse_target(place, Field::Imm)?);
        }
        (Operands::DstImmJump, &[Reg(dst), Value(imm), Value(place)]) => {
            insn.dst = dst;
            insn.imm = imm32(imm)?;
            target = Some(parse_target(place, Field::Off)?);
        }
        (Operands::DstSrcJump, &[Reg(dst), Reg(src), Value(place)]) => {
            insn.dst = dst;
            insn.src = src;
            target = Some(parse_target(place, Field::Off)?);
        }
        (Operands::CallHelper, &[Value(imm)]) => insn.imm = imm32(after_keyword(imm, "helper").unwrap_or(imm))?,
        (Operands::PacketAbs, &[Value(imm)]) => insn.imm = imm32(imm)?,
        (Operands::PacketInd, &[Reg(src), Value(imm)]) => {
            insn.src = src;
            insn.imm = imm32(imm)?;
        }
        (Operands::Nothing, &[]) => {}
        _ => return Ok(None),
    }
    match form.selector {
        Selector::None => {}
        Selector::Off(off) => insn.off = off,
        Selector::Imm(imm) => insn.imm = imm,
        Selector::Src(src) => insn.src = src,
    }
    Ok(Some(ParsedInsn { insn, high, target }))
}

fn classify(text: &str) -> Result<Operand<'_>, AsmErrorKind> {
    if text.is_empty() {
        Err(AsmErrorKind::MissingOperand)
    } else if text.starts_with('[') {
        parse_mem(text)
    } else if looks_like_register(text) {
        parse_register(text).map(Operand::Reg)
    } else if let Some(place) = after_keyword(text, "local") {
        Ok(Operand::Local(place))
    } else {
        Ok(Operand::Value(text))
    }
}

fn looks_like_register(text: &str) -> bool {
    text.starts_with('%')
        || text.strip_prefix('r').is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_register(text: &str) -> Result<u8, AsmErrorKind> {
    let digits = text.strip_prefix('%').unwrap_or(text).strip_prefix('r');
    let number = digits
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| AsmErrorKind::NotARegister(text.to_string()))?;
    match number.parse::<u8>() {
        Ok(index) if isa::is_register(index) => Ok(index),
        _ => Err(AsmErrorKind::NoSuchRegister(number.to_string())),
    }
}

fn parse_mem(text: &str) -> Result<Operand<'_>, AsmErrorKind> {
    let inner = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(|| AsmErrorKind::NotAMemoryOperand(text.to_string()))?;
    let (base, off) = match inner.find(['+', '-']) {
        Some(sign) => (&inner[..sign], offset16(&inner[sign..])?),
        None => (inner, 0),
    };
    Ok(Operand::Mem(parse_register(base.trim())?, off))
}

/// The text after `keyword` and whitespace, when `text` starts with that word.
fn after_keyword<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    text.strip_prefix(keyword).filter(|rest| rest.starts_with(char::is_whitespace)).map(str::trim_start)
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !looks_like_register(name)
}

fn parse_target(text: &str, field: Field) -> Result<Target<'_>, AsmErrorKind> {
    let place = if text.starts_with(['+', '-']) || text.starts_with(|c: char| c.is_ascii_digit()) {
        Destination::Relative(parse_int(text)?)
    } else if is_label_name(text) {
        Destination::Label(text)
    } else {
        return Err(AsmErrorKind::NotATarget(text.to_string()));
    };
    Ok(Target { place, field })
}

/// The src of an lddw value (0 unless it starts with a pseudo form's name) and the rest.
fn lddw_pseudo(value: &str) -> (u8, &str) {
    isa::LDDW_PSEUDO_KEYWORDS
        .iter()
        .find_map(|&(src, name)| after_keyword(value, name).map(|rest| (src, rest)))
        .unwrap_or((isa::LDDW_IMM64, value))
}

/// `3` or `3+8` or `3-8`: the imm of the first slot and of the second.
fn pseudo_imms(text: &str) -> Result<(i32, i32), AsmErrorKind> {
    // A sign after the first character separates the addend.
    match text.char_indices().skip(1).find(|&(_, c)| c == '+' || c == '-') {
        Some((split, _)) => Ok((imm32(text[..split].trim())?, imm32(&text[split..])?)),
        None => Ok((imm32(text)?, 0)),
    }
}

/// A 64-bit immediate, split into the imms of lddw's two slots.
fn imm64(text: &str) -> Result<(i32, i32), AsmErrorKind> {
    let value = parse_int(text)?;
    if !(i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&value) {
        return Err(AsmErrorKind::ImmediateOutOfRange { text: text.to_string(), bits: 64 });
    }
    let bits = value as u64;
    Ok((bits as u32 as i32, (bits >> 32) as u32 as i32))
}

fn imm32(text: &str) -> Result<i32, AsmErrorKind> {
    let value = parse_int(text)?;
    if !(i128::from(i32::MIN)..=i128::from(u32::MAX)).contains(&value) {
        return Err(AsmErrorKind::ImmediateOutOfRange { text: text.to_string(), bits: 32 });
    }
    Ok(value as u32 as i32)
}

fn offset16(text: &str) -> Result<i16, AsmErrorKind> {
    i16::try_from(parse_int(text)?).map_err(|_| AsmErrorKind::OffsetOutOfRange(text.to_string()))
}

/// A decimal or `0x` hex integer with an optional sign.
fn parse_int(text: &str) -> Result<i128, AsmErrorKind> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let unsigned = unsigned.trim_start();
    let (radix, digits) = match unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X")) {
        Some(hex) => (16, hex),
        None => (10, unsigned),
    };
    // from_str_radix would also take a sign here, which "0x-1" must not have.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(AsmErrorKind::NotANumber(text.to_string()));
    }
    // Digits are checked, so parsing fails only on overflow; callers check their own range.
    let magnitude = i128::from_str_radix(digits, radix).map_err(|_| AsmErrorKind::NumberTooLarge(text.to_string()))?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// `.insn opc=.. dst=.. src=.. off=.. imm=..`: one slot, fields given raw.
fn parse_raw(fields: &[&str]) -> Result<ParsedInsn<'static>, AsmErrorKind> {
    let mut insn = Insn::new(0, 0, 0, 0, 0);
    let mut seen: Vec<&str> = Vec::new();
    for field in fields {
        let (key, value) = field
            .trim_end_matches(',')
            .split_once('=')
            .ok_or_else(|| AsmErrorKind::RawNotKeyValue(field.to_string()))?;
        if seen.contains(&key) {
            return Err(AsmErrorKind::RawFieldTwice(key.to_string()));
        }
        seen.push(key);
        let number = parse_int(value)?;
        let out_of_range = || AsmErrorKind::RawFieldOutOfRange { field: key.to_string(), value: value.to_string() };
        match key {
            "opc" => insn.opc = u8::try_from(number).map_err(|_| out_of_range())?,
            "dst" | "src" => {
                let register = u8::try_from(number).ok().filter(|&r| r < 16).ok_or_else(out_of_range)?;
                if key == "dst" { insn.dst = register } else { insn.src = register }
            }
            "off" => insn.off = i16::try_from(number).map_err(|_| out_of_range())?,
            "imm" => insn.imm = imm32(value)?,
            _ => return Err(AsmErrorKind::RawNoSuchField(key.to_string())),
        }
    }
    Ok(ParsedInsn { insn, high: None, target: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(source: &str) -> Insn {
        let insns = assemble(source).unwrap_or_else(|error| panic!("{source}: {error}"));
        assert_eq!(insns.len(), 1, "{source}");
        insns[0]
    }

    fn error_of(source: &str) -> AsmErrorKind {
        assemble(source).expect_err(source).kind
    }

    fn text(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_int("0x10"), Ok(16));
        assert_eq!(parse_int("-0X1f"), Ok(-31));
        assert_eq!(parse_int("+7"), Ok(7));
        assert_eq!(parse_int("18446744073709551615"), Ok(u64::MAX.into()));
        assert!(parse_int("0x1000000000000000000000000000000000").is_err());
        assert!(parse_int("0x-1").is_err());
        assert!(parse_int("0x").is_err());
        assert!(parse_int("12a").is_err());
        assert_eq!(imm32("0xffffffff"), Ok(-1));
        assert_eq!(imm32("-2147483648"), Ok(i32::MIN));
        assert!(imm32("-2147483649").is_err());
        assert!(imm32("0x100000000").is_err());
    }

    #[test]
    fn registers_with_and_without_percent() {
        assert_eq!(one("mov r1, %r10"), Insn::new(isa::MOV64_REG, 1, 10, 0, 0));
        assert_eq!(error_of("mov %r11, 1"), AsmErrorKind::NoSuchRegister(text("11")));
        assert_eq!(error_of("mov %x1, 1"), AsmErrorKind::NotARegister(text("%x1")));
    }

    #[test]
    fn comments_labels_and_spacing() {
        let insns = assemble("  # only a comment\nstart: mov %r0, 0x1#note\n\nja start\nexit").unwrap();
        assert_eq!(insns[0], Insn::new(isa::MOV64_IMM, 0, 0, 0, 1));
        assert_eq!(insns[1].off, -2);
        assert_eq!(one("lock   fetch  add32 [%r1 + 4], %r2").imm, isa::ATOMIC_ADD | isa::ATOMIC_FETCH);
    }

    #[test]
    fn offsets_count_lddw_as_two_slots() {
        let insns = assemble("ja over\nlddw %r0, 1\nover:\nja32 over\ncall local over\nexit").unwrap();
        assert_eq!(insns[0].off, 2);
        assert_eq!(insns[3].imm, -1);
        assert_eq!(insns[4], Insn::new(isa::CALL, 0, isa::CALL_LOCAL, 0, -2));
    }

    #[test]
    fn implicit_exit_is_the_first_exit_unless_defined() {
        let insns = assemble("ja exit\nexit\nexit").unwrap();
        assert_eq!(insns[0].off, 0);
        let insns = assemble("ja exit\nexit\nexit:\nexit").unwrap();
        assert_eq!(insns[0].off, 1);
        assert_eq!(
            assemble("mov %r0, 0\nja exit"),
            Err(AsmError { line: 2, kind: AsmErrorKind::UndefinedLabel(text("exit")) })
        );
    }

    #[test]
    fn lddw_splits_its_value() {
        let insns = assemble("lddw %r3, -2").unwrap();
        assert_eq!(insns, [Insn::new(isa::LDDW, 3, 0, 0, -2), Insn::new(0, 0, 0, 0, -1)]);
        assert!(matches!(
            error_of("lddw %r3, 0x10000000000000000"),
            AsmErrorKind::ImmediateOutOfRange { bits: 64, .. }
        ));
    }

    #[test]
    fn lddw_pseudo_forms() {
        let insns = assemble("lddw %r1, map_value 3+8\nlddw %r2, map_fd 0x7\nlddw %r1, map_idx_value -1-8").unwrap();
        assert_eq!(insns[0], Insn::new(isa::LDDW, 1, isa::LDDW_MAP_VALUE, 0, 3));
        assert_eq!(insns[1].imm, 8);
        assert_eq!(insns[2], Insn::new(isa::LDDW, 2, isa::LDDW_MAP_FD, 0, 7));
        assert_eq!(insns[3].imm, 0);
        assert_eq!(insns[4], Insn::new(isa::LDDW, 1, isa::LDDW_MAP_IDX_VALUE, 0, -1));
        assert_eq!(insns[5].imm, -8);
    }

    #[test]
    fn calls() {
        assert_eq!(one("call 5"), Insn::new(isa::CALL, 0, 0, 0, 5));
        assert_eq!(one("call helper 5"), Insn::new(isa::CALL, 0, 0, 0, 5));
        assert_eq!(one("call %r2"), Insn::new(isa::CALLX, 2, 0, 0, 0));
        assert_eq!(one("callx r3"), Insn::new(isa::CALLX, 3, 0, 0, 0));
    }

    #[test]
    fn raw_slots() {
        assert_eq!(one(".insn opc=0xff dst=15 src=1 off=-2 imm=0xffffffff"), Insn::new(0xff, 15, 1, -2, -1));
        assert_eq!(one(".insn imm=3"), Insn::new(0, 0, 0, 0, 3));
        assert!(matches!(error_of(".insn dst=16"), AsmErrorKind::RawFieldOutOfRange { field, .. } if field == "dst"));
        assert_eq!(error_of(".insn opc=1 opc=2"), AsmErrorKind::RawFieldTwice(text("opc")));
        assert_eq!(error_of(".insn foo=1"), AsmErrorKind::RawNoSuchField(text("foo")));
    }

    #[test]
    fn errors_name_the_fault() {
        use AsmErrorKind::*;
        assert_eq!(error_of("lock fetch bogus [%r1], %r2"), UnknownMnemonic(text("lock fetch bogus")));
        assert_eq!(error_of("jx %r1"), UnknownMnemonic(text("jx")));
        assert_eq!(error_of("add %r1, 1, 2"), OperandCount { mnemonic: text("add"), takes: vec![2], given: 3 });
        assert_eq!(
            error_of("add %r1, [%r2]"),
            OperandShape { mnemonic: text("add"), shapes: vec!["%dst, imm", "%dst, %src"] }
        );
        assert_eq!(error_of("a:\na:"), DuplicateLabel { name: text("a"), first: 1 });
        assert_eq!(error_of("ldxw %r0, [%r1+0x8000]"), OffsetOutOfRange(text("+0x8000")));
        assert_eq!(error_of("ldxw %r0, [%r1+4"), NotAMemoryOperand(text("[%r1+4")));
        assert_eq!(error_of("1a: exit"), BadLabelName(text("1a")));
        assert_eq!(error_of("add %r1,"), MissingOperand);
        assert_eq!(error_of("ja +0x8000"), JumpOutOfRange(0x8000));
        assert_eq!(error_of("ja %%"), NotARegister(text("%%")));
    }

    #[test]
    fn messages_show_the_line_and_the_text_at_fault() {
        let message = |source: &str| assemble(source).expect_err(source).to_string();
        assert_eq!(message("exit\nadd %r1, 1, 2"), "line 2: `add` takes 2 operand(s), not 3");
        assert_eq!(message("add %r1, [%r2]"), "line 1: `add` takes `%dst, imm` or `%dst, %src`");
        assert_eq!(
            message("lddw %r3, 0x10000000000000000"),
            "line 1: `0x10000000000000000` is out of range for a 64-bit immediate"
        );
    }
}
