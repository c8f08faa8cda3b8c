//! Bytes written as hex text, as the commands read them: the conformance
//! plugin's protocol and `qemu-ubpf run --hex`. A module of the commands
//! (included by each with `#[path]`), not of the library, which reads no hex.

/// Parses bytes written as hex digit pairs, white space anywhere (the
/// plugin protocol's form, and `qemu-ubpf run --hex`).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let pair: String = pair.iter().collect();
            u8::from_str_radix(&pair, 16).map_err(|_| format!("byte {i} ({pair:?}) is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_bytes_and_refuses_the_rest_without_panicking() {
        assert_eq!(parse_hex("0a ff\n10").unwrap(), vec![0x0a, 0xff, 0x10]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("a\u{e9}1").is_err());
    }
}
