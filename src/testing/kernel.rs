//! The Linux kernel as an engine: an XDP program loaded with `bpf(2)`
//! (`BPF_PROG_LOAD`) and run once over a packet with `BPF_PROG_TEST_RUN`,
//! as `bpftool prog run` does. Needs root (or CAP_BPF and CAP_NET_ADMIN);
//! [`Kernel::open`] says when the kernel refuses, so that a test can fall
//! back to results recorded earlier.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::isa::{EXIT, Insn, MOV64_IMM};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// The verifier's log: enough for the programs tests generate.
const LOG_SIZE: usize = 1 << 20;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to the fields used, padded to
/// the size of the kernel's union so that later fields read as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    padding: [u8; 96],
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    padding: [u8; 96],
}

/// Why the kernel did not run a program.
#[derive(Debug)]
pub enum KernelError {
    /// `bpf(2)` itself is refused here (no permission, or no BPF).
    Unavailable(io::Error),
    /// The verifier refused the program; its log.
    Refused(String),
    /// The test run failed.
    Run(io::Error),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            KernelError::Unavailable(error) => write!(f, "bpf(2) is not available: {error}"),
            KernelError::Refused(log) => write!(f, "the kernel's verifier refused the program:\n{log}"),
            KernelError::Run(error) => write!(f, "BPF_PROG_TEST_RUN failed: {error}"),
        }
    }
}

/// Runs programs in the kernel.
pub struct Kernel {
    log: Vec<u8>,
}

/// A program loaded into the kernel.
pub struct KernelProgram {
    fd: OwnedFd,
}

fn bpf<T>(command: libc::c_int, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, initialised bpf_attr of the layout that
    // `command` reads, and its size is passed with it; the kernel reads and
    // writes only within that size, and any pointers in it are valid for
    // the lengths given beside them.
    let result = unsafe {
        libc::syscall(libc::SYS_bpf, command, attr as *mut T as *mut c_void, std::mem::size_of::<T>() as libc::c_uint)
    };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result as RawFd) }
}

impl Kernel {
    /// A kernel that runs programs, or why `bpf(2)` cannot: an XDP program
    /// that returns 2 is loaded and run once.
    pub fn open() -> Result<Kernel, KernelError> {
        let mut kernel = Kernel { log: vec![0; LOG_SIZE] };
        let probe = [Insn::new(MOV64_IMM, 0, 0, 0, 2), Insn::new(EXIT, 0, 0, 0, 0)];
        match kernel.load_xdp(&probe)?.test_run(&[0; 64]) {
            Ok(TestRun { retval: 2, .. }) => Ok(kernel),
            Ok(TestRun { retval: other, .. }) => {
                Err(KernelError::Unavailable(io::Error::other(format!("the probe returned {other}, not 2"))))
            }
            Err(KernelError::Run(error)) => Err(KernelError::Unavailable(error)),
            Err(error) => Err(error),
        }
    }

    /// Loads `insns` as an XDP program under the GPL. The verifier's log,
    /// costly to write, is asked for only when a first load fails.
    pub fn load_xdp(&mut self, insns: &[Insn]) -> Result<KernelProgram, KernelError> {
        match self.prog_load(insns, false) {
            Err(KernelError::Refused(_)) => self.prog_load(insns, true),
            result => result,
        }
    }

    fn prog_load(&mut self, insns: &[Insn], with_log: bool) -> Result<KernelProgram, KernelError> {
        let code: Vec<u8> = insns.iter().flat_map(Insn::encode).collect();
        let license = c"GPL";
        self.log.fill(0);
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: code.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(with_log),
            log_size: if with_log { self.log.len() as u32 } else { 0 },
            log_buf: if with_log { self.log.as_mut_ptr() as u64 } else { 0 },
            kern_version: 0,
            prog_flags: 0,
            padding: [0; 96],
        };
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor
            // that nothing else owns.
            Ok(fd) => Ok(KernelProgram { fd: unsafe { OwnedFd::from_raw_fd(fd) } }),
            Err(error) if matches!(error.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                Err(KernelError::Unavailable(error))
            }
            Err(error) => {
                let end = self.log.iter().position(|&byte| byte == 0).unwrap_or(self.log.len());
                let log = String::from_utf8_lossy(&self.log[..end]);
                // The log's last lines say why; the rest walks the program.
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(8)..].join("\n");
                Err(KernelError::Refused(format!("{error}\n{tail}")))
            }
        }
    }
}

/// What one test run gave back.
pub struct TestRun {
    /// The low 32 bits of r0.
    pub retval: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

impl KernelProgram {
    /// Runs the program once over `packet`.
    pub fn test_run(&self, packet: &[u8]) -> Result<TestRun, KernelError> {
        // Room for a packet the program grew (by its tailroom at most).
        let mut out = vec![0u8; packet.len() + 4096];
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            retval: 0,
            data_size_in: packet.len() as u32,
            data_size_out: out.len() as u32,
            data_in: packet.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            duration: 0,
            padding: [0; 96],
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(KernelError::Run)?;
        out.truncate(attr.data_size_out as usize);
        Ok(TestRun { retval: attr.retval, packet: out })
    }
}
