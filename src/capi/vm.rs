//! `struct ubpf_vm` and the calls on it: helpers, loading, runs in the
//! interpreter, compiling to native code, settings.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::boundary::{ErrorPrint, boundary, bytes, bytes_mut, c_str};
use super::native::{Mode, Native};
use crate::cbpf::{self, ClassicInsn};
use crate::helpers::Helpers;
use crate::image::{DEFAULT_INSTRUCTION_LIMIT, MAX_HELPER_INDEX, ProgramType};
use crate::maps::Map;
use crate::program::{Config, Program};

/// @brief A virtual machine: its helpers, its settings and at most one loaded
/// program. Opaque: create it with ubpf_create() and free it with
/// ubpf_destroy().
pub struct ubpf_vm {
    helpers: Helpers,
    /// The limit as the C caller set it (0 for none), applied at load.
    instruction_limit: u32,
    bounds_check: bool,
    undefined_behavior_check: bool,
    /// Where failed runs are reported (see ubpf_set_error_print()). Shared
    /// with the native code, which reports the faults of native runs.
    error_printf: Arc<ErrorPrint>,
    registers: *mut u64,
    /// Recorded, never called (see ubpf_register_data_relocation).
    data_relocation: ubpf_data_relocation,
    /// Recorded, never called (see ubpf_register_data_bounds_check).
    data_bounds_check: ubpf_bounds_check,
    /// Maps the next program loaded takes over (see ubpf_reuse_maps).
    reuse_maps: Vec<Arc<Map>>,
    /// What the next program loaded is (see ubpf_set_program_type); `None`
    /// as its ELF section says.
    program_type: Option<ProgramType>,
    loaded: Option<Loaded>,
}

/// A program in a VM and the native code built for it on demand.
pub(super) struct Loaded {
    pub(super) program: Arc<Program>,
    native: Mutex<Native>,
}

/// @brief The mode of the native code that ubpf_compile_ex() returns.
#[repr(C)]
pub enum JitMode {
    /// The function is a ::ubpf_jit_ex_fn: `(mem, mem_len, stack, stack_len)`.
    ExtendedJitMode = 0,
    /// The function is a ::ubpf_jit_fn: `(mem, mem_len)`.
    BasicJitMode = 1,
}

/// @brief What a program is written for: what its input holds and what its
/// return value means (see ubpf_set_program_type()).
#[repr(C)]
pub enum ubpf_program_type {
    /// A filter, ubpf's convention: r1 = the input's address, r2 = its
    /// length; QEMU's filter-ubpf drops the packet when r0 is not 0.
    UBPF_PROGRAM_TYPE_FILTER = 0,
    /// Linux's XDP: the input starts with a ::ubpf_xdp_context, which r1
    /// points to as to a `struct xdp_md`; r0 is an XDP action (see
    /// ubpf_exec_xdp()).
    UBPF_PROGRAM_TYPE_XDP = 1,
    /// As the ELF section says, as libbpf reads it: `xdp` and `xdp/...` are
    /// XDP programs, other sections filters (`xdp.frags...`, multi-buffer,
    /// and `xdp/devmap...`, `xdp/cpumap...` are refused); raw bytecode is a
    /// filter.
    UBPF_PROGRAM_TYPE_BY_SECTION = 2,
}

/// A `ubpf_program_type` as C passes it: any value can arrive, so it is
/// read as an integer (`enum ubpf_program_type` in the header; see
/// `cbindgen.toml`).
#[repr(transparent)]
pub struct ProgramTypeValue(c_uint);

impl ProgramTypeValue {
    /// The setting it names: a type, or `None` for the ELF section's.
    fn setting(&self) -> Result<Option<ProgramType>, String> {
        match self.0 {
            0 => Ok(Some(ProgramType::Filter)),
            1 => Ok(Some(ProgramType::Xdp)),
            2 => Ok(None),
            other => Err(format!(
                "unknown program type {other}: use UBPF_PROGRAM_TYPE_FILTER, UBPF_PROGRAM_TYPE_XDP or \
                 UBPF_PROGRAM_TYPE_BY_SECTION"
            )),
        }
    }
}

/// A `JitMode` as C passes it: any value can arrive, so it is read as an
/// integer (`enum JitMode` in the header; see `cbindgen.toml`).
#[repr(transparent)]
pub struct JitModeValue(c_uint);

impl JitModeValue {
    pub(super) fn mode(&self) -> Result<Mode, String> {
        match self.0 {
            0 => Ok(Mode::Extended),
            1 => Ok(Mode::Basic),
            other => Err(format!("unknown JIT mode {other}: use BasicJitMode or ExtendedJitMode")),
        }
    }
}

/// @brief A helper: receives r1 to r5, returns r0.
pub type external_function_t = Option<extern "C" fn(u64, u64, u64, u64, u64) -> u64>;

/// @brief A compiled program: runs over `mem_len` bytes at `mem` and returns
/// r0, or `UINT64_MAX` when the run fails (see ubpf_compile()).
pub type ubpf_jit_fn = Option<unsafe extern "C" fn(mem: *mut c_void, mem_len: usize) -> u64>;

/// @brief A compiled program that also receives a stack (which qemu-ubpf
/// does not use: see ubpf_exec_ex()).
pub type ubpf_jit_ex_fn =
    Option<unsafe extern "C" fn(mem: *mut c_void, mem_len: usize, stack: *mut u8, stack_len: usize) -> u64>;

/// @brief Resolves a data relocation of an ELF object (never called by
/// qemu-ubpf: see ubpf_register_data_relocation()).
pub type ubpf_data_relocation = Option<
    unsafe extern "C" fn(
        user_context: *mut c_void,
        data: *const u8,
        data_size: u64,
        symbol_name: *const c_char,
        symbol_offset: u64,
        symbol_size: u64,
    ) -> u64,
>;

/// @brief Decides whether a program may access memory outside its input and
/// stack (never called by qemu-ubpf: see ubpf_register_data_bounds_check()).
pub type ubpf_bounds_check = Option<unsafe extern "C" fn(context: *mut c_void, addr: u64, size: u64) -> bool>;

/// The VM behind a pointer from C, for reading.
///
/// # Safety
/// `vm` is NULL or a VM from ubpf_create() not yet destroyed, which no other
/// thread changes meanwhile.
pub(super) unsafe fn vm_ref<'a>(vm: *const ubpf_vm) -> Result<&'a ubpf_vm, String> {
    // SAFETY: the caller's contract.
    unsafe { vm.as_ref() }.ok_or_else(|| "the vm is NULL".to_owned())
}

/// The VM behind a pointer from C, for changing.
///
/// # Safety
/// `vm` is NULL or a VM from ubpf_create() not yet destroyed, which no other
/// thread uses meanwhile.
unsafe fn vm_mut<'a>(vm: *mut ubpf_vm) -> Result<&'a mut ubpf_vm, String> {
    // SAFETY: the caller's contract.
    unsafe { vm.as_mut() }.ok_or_else(|| "the vm is NULL".to_owned())
}

/// The limit a program gets: ubpf's 0 means none.
fn instruction_limit(limit: u32) -> u64 {
    match limit {
        0 => u64::MAX,
        limit => limit as u64,
    }
}

impl ubpf_vm {
    pub(super) fn loaded(&self) -> Result<&Loaded, String> {
        self.loaded
            .as_ref()
            .ok_or_else(|| "no program is loaded in this vm: call ubpf_load() or ubpf_load_elf() first".to_owned())
    }

    fn check_unloaded(&self, what: &str) -> Result<(), String> {
        match self.loaded {
            Some(_) => Err(format!("{what} must come before the program is loaded (call ubpf_unload_code() first)")),
            None => Ok(()),
        }
    }

    /// For the loaders: no program may be loaded yet.
    fn check_nothing_loaded(&self) -> Result<(), String> {
        match self.loaded {
            Some(_) => Err("a program is already loaded in this vm: call ubpf_unload_code() first".to_owned()),
            None => Ok(()),
        }
    }

    fn config(&self) -> Config {
        Config {
            instruction_limit: instruction_limit(self.instruction_limit),
            reuse_maps: self.reuse_maps.clone(),
            program_type: self.program_type,
            ..Config::default()
        }
    }

    /// The configuration of a program that can only be a filter (classic
    /// BPF, tcpdump expressions): refused when XDP was asked for.
    fn filter_config(&self, what: &str) -> Result<Config, String> {
        if self.program_type == Some(ProgramType::Xdp) {
            return Err(format!(
                "{what} is a filter, but the vm is set to load XDP programs (ubpf_set_program_type())"
            ));
        }
        Ok(Config { program_type: Some(ProgramType::Filter), ..self.config() })
    }

    fn install(&mut self, program: Program) {
        self.reuse_maps.clear();
        self.loaded = Some(Loaded { program: Arc::new(program), native: Mutex::new(Native::default()) });
    }
}

impl Loaded {
    fn native(&self) -> MutexGuard<'_, Native> {
        // A panic while compiling is caught and reported; what it left
        // behind is still consistent (each field is set in one step).
        self.native.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The entry point of `mode` for the program in `vm`, as a function pointer.
fn entry_point(vm: &ubpf_vm, mode: Mode) -> Result<*const u8, String> {
    let loaded = vm.loaded()?;
    loaded.native().entry(&loaded.program, &vm.error_printf, mode)
}

/// Where `vm` reports failed runs; for a NULL vm, a printer of its own.
///
/// # Safety
/// `vm` is NULL or a live VM.
pub(super) unsafe fn error_printer<'a>(vm: *const ubpf_vm) -> &'a ErrorPrint {
    static NO_VM: ErrorPrint = ErrorPrint::new();
    // SAFETY: the caller's contract.
    unsafe { vm.as_ref() }.map_or(&NO_VM, |vm| &vm.error_printf)
}

/// @brief Creates a VM with no helpers and no program.
///
/// Thread safety: may run at any time, from any thread.
///
/// @return The new VM, to free with ubpf_destroy(); NULL when memory is short.
#[unsafe(no_mangle)]
pub extern "C" fn ubpf_create() -> *mut ubpf_vm {
    boundary!(failure: ptr::null_mut(), {
        Ok(Box::into_raw(Box::new(ubpf_vm {
            helpers: Helpers::new(),
            instruction_limit: DEFAULT_INSTRUCTION_LIMIT as u32,
            bounds_check: true,
            undefined_behavior_check: false,
            error_printf: Arc::new(ErrorPrint::new()),
            registers: ptr::null_mut(),
            data_relocation: None,
            data_bounds_check: None,
            reuse_maps: Vec::new(),
            // ubpf's convention, whatever the section: r1 = the packet.
            program_type: Some(ProgramType::Filter),
            loaded: None,
        })))
    })
}

/// @brief Frees a VM, its program and its native code.
///
/// The functions that ubpf_compile(), ubpf_compile_ex(), ubpf_jit() and
/// ubpf_copy_jit() returned for it must not be called afterwards.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM to free; NULL does nothing.
///
/// # Safety
/// `vm` is NULL or a VM from ubpf_create() not yet destroyed, which no other
/// thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_destroy(vm: *mut ubpf_vm) {
    boundary!(failure: (), {
        if !vm.is_null() {
            // SAFETY: `vm` came from `Box::into_raw` in ubpf_create and is
            // destroyed once, by the caller's contract.
            drop(unsafe { Box::from_raw(vm) });
        }
        Ok(())
    })
}

/// @brief Registers helper `index`, which programs call with `call index`
/// or, in ELF objects, by `name`.
///
/// Helpers receive r1 to r5 and return r0. Registering an index again
/// replaces its helper.
/// Difference from ubpf: helpers must be registered before the program is
/// loaded (the checks at load time need them); indices up to 65535 are
/// accepted (ubpf: 63).
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] index The helper's index, below 65536.
/// @param[in] name Its name, for ELF objects that call it by name; may be NULL.
/// @param[in] helper The helper; not NULL.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm or helper, index too large, or a program is
///         loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `name` is NULL or a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_register(
    vm: *mut ubpf_vm,
    index: c_uint,
    name: *const c_char,
    helper: external_function_t,
) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(name, "the helper's name") }?.unwrap_or("");
        let helper = helper.ok_or("the helper function is NULL")?;
        if index >= MAX_HELPER_INDEX {
            return Err(format!("helper index {index} is too large (the largest is {})", MAX_HELPER_INDEX - 1));
        }
        vm.check_unloaded("ubpf_register()")?;
        vm.helpers.register(index, name, helper);
        Ok(0)
    })
}

/// @brief Makes helper `idx` an unwind point: when it returns 0, the
/// program ends at once with r0 = 0 (for helpers like `bpf_tail_call`).
///
/// Difference from ubpf: must come before the program is loaded.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] idx The helper's index.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, an unwind index already set, or a program
///         is loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_unwind_function_index(vm: *mut ubpf_vm, idx: c_uint) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        if let Some(index) = vm.helpers.unwind() {
            return Err(format!("the unwind function index is already set (to {index})"));
        }
        vm.check_unloaded("ubpf_set_unwind_function_index()")?;
        vm.helpers.set_unwind(idx);
        Ok(0)
    })
}

/// @brief Loads and verifies a program of raw bytecode: `code_len` bytes,
/// 8 per instruction slot, little-endian.
///
/// Register the helpers first. The program runs with r1 = the input's
/// address and r2 = its length.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM, with no program loaded.
/// @param[in] code The bytecode.
/// @param[in] code_len Its length in bytes, a multiple of 8.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @retval 0 Success.
/// @retval -1 Failure; the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `code` is NULL or
/// points at `code_len` bytes; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_load(
    vm: *mut ubpf_vm,
    code: *const c_void,
    code_len: u32,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        // SAFETY: the caller's contract.
        let code = unsafe { bytes(code, code_len as usize, "code") }?;
        vm.check_nothing_loaded()?;
        if code.is_empty() {
            return Err("code_len is 0: there is no program".to_owned());
        }
        let program = Program::load(code, &vm.helpers, &vm.config()).map_err(|error| error.to_string())?;
        vm.install(program);
        Ok(0)
    })
}

/// @brief Loads a classic BPF program (what `tcpdump -dd` prints, what
/// `SO_ATTACH_FILTER` takes): checked as Linux checks it, translated into
/// eBPF as Linux translates it, then verified.
///
/// The program runs with r1 = the packet's address and r2 = its length, as
/// any other; it returns what the classic program returns (0: no match).
/// Loads past the packet's end and division by zero return 0; of Linux's
/// ancillary loads only the VLAN tag ones (which read 0: frames carry their
/// tags in their bytes) and `alu_xor_x` are accepted.
/// `ld len` (`len`, `greater` and `less` in tcpdump's expressions) is
/// r2, the length given: frames from C are whole, as they were on the wire
/// (`qemu-ubpf replay`, which knows a record's original length, gives that).
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM, with no program loaded.
/// @param[in] insns `count` instructions, each a `struct sock_filter`
///            (libpcap's `struct bpf_insn`): u16 code, u8 jt, u8 jf, u32 k,
///            in host byte order.
/// @param[in] count How many, 1 to 4096.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @retval 0 Success.
/// @retval -1 Failure; the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `insns` is NULL or
/// points at `count` instructions; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_load_cbpf(
    vm: *mut ubpf_vm,
    insns: *const c_void,
    count: u32,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        // SAFETY: the caller's contract: 8 bytes per instruction.
        let code = unsafe { bytes(insns, count as usize * 8, "insns") }?;
        vm.check_nothing_loaded()?;
        let classic: Vec<ClassicInsn> = code
            .chunks_exact(8)
            .map(|slot| ClassicInsn {
                code: u16::from_ne_bytes([slot[0], slot[1]]),
                jt: slot[2],
                jf: slot[3],
                k: u32::from_ne_bytes([slot[4], slot[5], slot[6], slot[7]]),
            })
            .collect();
        let config = vm.filter_config("a classic BPF program")?;
        let program = cbpf::load(&classic, &config).map_err(|error| error.to_string())?;
        vm.install(program);
        Ok(0)
    })
}

/// @brief Compiles a tcpdump expression with libpcap and loads it as a
/// filter: the program returns non-zero (drop) for the frames the
/// expression matches, exactly those `tcpdump -r` prints for a capture of
/// that link type.
///
/// libpcap compiles the expression as tcpdump does for a capture file
/// (netmask 0), and its classic BPF is loaded as ubpf_load_cbpf() loads
/// it. The program reads each frame whole, from its link-layer header: in
/// QEMU's filter-ubpf, Ethernet with `ip-mode=off`.
///
/// libpcap is not linked: it is loaded with dlopen() (`libpcap.so.0.8`,
/// else `libpcap.so.1`) on the first call, and stays loaded. Without it
/// this call fails with a message naming the package to install (Debian's
/// `libpcap0.8`); everything else works without it.
///
/// Thread safety: nothing else may use the VM meanwhile. Calls on
/// different VMs may run at the same time: libpcap compiles one expression
/// at a time under a lock of the library's. A program of the same process
/// that calls libpcap's pcap_compile() itself, unaware of that lock, needs
/// libpcap 1.8 or later, where pcap_compile() may run in several threads.
///
/// @param[in] vm The VM, with no program loaded.
/// @param[in] expr The expression, e.g. `"tcp port 443 and not src net
///            10.0.0.0/8"`, NUL-terminated UTF-8.
/// @param[in] link_type The frames' link type as capture files number it
///            (`LINKTYPE_*`): 1 Ethernet (QEMU's), 101 raw IP, 113 Linux
///            SLL, 276 Linux SLL2.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free(): libpcap's own
///             when it refuses the expression.
/// @retval 0 Success.
/// @retval -1 Failure; the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `expr` is NULL or a
/// NUL-terminated string; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_load_filter_expr(
    vm: *mut ubpf_vm,
    expr: *const c_char,
    link_type: u32,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        // SAFETY: the caller's contract.
        let expression = unsafe { c_str(expr, "expr") }?.ok_or("expr is NULL")?;
        vm.check_nothing_loaded()?;
        let config = vm.filter_config("a tcpdump expression")?;
        let program = cbpf::libpcap::load_expression(expression, link_type, &config)
            .map_err(|error| format!("expression '{expression}': {error}"))?;
        vm.install(program);
        Ok(0)
    })
}

/// @brief Loads a program from an ELF object built with
/// `clang -target bpf -c`; the entry is the first global function.
///
/// Same as ubpf_load_elf_ex() with a NULL name.
///
/// # Safety
/// As ubpf_load_elf_ex().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_load_elf(
    vm: *mut ubpf_vm,
    elf: *const c_void,
    elf_len: usize,
    errmsg: *mut *mut c_char,
) -> c_int {
    // SAFETY: the same contract.
    unsafe { ubpf_load_elf_ex(vm, elf, elf_len, ptr::null(), errmsg) }
}

/// @brief Loads a program from an ELF object built with
/// `clang -target bpf -c`, starting at a chosen function.
///
/// The loader links the entry function with every function it calls,
/// resolves helpers called by name against the registered ones, and places
/// `.rodata`, `.data` and `.bss` in memory owned by the VM (shared by every
/// run, from every thread).
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM, with no program loaded.
/// @param[in] elf The object file's bytes.
/// @param[in] elf_len Their length.
/// @param[in] main_section_name The entry: a function or a section name;
///            NULL for the first global function.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @retval 0 Success.
/// @retval -1 Failure; the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `elf` is NULL or
/// points at `elf_len` bytes; `main_section_name` is NULL or a
/// NUL-terminated string; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_load_elf_ex(
    vm: *mut ubpf_vm,
    elf: *const c_void,
    elf_len: usize,
    main_section_name: *const c_char,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        // SAFETY: the caller's contract.
        let object = unsafe { bytes(elf, elf_len, "elf") }?;
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(main_section_name, "main_section_name") }?;
        vm.check_nothing_loaded()?;
        let program = Program::from_elf(object, name, &vm.helpers, &vm.config()).map_err(|error| error.to_string())?;
        vm.install(program);
        Ok(0)
    })
}

/// @brief Unloads the program and frees its native code; the helpers and
/// settings stay.
///
/// The functions returned for the program must not be called afterwards.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM; NULL does nothing.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_unload_code(vm: *mut ubpf_vm) {
    boundary!(failure: (), {
        // SAFETY: the caller's contract.
        if let Ok(vm) = unsafe { vm_mut(vm) } {
            vm.loaded = None;
        }
        Ok(())
    })
}

/// @brief Runs the loaded program in the interpreter over `mem_len` bytes at
/// `mem`.
///
/// Every load and store is checked against the input, the stack and the
/// program's global data; the instruction limit ends endless loops. A failed
/// run returns -1, leaves *bpf_return_value unchanged and reports its reason
/// through the function set by ubpf_set_error_print() (by default, a line on
/// stderr) and ubpf_last_error().
/// Thread safety: may run at the same time as any other run, compile or copy
/// call on the same VM, from any threads.
///
/// @param[in] vm The VM.
/// @param[in,out] mem The input (r1 = mem, r2 = mem_len); NULL with length 0
///                for none. Nothing else may access it during the run. For
///                an XDP program, it starts with a ::ubpf_xdp_context (see
///                there, and ubpf_exec_xdp()).
/// @param[in] mem_len Its length.
/// @param[out] bpf_return_value Where to store r0.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm or bpf_return_value, no program loaded, or the
///         run stopped (out-of-bounds access, unknown helper, limit reached).
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile; `mem` is NULL
/// or points at `mem_len` bytes; `bpf_return_value` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_exec(
    vm: *const ubpf_vm,
    mem: *mut c_void,
    mem_len: usize,
    bpf_return_value: *mut u64,
) -> c_int {
    // SAFETY: the header requires `vm` to be NULL or a live VM.
    boundary!(report: unsafe { error_printer(vm) }, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        if bpf_return_value.is_null() {
            return Err("bpf_return_value is NULL".to_owned());
        }
        let loaded = vm.loaded()?;
        // SAFETY: the caller's contract.
        let mem = unsafe { bytes_mut(mem, mem_len, "mem") }?;
        let value = loaded.program.execute(mem).map_err(|error| error.to_string())?;
        // SAFETY: not NULL, and writable by the caller's contract.
        unsafe { bpf_return_value.write(value) };
        Ok(0)
    })
}

/// @brief Runs the loaded program in the interpreter, as ubpf_exec().
///
/// Difference from ubpf: the stack is not used: each thread has its own
/// 16 frames of 512 bytes, so `stack` may be NULL and is never touched.
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @param[in,out] mem The input; NULL with length 0 for none.
/// @param[in] mem_len Its length.
/// @param[out] bpf_return_value Where to store r0.
/// @param[in] stack Unused.
/// @param[in] stack_len Unused.
/// @retval 0 Success.
/// @retval -1 Failure, as ubpf_exec().
///
/// # Safety
/// As ubpf_exec().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_exec_ex(
    vm: *const ubpf_vm,
    mem: *mut c_void,
    mem_len: usize,
    bpf_return_value: *mut u64,
    stack: *mut u8,
    stack_len: usize,
) -> c_int {
    let _ = (stack, stack_len);
    // SAFETY: the same contract.
    unsafe { ubpf_exec(vm, mem, mem_len, bpf_return_value) }
}

/// @brief Compiles the loaded program to native code and returns its entry
/// point, a ::ubpf_jit_fn.
///
/// The native code keeps every check of the interpreter: memory accesses,
/// the instruction limit (unlike ubpf's JIT, which has none) and call depth.
/// A run that fails returns `UINT64_MAX` and reports its reason through the
/// function set by ubpf_set_error_print() and ubpf_last_error(); a run that
/// succeeds clears ubpf_last_error(), so a legitimate r0 of `UINT64_MAX` can
/// be told apart. An XDP program's function takes a buffer that starts with
/// a ::ubpf_xdp_context, as described there. Calling again returns the same
/// function. It stays valid
/// until ubpf_unload_code() or ubpf_destroy().
/// Thread safety: may run at the same time as runs, compiles and copies on
/// the same VM, from any threads; so may the returned function.
///
/// @param[in] vm The VM, with a program loaded.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @return The entry point, or NULL on failure (no program, or no JIT for
///         this architecture); the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile; `errmsg` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_compile(vm: *mut ubpf_vm, errmsg: *mut *mut c_char) -> ubpf_jit_fn {
    boundary!(errmsg: errmsg, failure: None, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let entry = entry_point(vm, Mode::Basic)?;
        // SAFETY: `entry` is the start of a stub that follows the C calling
        // convention of a `ubpf_jit_fn`.
        Ok(Some(unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*mut c_void, usize) -> u64>(entry) }))
    })
}

/// @brief Compiles the loaded program to native code, as ubpf_compile().
///
/// qemu-ubpf extension: the same as ubpf_compile(), under the name of the
/// operation it performs.
///
/// # Safety
/// As ubpf_compile().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_jit(vm: *mut ubpf_vm, errmsg: *mut *mut c_char) -> ubpf_jit_fn {
    // SAFETY: the same contract.
    unsafe { ubpf_compile(vm, errmsg) }
}

/// @brief Compiles the loaded program to native code with an entry point of
/// the given mode.
///
/// With BasicJitMode the result is a ::ubpf_jit_fn, to cast back; with
/// ExtendedJitMode a ::ubpf_jit_ex_fn, whose stack is not used (see
/// ubpf_exec_ex()). Both entry points stay valid together. Otherwise as
/// ubpf_compile().
///
/// @param[in] vm The VM, with a program loaded.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @param[in] jit_mode BasicJitMode or ExtendedJitMode.
/// @return The entry point, or NULL on failure; the reason is in *errmsg.
///
/// # Safety
/// As ubpf_compile().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_compile_ex(
    vm: *mut ubpf_vm,
    errmsg: *mut *mut c_char,
    jit_mode: JitModeValue,
) -> ubpf_jit_ex_fn {
    boundary!(errmsg: errmsg, failure: None, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let entry = entry_point(vm, jit_mode.mode()?)?;
        type Ex = unsafe extern "C" fn(*mut c_void, usize, *mut u8, usize) -> u64;
        // SAFETY: `entry` is the start of a stub that follows the C calling
        // convention of its mode; C casts a basic one back to `ubpf_jit_fn`.
        Ok(Some(unsafe { std::mem::transmute::<*const u8, Ex>(entry) }))
    })
}

/// @brief Copies the entry point of the last compile into `buffer` and
/// returns it as a ::ubpf_jit_fn.
///
/// Difference from ubpf: what is copied is the entry point, which refers to
/// the VM's program, its helpers and data by address (on x86-64 it holds
/// the compiled program itself, elsewhere a small stub that calls it), so
/// the copy (once the caller has made its memory executable) works only
/// while the VM keeps the program loaded.
/// Thread safety: as ubpf_compile().
///
/// @param[in] vm The VM, after ubpf_compile() or ubpf_compile_ex().
/// @param[out] buffer Where to copy the code.
/// @param[in] size The buffer's size.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @return `buffer`, or NULL on failure (not compiled yet, buffer NULL or too
///         small); the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile; `buffer` is
/// NULL or writable for `size` bytes; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_copy_jit(
    vm: *mut ubpf_vm,
    buffer: *mut c_void,
    size: usize,
    errmsg: *mut *mut c_char,
) -> ubpf_jit_fn {
    boundary!(errmsg: errmsg, failure: None, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let native = vm.loaded()?.native();
        let code =
            native.last_entry().ok_or("the program has not been compiled: call ubpf_compile() first")?;
        if buffer.is_null() {
            return Err("buffer is NULL".to_owned());
        }
        if code.len() > size {
            return Err(format!("the buffer of {size} bytes is too small for {} bytes of code", code.len()));
        }
        // SAFETY: `buffer` holds `size` writable bytes, at least as many as
        // copied, and cannot overlap the entry's own pages.
        unsafe { ptr::copy_nonoverlapping(code.as_ptr(), buffer.cast::<u8>(), code.len()) };
        // SAFETY: the buffer now holds the entry, a `ubpf_jit_fn` once the
        // caller makes it executable, as ubpf's contract says.
        Ok(Some(unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, usize) -> u64>(buffer) }))
    })
}

/// @brief Translates the loaded program to machine code into `buffer`.
///
/// Difference from ubpf: the code's entry takes qemu-ubpf's private run
/// context, not (mem, mem_len), and refers to the VM's helper table and data
/// by address: it is for inspection (disassembly), not for calling; use
/// ubpf_compile() to run natively.
/// Thread safety: as ubpf_compile().
///
/// @param[in] vm The VM, with a program loaded.
/// @param[out] buffer Where to store the code.
/// @param[in,out] size The buffer's size on entry; the code's size on exit,
///                also when the buffer was too small (an extension).
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @retval 0 Success.
/// @retval -1 Failure; the reason is in *errmsg.
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile; `size` is
/// NULL or readable and writable; `buffer` is NULL or writable for `*size`
/// bytes; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_translate(
    vm: *mut ubpf_vm,
    buffer: *mut u8,
    size: *mut usize,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the same contract.
        unsafe { translate(vm, buffer, size) }
    })
}

/// The work of ubpf_translate().
///
/// # Safety
/// As ubpf_translate().
unsafe fn translate(vm: *mut ubpf_vm, buffer: *mut u8, size: *mut usize) -> Result<c_int, String> {
    // SAFETY: the caller's contract.
    let vm = unsafe { vm_ref(vm) }?;
    if size.is_null() {
        return Err("size is NULL".to_owned());
    }
    let loaded = vm.loaded()?;
    let mut native = loaded.native();
    let code = native.jit(&loaded.program, &vm.error_printf)?.code();
    // SAFETY: not NULL, readable and writable by the caller's contract.
    let capacity = unsafe { size.replace(code.len()) };
    if buffer.is_null() {
        return Err("buffer is NULL".to_owned());
    }
    if code.len() > capacity {
        return Err(format!("the buffer of {capacity} bytes is too small for {} bytes of code", code.len()));
    }
    // SAFETY: `buffer` holds `capacity` writable bytes, at least as many as
    // copied, and cannot overlap the code's mapping.
    unsafe { ptr::copy_nonoverlapping(code.as_ptr(), buffer, code.len()) };
    Ok(0)
}

/// @brief Translates the loaded program to machine code, as
/// ubpf_translate(); the mode makes no difference to the code.
///
/// # Safety
/// As ubpf_translate().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_translate_ex(
    vm: *mut ubpf_vm,
    buffer: *mut u8,
    size: *mut usize,
    errmsg: *mut *mut c_char,
    jit_mode: JitModeValue,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        jit_mode.mode()?;
        // SAFETY: the same contract.
        unsafe { translate(vm, buffer, size) }
    })
}

/// @brief Sets the function that reports failed runs.
///
/// ubpf_exec(), ubpf_exec_ex() and the compiled functions call it as
/// `error_printf(stderr, "%s\n", message)` when a run fails.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] error_printf A printf-like function, which gets every message;
///            NULL restores the default, which writes the messages on stderr
///            rate-limited per VM, since a guest can make every packet fault:
///            the first 5, then at most one line a second that counts the
///            faults not printed and gives the latest.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `error_printf`
/// behaves like `fprintf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_error_print(
    vm: *mut ubpf_vm,
    error_printf: Option<unsafe extern "C" fn(stream: *mut libc::FILE, format: *const c_char, ...) -> c_int>,
) {
    boundary!(failure: (), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        vm.error_printf.set(error_printf);
        Ok(())
    })
}

/// @brief Asks to turn the memory checks on or off, and returns the
/// previous request.
///
/// Difference from ubpf: the checks always stay on, for memory safety; only
/// the value returned changes.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] enable The setting to record.
/// @return The previous setting (true at first); false for a NULL vm.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_toggle_bounds_check(vm: *mut ubpf_vm, enable: bool) -> bool {
    boundary!(failure: false, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        Ok(std::mem::replace(&mut vm.bounds_check, enable))
    })
}

/// @brief Asks to turn the checks for uninitialised registers and stack on
/// or off, and returns the previous request.
///
/// Difference from ubpf: no such checks exist here; the setting is only
/// recorded. Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] enable The setting to record.
/// @return The previous setting (false at first); false for a NULL vm.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_toggle_undefined_behavior_check(vm: *mut ubpf_vm, enable: bool) -> bool {
    boundary!(failure: false, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        Ok(std::mem::replace(&mut vm.undefined_behavior_check, enable))
    })
}

/// @brief Sets how many instructions one run may execute.
///
/// The count covers every instruction executed and is checked at backward
/// jumps and calls, so a run may exceed the limit by at most 65536
/// instructions before it fails. It applies to the interpreter and, unlike
/// ubpf, to the compiled code too.
/// Differences from ubpf: the default is 10000000, not unlimited; the limit
/// is fixed when a program is loaded, so it must be set before.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] limit The limit; 0 for none.
/// @param[out] previous_limit NULL, or where to store the previous limit.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, or a program is loaded (*previous_limit is
///         still set).
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `previous_limit` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_instruction_limit(vm: *mut ubpf_vm, limit: u32, previous_limit: *mut u32) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        if !previous_limit.is_null() {
            // SAFETY: not NULL, and writable by the caller's contract.
            unsafe { previous_limit.write(vm.instruction_limit) };
        }
        vm.check_unloaded("ubpf_set_instruction_limit()")?;
        vm.instruction_limit = limit;
        Ok(0)
    })
}

/// @brief Records where the caller keeps a copy of the registers.
///
/// Difference from ubpf: the registers of each run live in that run's own
/// frame (runs may be concurrent), so the array is never read nor written;
/// ubpf_get_registers() returns it.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] regs The array, or NULL.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_registers(vm: *mut ubpf_vm, regs: *mut u64) {
    boundary!(failure: (), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        vm.registers = regs;
        Ok(())
    })
}

/// @brief Returns the array recorded by ubpf_set_registers(), or NULL.
///
/// Thread safety: may run at the same time as runs on the same VM.
///
/// @param[in] vm The VM.
/// @return The array, or NULL (also for a NULL vm).
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_get_registers(vm: *const ubpf_vm) -> *mut u64 {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        Ok(unsafe { vm_ref(vm) }?.registers)
    })
}

/// @brief Records a function for data relocations of ELF objects.
///
/// Difference from ubpf: it is never called. qemu-ubpf places `.rodata`,
/// `.data` and `.bss` itself, and refuses objects that use maps, with a
/// message at load time.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] user_context Passed to the function.
/// @param[in] relocation The function.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, or one is already registered.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_register_data_relocation(
    vm: *mut ubpf_vm,
    user_context: *mut c_void,
    relocation: ubpf_data_relocation,
) -> c_int {
    let _ = user_context;
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        if vm.data_relocation.is_some() {
            return Err("a data relocation function is already registered".to_owned());
        }
        vm.data_relocation = relocation;
        Ok(0)
    })
}

/// @brief Records a function that would allow accesses outside the input
/// and stack.
///
/// Difference from ubpf: it is never called. A program may access its input,
/// its stack and its global data, and nothing else, so that no callback can
/// open memory to it by mistake.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM.
/// @param[in] user_context Passed to the function.
/// @param[in] bounds_check The function.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, or one is already registered.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_register_data_bounds_check(
    vm: *mut ubpf_vm,
    user_context: *mut c_void,
    bounds_check: ubpf_bounds_check,
) -> c_int {
    let _ = user_context;
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        if vm.data_bounds_check.is_some() {
            return Err("a bounds check function is already registered".to_owned());
        }
        vm.data_bounds_check = bounds_check;
        Ok(0)
    })
}

/// @brief Sets the size of ubpf's JIT work buffer: accepted and ignored, as
/// qemu-ubpf sizes its code itself.
///
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_jit_code_size(vm: *mut ubpf_vm, code_size: usize) -> c_int {
    let _ = code_size;
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        unsafe { vm_mut(vm) }?;
        Ok(0)
    })
}

/// @brief Sets ubpf's secret for encoding stored instructions: accepted
/// before loading and ignored, as qemu-ubpf keeps its instructions in memory
/// the program cannot reach.
///
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, or a program is loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_pointer_secret(vm: *mut ubpf_vm, secret: u64) -> c_int {
    let _ = secret;
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        unsafe { vm_mut(vm) }?.check_unloaded("ubpf_set_pointer_secret()")?;
        Ok(0)
    })
}

/// @brief Adds the built-in helpers, with Linux's numbers and names
/// (bpf_map_lookup_elem = 1, ..., bpf_ringbuf_query = 134), at every index
/// no helper is registered at, so that programs built with libbpf's
/// `bpf_helpers.h` load and run as they are; and qemu_ubpf_wire_len = 256,
/// which objects from `qemu-ubpf compile --expr` call for `len` (it returns
/// its argument, the input length, from C).
///
/// The built-ins check their arguments: a map argument that is not one of
/// the program's maps, or a pointer to memory the program may not access
/// itself, fails the run (the message names the instruction). Helpers
/// registered with ubpf_register() take precedence, before or after this.
/// Not in ubpf.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM, with no program loaded.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, or a program is loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_register_linux_helpers(vm: *mut ubpf_vm) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        vm.check_unloaded("ubpf_register_linux_helpers()")?;
        vm.helpers.add_linux();
        Ok(0)
    })
}

/// @brief Makes the next program loaded in `vm` take over the maps of the
/// program loaded in `previous`, for swapping in a new version of a filter
/// without losing its state.
///
/// The rule: a map the new program declares (in `.maps` or `maps`) is the
/// previous program's map of the same name when both have the same type,
/// key size, value size, max_entries and flags; the map is then shared, so
/// updates the previous program makes until it is unloaded stay visible.
/// Any other map starts empty, and so do prog arrays (their programs belong
/// to the previous object) and global data (`.data`, `.bss`, `.rodata`,
/// whose layout is the previous program's). Not in ubpf.
/// Thread safety: nothing else may use `vm` meanwhile; `previous` as for
/// ubpf_exec().
///
/// @param[in] vm The VM, with no program loaded.
/// @param[in] previous Another VM, with a program loaded; NULL forgets the
///            maps a previous call took. The maps are taken by the next
///            successful load only.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, a program is loaded in `vm`, or none in
///         `previous`.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses; `previous` is NULL
/// or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_reuse_maps(vm: *mut ubpf_vm, previous: *const ubpf_vm) -> c_int {
    boundary!(failure: -1, {
        let maps = match previous.is_null() {
            true => Vec::new(),
            // SAFETY: the caller's contract.
            false => unsafe { vm_ref(previous) }?.loaded()?.program.maps().to_vec(),
        };
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        vm.check_unloaded("ubpf_reuse_maps()")?;
        vm.reuse_maps = maps;
        Ok(0)
    })
}

/// @brief Sets what the programs loaded next in `vm` are written for.
///
/// The default is UBPF_PROGRAM_TYPE_FILTER, ubpf's convention, whatever an
/// ELF object's section says. With UBPF_PROGRAM_TYPE_XDP (or
/// UBPF_PROGRAM_TYPE_BY_SECTION and a section `xdp` or `xdp/...`), a
/// program is loaded as the Linux kernel loads an XDP program: its loads of
/// `struct xdp_md` fields are rewritten (any other access of the context
/// is refused, naming the instruction), and helpers that do not apply to
/// XDP are refused; run it with ubpf_exec_xdp(), or with ubpf_exec() or a
/// compiled function over an input that starts with a ::ubpf_xdp_context.
/// ubpf_load_cbpf() and ubpf_load_filter_expr() load filters only, and
/// fail when the type is UBPF_PROGRAM_TYPE_XDP. Not in ubpf.
/// Thread safety: nothing else may use the VM meanwhile.
///
/// @param[in] vm The VM, with no program loaded.
/// @param[in] program_type UBPF_PROGRAM_TYPE_FILTER, UBPF_PROGRAM_TYPE_XDP
///            or UBPF_PROGRAM_TYPE_BY_SECTION.
/// @retval 0 Success.
/// @retval -1 Failure: NULL vm, an unknown type, or a program is loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_set_program_type(vm: *mut ubpf_vm, program_type: ProgramTypeValue) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_mut(vm) }?;
        let setting = program_type.setting()?;
        vm.check_unloaded("ubpf_set_program_type()")?;
        vm.program_type = setting;
        Ok(0)
    })
}

/// @brief Says what the loaded program is: UBPF_PROGRAM_TYPE_FILTER or
/// UBPF_PROGRAM_TYPE_XDP (with UBPF_PROGRAM_TYPE_BY_SECTION, what its
/// section made it). Not in ubpf.
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM, with a program loaded.
/// @return The type, or -1: NULL vm, or no program loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no thread changes meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_get_program_type(vm: *const ubpf_vm) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let program = &unsafe { vm_ref(vm) }?.loaded()?.program;
        Ok(match program.program_type() {
            ProgramType::Filter => ubpf_program_type::UBPF_PROGRAM_TYPE_FILTER,
            ProgramType::Xdp => ubpf_program_type::UBPF_PROGRAM_TYPE_XDP,
        } as c_int)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capi::boundary::tests::take;

    #[test]
    fn vm_pointers_and_values_from_c_are_checked() {
        // SAFETY: NULL pointers only.
        unsafe {
            assert!(vm_ref(ptr::null()).is_err());
            assert!(vm_mut(ptr::null_mut()).is_err());
        }
        assert!(JitModeValue(2).mode().is_err());
        assert_eq!(JitModeValue(1).mode(), Ok(Mode::Basic));
        assert_eq!(instruction_limit(0), u64::MAX);
    }

    #[test]
    fn a_vm_through_the_c_functions() {
        let program: [u64; 2] = [0x0000_002a_0000_00b7, 0x0000_0000_0000_0095]; // mov r0, 42; exit
        let vm = ubpf_create();
        let mut errmsg: *mut c_char = ptr::null_mut();
        let mut value = 0u64;
        // SAFETY: a live VM, a program of 16 bytes, writable out-parameters.
        unsafe {
            assert_eq!(ubpf_load(vm, program.as_ptr().cast(), 16, &mut errmsg), 0);
            assert_eq!(ubpf_exec(vm, ptr::null_mut(), 0, &mut value), 0);
            assert_eq!(value, 42);
            assert_eq!(ubpf_load(vm, program.as_ptr().cast(), 16, &mut errmsg), -1);
            assert!(take(errmsg).unwrap().contains("ubpf_unload_code"));
            let fn_ = ubpf_compile_ex(vm, &mut errmsg, JitModeValue(9));
            assert!(fn_.is_none());
            assert!(take(errmsg).unwrap().contains("unknown JIT mode 9"));
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            {
                let compiled = ubpf_compile(vm, &mut errmsg).expect("compiles");
                assert_eq!(compiled(ptr::null_mut(), 0), 42);
                let extended = ubpf_compile_ex(vm, &mut errmsg, JitModeValue(0)).expect("compiles");
                assert_eq!(extended(ptr::null_mut(), 0, ptr::null_mut(), 0), 42);
            }
            ubpf_destroy(vm);
        }
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn a_direct_entry_runs_faults_and_refuses_like_the_interpreter() {
        // Reads byte 3, keeps it in its frame across two nested local
        // calls that write the bottoms of their own frames (so the entry
        // reserves, and probes, the whole stack), returns it plus 100; an
        // empty input returns 7 at once.
        use crate::isa::*;
        let insns = [
            Insn::new(MOV64_IMM, 0, 0, 0, 7),
            Insn::new(JEQ_IMM, 2, 0, 5, 0),
            Insn::new(LDXB, 0, 1, 3, 0),
            Insn::new(STXDW, 10, 0, -8, 0),
            Insn::new(CALL, 0, CALL_LOCAL, 0, 3),
            Insn::new(LDXDW, 0, 10, -8, 0),
            Insn::new(ADD64_IMM, 0, 0, 0, 100),
            Insn::new(EXIT, 0, 0, 0, 0),
            Insn::new(STDW, 10, 0, -512, 1),
            Insn::new(CALL, 0, CALL_LOCAL, 0, 1),
            Insn::new(EXIT, 0, 0, 0, 0),
            Insn::new(STDW, 10, 0, -512, 2),
            Insn::new(MOV64_IMM, 0, 0, 0, 0),
            Insn::new(EXIT, 0, 0, 0, 0),
        ];
        let code = crate::isa::encode_program(&insns);
        let vm = ubpf_create();
        let mut errmsg: *mut c_char = ptr::null_mut();
        // SAFETY: a live VM, the program's bytes, writable out-parameters;
        // the entry points are called with NULL and 0 or with buffers of
        // the lengths given (but for the one NULL with a length, which the
        // entry must refuse without reading).
        unsafe {
            assert_eq!(ubpf_load(vm, code.as_ptr().cast(), code.len() as u32, &mut errmsg), 0);
            let basic = ubpf_compile(vm, &mut errmsg).expect("compiles");
            let extended = ubpf_compile_ex(vm, &mut errmsg, JitModeValue(0)).expect("compiles");
            let mut four = [1u8, 2, 3, 4];
            let mut two = [1u8, 2];
            let runs: [&dyn Fn(*mut u8, usize) -> u64; 2] =
                [&|mem, len| basic(mem.cast(), len), &|mem, len| extended(mem.cast(), len, ptr::null_mut(), 0)];
            for run in runs {
                assert_eq!(run(four.as_mut_ptr(), 4), 104);
                assert_eq!(take(crate::capi::boundary::ubpf_last_error()), None);
                assert_eq!(run(ptr::null_mut(), 0), 7, "empty");
                assert_eq!(run(four.as_mut_ptr(), 0), 7, "empty, not NULL");
                // A read past the input stops the run at instruction 2.
                assert_eq!(run(two.as_mut_ptr(), 2), u64::MAX);
                let message = take(crate::capi::boundary::ubpf_last_error()).expect("a fault sets the last error");
                assert!(message.contains("instruction 2") && message.contains("outside"), "{message}");
                // A run that succeeds clears it.
                assert_eq!(run(four.as_mut_ptr(), 4), 104);
                assert_eq!(take(crate::capi::boundary::ubpf_last_error()), None);
                assert_eq!(run(ptr::null_mut(), 5), u64::MAX, "NULL with a length");
                assert!(take(crate::capi::boundary::ubpf_last_error()).expect("refused").contains("NULL"));
                assert_eq!(run(four.as_mut_ptr(), usize::MAX), u64::MAX, "longer than memory");
                assert!(take(crate::capi::boundary::ubpf_last_error()).expect("refused").contains("more than memory"));
                assert_eq!(run(four.as_mut_ptr(), 4), 104);
            }
            ubpf_destroy(vm);
        }
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn xdp_helpers_run_and_fault_through_the_direct_entry() {
        // Moves the head by 4 when the frame's first byte is 0, by 300
        // (past the frame's end: -EINVAL) when it is 1; otherwise moves r1
        // off the context, which stops the run at the call, instruction 7.
        use crate::isa::*;
        use crate::xdp::{Buffer, RxInfo};
        let insns = [
            Insn::new(LDXW, 3, 1, 0, 0),
            Insn::new(LDXB, 4, 3, 0, 0),
            Insn::new(MOV64_IMM, 2, 0, 0, 4),
            Insn::new(JEQ_IMM, 4, 0, 3, 0),
            Insn::new(MOV64_IMM, 2, 0, 0, 300),
            Insn::new(JEQ_IMM, 4, 0, 1, 1),
            Insn::new(ADD64_IMM, 1, 0, 0, 8),
            Insn::new(CALL, 0, CALL_HELPER, 0, crate::helpers::linux::XDP_ADJUST_HEAD as i32),
            Insn::new(EXIT, 0, 0, 0, 0),
        ];
        let code = crate::isa::encode_program(&insns);
        let vm = ubpf_create();
        let mut errmsg: *mut c_char = ptr::null_mut();
        // SAFETY: a live VM, the program's bytes, writable out-parameters;
        // the entry is called with whole XDP buffers.
        unsafe {
            assert_eq!(ubpf_register_linux_helpers(vm), 0);
            assert_eq!(ubpf_set_program_type(vm, ProgramTypeValue(1)), 0);
            assert_eq!(ubpf_load(vm, code.as_ptr().cast(), code.len() as u32, &mut errmsg), 0);
            let program = vm_ref(vm).unwrap().loaded().unwrap().program.clone();
            let jit = crate::jit::JitProgram::compile(program).unwrap();
            assert!(jit.runs_without_rust(), "no Rust around its runs");
            let compiled = ubpf_compile(vm, &mut errmsg).expect("compiles");
            let run = |first: u8| {
                let frame = [&[first][..], &[9; 59][..]].concat();
                let mut buffer = Buffer::new(&frame, &[], RxInfo::default()).unwrap();
                let retval = buffer.run(|input| Ok::<u64, ()>(compiled(input.as_mut_ptr().cast(), input.len())));
                (retval.unwrap(), buffer.packet().len())
            };
            assert_eq!(run(0), (0, 56));
            assert_eq!(take(crate::capi::boundary::ubpf_last_error()), None);
            assert_eq!(run(1), (-22i64 as u64, 60));
            // A stopped run returns the failure value, the packet untouched.
            assert_eq!(run(2), (u64::MAX, 60));
            let message = take(crate::capi::boundary::ubpf_last_error()).expect("a fault sets the last error");
            assert!(message.contains("instruction 7") && message.contains("r1 is not the XDP context"), "{message}");
            assert_eq!(run(0), (0, 56));
            assert_eq!(take(crate::capi::boundary::ubpf_last_error()), None, "a run that succeeds clears it");
            ubpf_destroy(vm);
        }
    }
}
