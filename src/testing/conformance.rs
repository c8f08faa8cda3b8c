//! Support for the bpf_conformance suite: its `.data` vector format and the
//! helpers its vectors call. The library never registers these helpers by
//! default; the conformance test and the `qemu-ubpf-conformance` plugin do.

use crate::helpers::Helpers;

/// One test vector: a program in assembly, its input memory and expectation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vector {
    pub asm: String,
    pub mem: Vec<u8>,
    /// Expected r0.
    pub result: Option<u64>,
    /// Expected error text, for vectors that must fail.
    pub error: Option<String>,
    /// The program's slots as 64-bit little-endian words, where given.
    pub raw: Option<Vec<u64>>,
}

/// Parses a `.data` file: `-- asm`, `-- mem`, `-- result`, `-- error`,
/// `-- raw` sections; `#` starts a comment; other sections are ignored.
pub fn parse_vector(text: &str) -> Result<Vector, String> {
    let mut vector = Vector::default();
    let mut section = "";
    let mut raw = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix("-- ") {
            section = name.trim();
            continue;
        }
        let content = line.split('#').next().unwrap_or("").trim();
        let bad = |what: &str| format!("line {}: {what}: {content:?}", index + 1);
        match section {
            "asm" => {
                vector.asm.push_str(line);
                vector.asm.push('\n');
            }
            "mem" => {
                for byte in content.split_whitespace() {
                    vector.mem.push(u8::from_str_radix(byte, 16).map_err(|_| bad("bad memory byte"))?);
                }
            }
            "result" if !content.is_empty() => {
                vector.result = Some(parse_u64(content).ok_or_else(|| bad("bad result"))?)
            }
            "error" if !content.is_empty() => vector.error = Some(content.to_owned()),
            "raw" if !content.is_empty() => raw.push(parse_u64(content).ok_or_else(|| bad("bad raw word"))?),
            _ => {}
        }
    }
    if !raw.is_empty() {
        vector.raw = Some(raw);
    }
    Ok(vector)
}

/// Every `*.data` vector in `dir`, with its file name, sorted by name.
pub fn read_vectors(dir: &std::path::Path) -> Result<Vec<(String, Vector)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|ext| ext == "data") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
            let vector = parse_vector(&text).map_err(|e| format!("{name}: {e}"))?;
            Ok((name, vector))
        })
        .collect()
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse::<u64>().ok().or_else(|| text.parse::<i64>().ok().map(|v| v as u64)),
    }
}

/// Helper 0: packs the low bytes of its arguments, a first.
extern "C" fn gather_bytes(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    [a, b, c, d, e].iter().fold(0, |acc, &byte| acc << 8 | (byte & 0xff))
}

/// Helper 1: XORs `len` bytes at `ptr` with 42.
extern "C" fn memfrob(ptr: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    for i in 0..len {
        // SAFETY: harness only: the conformance vectors pass a pointer into
        // their own stack or input with its true length.
        unsafe { *((ptr + i) as *mut u8) ^= 42 };
    }
    0
}

/// Helper 2: does nothing.
extern "C" fn no_op(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

/// Helper 3: integer square root.
extern "C" fn sqrti(value: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    value.isqrt()
}

/// Helper 4: strcmp of two NUL-terminated strings.
extern "C" fn strcmp_ext(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    let mut i = 0;
    loop {
        // SAFETY: harness only: the vectors pass NUL-terminated strings in
        // their own memory.
        let (x, y) = unsafe { (*((a + i) as *const u8), *((b + i) as *const u8)) };
        if x != y || x == 0 {
            return (x as i64 - y as i64) as u64;
        }
        i += 1;
    }
}

/// Helper 5: returns its argument; registered as the unwind helper, so a
/// program that calls it with 0 ends at once.
extern "C" fn unwind(value: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    value
}

/// The helpers bpf_conformance expects, at its indices.
pub fn helpers() -> Helpers {
    let mut helpers = Helpers::new();
    helpers.register(0, "gather_bytes", gather_bytes);
    helpers.register(1, "memfrob", memfrob);
    helpers.register(2, "no_op", no_op);
    helpers.register(3, "sqrti", sqrti);
    helpers.register(4, "strcmp_ext", strcmp_ext);
    helpers.register(5, "unwind", unwind);
    helpers.set_unwind(5);
    helpers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_comments() {
        let v =
            parse_vector("# c\n-- asm\nmov %r0, 1 # one\nexit\n-- mem\n00 ff\n-- result\n0x1\n-- raw\n0x95\n").unwrap();
        assert_eq!(v.asm, "mov %r0, 1 # one\nexit\n");
        assert_eq!(v.mem, vec![0, 0xff]);
        assert_eq!(v.result, Some(1));
        assert_eq!(v.raw, Some(vec![0x95]));
        assert!(parse_vector("-- mem\nzz\n").is_err());
    }

    #[test]
    fn helpers_compute() {
        assert_eq!(gather_bytes(1, 2, 3, 4, 5), 0x0102030405);
        assert_eq!(sqrti(1 << 20, 0, 0, 0, 0), 1 << 10);
        let mut bytes = *b"ab\0";
        memfrob(bytes.as_mut_ptr() as u64, 2, 0, 0, 0);
        assert_eq!(bytes, [b'a' ^ 42, b'b' ^ 42, 0]);
        assert_eq!(strcmp_ext(c"abc".as_ptr() as u64, c"abd".as_ptr() as u64, 0, 0, 0) as i64, -1);
    }
}
