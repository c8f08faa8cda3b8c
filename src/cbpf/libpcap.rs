//! tcpdump expressions compiled into classic BPF by libpcap, the grammar's
//! reference, as tcpdump compiles them when it reads a capture: on a
//! savefile handle of the capture's link type (an empty pcap file in
//! memory), with netmask 0. A dead handle (`pcap_open_dead`) would not do:
//! libpcap then compiles `inbound` and the like into loads of socket
//! metadata, where tcpdump refuses them for a file. Six calls of its C API
//! and libc's `fmemopen`, bound here directly rather than through a crate
//! that wraps all of libpcap.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::Mutex;

use super::{ClassicInsn, FilterError};
use crate::program::{Config, Program};

#[repr(C)]
struct BpfProgram {
    len: c_uint,
    insns: *const ClassicInsn,
}

/// libpcap's `pcap_t`, only ever behind a pointer.
#[repr(C)]
struct PcapHandle {
    _private: [u8; 0],
}

/// C's `FILE`, only ever behind a pointer.
#[repr(C)]
struct CFile {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn fmemopen(buffer: *mut c_void, size: usize, mode: *const c_char) -> *mut CFile;
    fn fclose(file: *mut CFile) -> c_int;
}

/// libpcap's `PCAP_ERRBUF_SIZE`.
const ERRBUF_SIZE: usize = 256;

#[link(name = "pcap")]
unsafe extern "C" {
    fn pcap_fopen_offline(file: *mut CFile, errbuf: *mut c_char) -> *mut PcapHandle;
    fn pcap_compile(
        handle: *mut PcapHandle,
        program: *mut BpfProgram,
        expression: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    fn pcap_geterr(handle: *mut PcapHandle) -> *const c_char;
    fn pcap_freecode(program: *mut BpfProgram);
    fn pcap_close(handle: *mut PcapHandle);
}

// `struct bpf_insn` is `struct sock_filter`: u16, u8, u8, u32.
const _: () = assert!(size_of::<ClassicInsn>() == 8 && align_of::<ClassicInsn>() == 4);

/// The netmask for `pcap_compile`: 0, as tcpdump passes when it reads a
/// file, so that `ip broadcast` selects what tcpdump selects (the all-ones
/// and all-zeros addresses).
const NETMASK: u32 = 0;

/// tcpdump's default snapshot length: what a matching packet's `ret`
/// returns. Any non-zero value means "matched".
pub const SNAPLEN: c_int = 262_144;

/// Older libpcap kept the compiler's state in globals; one compile at a
/// time is cheap insurance.
static COMPILER: Mutex<()> = Mutex::new(());

/// Compiles `expression` for captures of `link_type` (a `LINKTYPE_*`
/// number, as capture files hold it: 1 Ethernet, 101 raw IP, 113 Linux
/// SLL, ...). An expression that libpcap refuses gives its message.
pub fn compile(expression: &str, link_type: u32) -> Result<Vec<ClassicInsn>, String> {
    let expression = CString::new(expression).map_err(|_| "the expression contains a NUL byte".to_string())?;
    // An empty pcap file (microseconds, version 2.4) of this link type;
    // libpcap maps LINKTYPE_* numbers to its DLT_* ones as it reads it.
    let mut header = [0u8; 24];
    header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header[4..6].copy_from_slice(&2u16.to_le_bytes());
    header[6..8].copy_from_slice(&4u16.to_le_bytes());
    header[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
    header[20..24].copy_from_slice(&link_type.to_le_bytes());
    let _compiler = COMPILER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: `header` outlives the stream, which is closed (by pcap_close
    // or fclose) before this function returns; "r" never writes to it.
    let file = unsafe { fmemopen(header.as_mut_ptr().cast(), header.len(), c"r".as_ptr()) };
    if file.is_null() {
        return Err(format!("cannot open a stream in memory: {}", std::io::Error::last_os_error()));
    }
    let mut errbuf = [0 as c_char; ERRBUF_SIZE];
    // SAFETY: `file` is an open stream, `errbuf` as large as libpcap writes.
    let handle = unsafe { pcap_fopen_offline(file, errbuf.as_mut_ptr()) };
    if handle.is_null() {
        // SAFETY: on failure libpcap leaves the stream open, for us to close.
        unsafe { fclose(file) };
        // SAFETY: and it leaves a NUL-terminated message in `errbuf`.
        return Err(unsafe { CStr::from_ptr(errbuf.as_ptr()) }.to_string_lossy().into_owned());
    }
    let mut program = BpfProgram { len: 0, insns: std::ptr::null() };
    // SAFETY: `handle` is live, `program` is writable, `expression` is a
    // NUL-terminated string that outlives the call.
    let status = unsafe { pcap_compile(handle, &mut program, expression.as_ptr(), 1, NETMASK) };
    let result = if status == 0 {
        let insns = if program.insns.is_null() {
            Vec::new()
        } else {
            // SAFETY: on success libpcap filled `program` with `len`
            // instructions laid out as `ClassicInsn`s (asserted above).
            unsafe { std::slice::from_raw_parts(program.insns, program.len as usize) }.to_vec()
        };
        // SAFETY: `program` came from a successful pcap_compile.
        unsafe { pcap_freecode(&mut program) };
        Ok(insns)
    } else {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated message,
        // valid until the handle is closed; it is copied first.
        Err(unsafe { CStr::from_ptr(pcap_geterr(handle)) }.to_string_lossy().into_owned())
    };
    // SAFETY: `handle` is live and not used after this; closing it closes
    // the stream.
    unsafe { pcap_close(handle) };
    result
}

/// Compiles `expression` for captures of `link_type` and loads it as a
/// filter program, which returns non-zero for the packets it matches.
pub fn load_expression(expression: &str, link_type: u32, config: &Config) -> Result<Program, FilterError> {
    let classic = compile(expression, link_type).map_err(FilterError::Expression)?;
    super::load(&classic, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpcap_compiles_what_tcpdump_prints() {
        // `tcpdump -ddd -y EN10MB 'ip'` with the default snaplen.
        let program = compile("ip", 1).unwrap();
        assert_eq!(
            program,
            [
                ClassicInsn { code: 0x28, jt: 0, jf: 0, k: 12 },
                ClassicInsn { code: 0x15, jt: 0, jf: 1, k: 0x800 },
                ClassicInsn { code: 0x06, jt: 0, jf: 0, k: SNAPLEN as u32 },
                ClassicInsn { code: 0x06, jt: 0, jf: 0, k: 0 },
            ]
        );
    }

    #[test]
    fn libpcaps_message_explains_a_refusal() {
        let message = compile("tcp port", 1).unwrap_err();
        assert!(message.contains("syntax error"), "{message}");
        assert!(compile("ip broadcast", 1).is_ok(), "as tcpdump reading a file compiles it");
        assert!(compile("vlan", 113).unwrap_err().contains("no VLAN support"));
    }
}
