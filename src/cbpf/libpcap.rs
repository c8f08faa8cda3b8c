//! tcpdump expressions compiled into classic BPF by libpcap, the grammar's
//! reference: `pcap_compile` on a `pcap_open_dead` handle of the capture's
//! link type. Five calls of its C API, bound here directly rather than
//! through a crate that wraps all of libpcap.

use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::sync::Mutex;

use super::ClassicInsn;

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

#[link(name = "pcap")]
unsafe extern "C" {
    fn pcap_open_dead(link_type: c_int, snaplen: c_int) -> *mut PcapHandle;
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

/// The netmask for `pcap_compile` when none is known; expressions that
/// need one (`ip broadcast`) are then refused by libpcap.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// tcpdump's default snapshot length: what a matching packet's `ret`
/// returns. Any non-zero value means "matched".
pub const SNAPLEN: c_int = 262_144;

/// Older libpcap kept the compiler's state in globals; one compile at a
/// time is cheap insurance.
static COMPILER: Mutex<()> = Mutex::new(());

/// Compiles `expression` for captures of `link_type` (a `LINKTYPE_*`
/// number: 1 Ethernet, 101 raw IP, 113 Linux SLL, ...). An expression that
/// libpcap refuses gives its message.
pub fn compile(expression: &str, link_type: u32) -> Result<Vec<ClassicInsn>, String> {
    let expression = CString::new(expression).map_err(|_| "the expression contains a NUL byte".to_string())?;
    let link_type = c_int::try_from(link_type).map_err(|_| format!("link type {link_type} is out of range"))?;
    let _compiler = COMPILER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: pcap_open_dead takes plain integers and returns a new handle
    // or NULL.
    let handle = unsafe { pcap_open_dead(link_type, SNAPLEN) };
    if handle.is_null() {
        return Err(format!("libpcap could not open a handle for link type {link_type}"));
    }
    let mut program = BpfProgram { len: 0, insns: std::ptr::null() };
    // SAFETY: `handle` is live, `program` is writable, `expression` is a
    // NUL-terminated string that outlives the call.
    let status = unsafe { pcap_compile(handle, &mut program, expression.as_ptr(), 1, NETMASK_UNKNOWN) };
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
    // SAFETY: `handle` is live and not used after this.
    unsafe { pcap_close(handle) };
    result
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
        assert!(compile("ip broadcast", 1).unwrap_err().contains("netmask"));
    }
}
