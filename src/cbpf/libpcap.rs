//! tcpdump expressions compiled into classic BPF by libpcap, the grammar's
//! reference, as tcpdump compiles them when it reads a capture: on a
//! savefile handle of the capture's link type (an empty pcap file in
//! memory), with netmask 0. A dead handle (`pcap_open_dead`) would not do:
//! libpcap then compiles `inbound` and the like into loads of socket
//! metadata, where tcpdump refuses them for a file. Five calls of its C API
//! and libc's `fmemopen`, bound here directly rather than through a crate
//! that wraps all of libpcap.
//!
//! libpcap is loaded with `dlopen` on first use, not linked: the library
//! that QEMU and C programs link (`ubpf_load_filter_expr`) and the command
//! then work without it until an expression is compiled, and a system
//! without libpcap gets an error naming the package instead of a library
//! that does not start. Packagers need no libpcap to build.

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

/// libpcap's `PCAP_ERRBUF_SIZE`.
const ERRBUF_SIZE: usize = 256;

/// The names libpcap's shared library has, tried in turn: Debian's (and
/// most distributions') keeps the 0.8 ABI name; Fedora's is `.so.1`.
const SONAMES: [&CStr; 2] = [c"libpcap.so.0.8", c"libpcap.so.1"];

/// What to install when no libpcap loads.
const PACKAGE_HINT: &str = "on Debian: apt-get install libpcap0.8, or libpcap0.8t64 since Debian 13";

// The types of the libpcap functions used, as <pcap/pcap.h> declares them.
type FopenOffline = unsafe extern "C" fn(file: *mut libc::FILE, errbuf: *mut c_char) -> *mut PcapHandle;
type Compile = unsafe extern "C" fn(
    handle: *mut PcapHandle,
    program: *mut BpfProgram,
    expression: *const c_char,
    optimize: c_int,
    netmask: u32,
) -> c_int;
type Geterr = unsafe extern "C" fn(handle: *mut PcapHandle) -> *const c_char;
type Freecode = unsafe extern "C" fn(program: *mut BpfProgram);
type Close = unsafe extern "C" fn(handle: *mut PcapHandle);

/// The libpcap functions used, resolved in the loaded library.
struct Libpcap {
    fopen_offline: FopenOffline,
    compile: Compile,
    geterr: Geterr,
    freecode: Freecode,
    close: Close,
}

// SAFETY: plain function pointers into a library that stays loaded for the
// life of the process (never dlclose'd); they are called under `LIBPCAP`'s
// lock only.
unsafe impl Send for Libpcap {}

impl Libpcap {
    /// Loads libpcap and resolves its functions, or says why not.
    fn load() -> Result<Libpcap, String> {
        let mut reasons = Vec::new();
        for soname in SONAMES {
            // SAFETY: `soname` is a NUL-terminated name; RTLD_LOCAL keeps
            // libpcap's symbols out of the process's global namespace.
            let library = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if library.is_null() {
                reasons.push(dl_error());
                continue;
            }
            // SAFETY: each name is resolved in the library just loaded and
            // cast to the type of libpcap's declaration in <pcap/pcap.h>.
            return unsafe {
                Ok(Libpcap {
                    fopen_offline: std::mem::transmute::<*mut c_void, FopenOffline>(symbol(
                        library,
                        c"pcap_fopen_offline",
                    )?),
                    compile: std::mem::transmute::<*mut c_void, Compile>(symbol(library, c"pcap_compile")?),
                    geterr: std::mem::transmute::<*mut c_void, Geterr>(symbol(library, c"pcap_geterr")?),
                    freecode: std::mem::transmute::<*mut c_void, Freecode>(symbol(library, c"pcap_freecode")?),
                    close: std::mem::transmute::<*mut c_void, Close>(symbol(library, c"pcap_close")?),
                })
            };
        }
        Err(format!(
            "libpcap, which compiles tcpdump expressions, is not installed ({PACKAGE_HINT}): {}",
            reasons.join("; ")
        ))
    }
}

/// The address of `name` in `library`, never NULL.
///
/// # Safety
/// `library` is a handle that `dlopen` returned.
unsafe fn symbol(library: *mut c_void, name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: the caller's contract; `name` is NUL-terminated.
    let address = unsafe { libc::dlsym(library, name.as_ptr()) };
    if address.is_null() {
        return Err(format!("the libpcap found lacks {}: {}", name.to_string_lossy(), dl_error()));
    }
    Ok(address)
}

/// The dynamic linker's last message.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message, valid until
    // the next dl* call of this thread; it is copied at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        "unknown dynamic linker error".to_string()
    } else {
        // SAFETY: non-NULL, so a NUL-terminated string (above).
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
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

/// libpcap once loaded, and the lock every compile holds: older libpcap
/// kept the compiler's state in globals, so one compile at a time is cheap
/// insurance. A failed load is tried again on the next compile, so
/// installing libpcap helps a running process.
static LIBPCAP: Mutex<Option<Libpcap>> = Mutex::new(None);

/// Compiles `expression` for captures of `link_type` (a `LINKTYPE_*`
/// number, as capture files hold it: 1 Ethernet, 101 raw IP, 113 Linux
/// SLL, ...). An expression that libpcap refuses gives its message.
pub fn compile(expression: &str, link_type: u32) -> Result<Vec<ClassicInsn>, FilterError> {
    let expression = CString::new(expression)
        .map_err(|_| FilterError::Expression("the expression contains a NUL byte".to_string()))?;
    // An empty pcap file (microseconds, version 2.4) of this link type;
    // libpcap maps LINKTYPE_* numbers to its DLT_* ones as it reads it.
    let mut header = [0u8; 24];
    header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header[4..6].copy_from_slice(&2u16.to_le_bytes());
    header[6..8].copy_from_slice(&4u16.to_le_bytes());
    header[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
    header[20..24].copy_from_slice(&link_type.to_le_bytes());
    let mut loaded = LIBPCAP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if loaded.is_none() {
        *loaded = Some(Libpcap::load().map_err(FilterError::Libpcap)?);
    }
    let pcap = loaded.as_ref().expect("loaded just above");
    // SAFETY: `header` outlives the stream, which is closed (by pcap_close
    // or fclose) before this function returns; "r" never writes to it.
    let file = unsafe { libc::fmemopen(header.as_mut_ptr().cast(), header.len(), c"r".as_ptr()) };
    if file.is_null() {
        let reason = std::io::Error::last_os_error();
        return Err(FilterError::Expression(format!("cannot open a stream in memory: {reason}")));
    }
    let mut errbuf = [0 as c_char; ERRBUF_SIZE];
    // SAFETY: `file` is an open stream, `errbuf` as large as libpcap writes.
    let handle = unsafe { (pcap.fopen_offline)(file, errbuf.as_mut_ptr()) };
    if handle.is_null() {
        // SAFETY: on failure libpcap leaves the stream open, for us to close.
        unsafe { libc::fclose(file) };
        // SAFETY: and it leaves a NUL-terminated message in `errbuf`.
        let message = unsafe { CStr::from_ptr(errbuf.as_ptr()) }.to_string_lossy().into_owned();
        return Err(FilterError::Expression(message));
    }
    let mut program = BpfProgram { len: 0, insns: std::ptr::null() };
    // SAFETY: `handle` is live, `program` is writable, `expression` is a
    // NUL-terminated string that outlives the call.
    let status = unsafe { (pcap.compile)(handle, &mut program, expression.as_ptr(), 1, NETMASK) };
    let result = if status == 0 {
        let insns = if program.insns.is_null() {
            Vec::new()
        } else {
            // SAFETY: on success libpcap filled `program` with `len`
            // instructions laid out as `ClassicInsn`s (asserted above).
            unsafe { std::slice::from_raw_parts(program.insns, program.len as usize) }.to_vec()
        };
        // SAFETY: `program` came from a successful pcap_compile.
        unsafe { (pcap.freecode)(&mut program) };
        Ok(insns)
    } else {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated message,
        // valid until the handle is closed; it is copied first.
        let message = unsafe { CStr::from_ptr((pcap.geterr)(handle)) }.to_string_lossy().into_owned();
        Err(FilterError::Expression(message))
    };
    // SAFETY: `handle` is live and not used after this; closing it closes
    // the stream.
    unsafe { (pcap.close)(handle) };
    result
}

/// Compiles `expression` for captures of `link_type` and loads it as a
/// filter program, which returns non-zero for the packets it matches.
pub fn load_expression(expression: &str, link_type: u32, config: &Config) -> Result<Program, FilterError> {
    let classic = compile(expression, link_type)?;
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
        let refused = |expression, link_type| match compile(expression, link_type) {
            Err(FilterError::Expression(message)) => message,
            other => panic!("{expression}: {other:?}"),
        };
        assert!(refused("tcp port", 1).contains("syntax error"));
        assert!(compile("ip broadcast", 1).is_ok(), "as tcpdump reading a file compiles it");
        assert!(refused("vlan", 113).contains("no VLAN support"));
    }
}
