//! The C API: iovisor/ubpf's `ubpf.h`, with the same names, signatures and
//! semantics, for QEMU's `filter-ubpf` and any C program written for ubpf.
//! `include/ubpf.h` is generated from this file by cbindgen (see
//! `cbindgen.toml`; `tests/capi.rs` fails when the committed header is stale).
//!
//! Every `extern "C"` item of the crate lives here. Each exported function
//! runs its body inside [`boundary!`], which catches panics (a panic must
//! never unwind into C: it would abort QEMU), turns every failure into the
//! C convention (-1, NULL or `UINT64_MAX`) with a message, and records the
//! message for [`ubpf_last_error`]. Pointers from C are checked for NULL
//! before use; messages for `char **errmsg` are allocated with `malloc`, so
//! C frees them with `free`.
//!
//! Thread safety, as the header documents it: the calls that only read a
//! loaded VM (running it, compiling it, copying its code) may run at the same
//! time from any threads, so they take `&ubpf_vm` and keep the lazily built
//! native code behind a mutex; the calls that change the VM take `&mut` and
//! the caller must not overlap them with any other call on that VM.
//!
//! Native entry points. ubpf's `ubpf_jit_fn` is a plain `(mem, mem_len)`
//! function, which cannot carry the VM, while the JIT's code takes a
//! private context. So each VM gets, per JIT mode, a tiny stub of generated
//! code that loads the address of its [`Compiled`] into the next argument
//! register and jumps to [`run_basic`] or [`run_extended`], which run the
//! compiled program as [`JitProgram::execute`] does, with every check.

#![allow(non_camel_case_types)]

use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::helpers::Helpers;
use crate::image::{DEFAULT_INSTRUCTION_LIMIT, MAX_HELPER_INDEX};
use crate::isa::{MAX_CALL_DEPTH, STACK_FRAME_SIZE};
use crate::jit::JitProgram;
use crate::maps::{Map, MapOpError, MapType};
use crate::program::{Config, Program};

/// Defined when the ELF loader (`ubpf_load_elf`, `ubpf_load_elf_ex`) is
/// available, as ubpf's `ubpf_config.h` does; always, here.
pub const UBPF_HAS_ELF_H: c_int = 1;

/// The largest number of instruction slots a program may have.
pub const UBPF_MAX_INSTS: u32 = 65536;

/// Bytes of stack of one call frame, addressed below r10.
pub const UBPF_EBPF_STACK_SIZE: u32 = 512;

/// The deepest nesting of local (bpf-to-bpf) calls, the entry frame included.
pub const UBPF_MAX_CALL_DEPTH: u32 = 16;

// cbindgen writes constants only as literals: keep them equal to the engine's.
const _: () =
    assert!(UBPF_EBPF_STACK_SIZE as usize == STACK_FRAME_SIZE && UBPF_MAX_CALL_DEPTH as usize == MAX_CALL_DEPTH);

/// @brief A virtual machine: its helpers, its settings and at most one loaded
/// program. Opaque: create it with ubpf_create() and free it with
/// ubpf_destroy().
pub struct ubpf_vm {
    helpers: Helpers,
    /// The limit as the C caller set it (0 for none), applied at load.
    instruction_limit: u32,
    bounds_check: bool,
    undefined_behavior_check: bool,
    /// The `error_printf` function as an address, 0 for the default. Shared
    /// with [`Compiled`], which reports the faults of native runs.
    error_printf: Arc<AtomicUsize>,
    registers: *mut u64,
    /// Recorded, never called (see ubpf_register_data_relocation).
    data_relocation: ubpf_data_relocation,
    /// Recorded, never called (see ubpf_register_data_bounds_check).
    data_bounds_check: ubpf_bounds_check,
    /// Maps the next program loaded takes over (see ubpf_reuse_maps).
    reuse_maps: Vec<Arc<Map>>,
    loaded: Option<Loaded>,
}

/// A program in a VM and the native code built for it on demand.
struct Loaded {
    program: Arc<Program>,
    native: Mutex<Native>,
}

#[derive(Default)]
struct Native {
    compiled: Option<Arc<Compiled>>,
    basic: Option<EntryStub>,
    extended: Option<EntryStub>,
    /// The mode of the last successful compile, for ubpf_copy_jit().
    last: Option<Mode>,
}

/// What a native entry stub points at: the compiled program and where to
/// report its faults. Lives, at a fixed address, until the program is
/// unloaded.
struct Compiled {
    jit: JitProgram,
    error_printf: Arc<AtomicUsize>,
}

/// One generated entry point: executable code, and its bytes for
/// ubpf_copy_jit().
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct EntryStub {
    code: dynasmrt::ExecutableBuffer,
    bytes: Vec<u8>,
}

impl EntryStub {
    fn address(&self) -> *const u8 {
        self.code.ptr(dynasmrt::AssemblyOffset(0))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Basic,
    Extended,
}

/// @brief The mode of the native code that ubpf_compile_ex() returns.
#[repr(C)]
pub enum JitMode {
    /// The function is a ::ubpf_jit_ex_fn: `(mem, mem_len, stack, stack_len)`.
    ExtendedJitMode = 0,
    /// The function is a ::ubpf_jit_fn: `(mem, mem_len)`.
    BasicJitMode = 1,
}

/// A `JitMode` as C passes it: any value can arrive, so it is read as an
/// integer (`enum JitMode` in the header; see `cbindgen.toml`).
#[repr(transparent)]
pub struct JitModeValue(c_uint);

impl JitModeValue {
    fn mode(&self) -> Result<Mode, String> {
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

/// The type of `ubpf_set_error_print`'s function.
type ErrorPrintf = unsafe extern "C" fn(*mut libc::FILE, *const c_char, ...) -> c_int;

unsafe extern "C" {
    /// glibc's (and musl's) standard error stream, which ubpf hands to the
    /// `error_printf` function.
    static mut stderr: *mut libc::FILE;
}

thread_local! {
    /// The message of the last call on this thread that failed.
    static LAST_ERROR: Cell<Option<String>> = const { Cell::new(None) };
}

fn set_last_error(message: &str) {
    let _ = LAST_ERROR.try_with(|slot| slot.set(Some(message.to_owned())));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| drop(slot.take()));
}

/// Runs `body`, the whole work of an exported function, turning a panic into
/// an error, and records the outcome for [`ubpf_last_error`].
fn guard<T>(body: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let result = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let message = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
                (Some(text), _) => format!("internal error (panic): {text}"),
                (_, Some(text)) => format!("internal error (panic): {text}"),
                _ => "internal error (panic)".to_owned(),
            };
            // Dropping a payload runs its destructor, which could panic too.
            if let Err(nested) = catch_unwind(AssertUnwindSafe(|| drop(payload))) {
                std::mem::forget(nested);
            }
            Err(message)
        }
    };
    match &result {
        Ok(_) => clear_last_error(),
        Err(message) => set_last_error(message),
    }
    result
}

/// The one boundary every exported function runs in: catches panics, turns
/// an `Err` into the C failure value, and delivers the message.
///
/// - `boundary!(errmsg: P, failure: F, { body })`: sets `*P` to NULL first
///   (when P is not NULL), then to a `malloc`'d message on failure;
/// - `boundary!(report: VM, failure: F, { body })`: a run's failure goes to
///   the `error_printf` of VM (a `*const ubpf_vm`, possibly NULL);
/// - `boundary!(failure: F, { body })`: the message only goes to
///   ubpf_last_error().
///
/// The body is a closure returning `Result<T, String>`, so `?` works in it.
macro_rules! boundary {
    (errmsg: $errmsg:expr, failure: $failure:expr, $body:block) => {{
        let errmsg: *mut *mut c_char = $errmsg;
        // SAFETY: the header requires `errmsg` to be NULL or writable.
        unsafe { write_errmsg(errmsg, None) };
        match guard(|| $body) {
            Ok(value) => value,
            Err(message) => {
                // SAFETY: as above.
                unsafe { write_errmsg(errmsg, Some(&message)) };
                $failure
            }
        }
    }};
    (report: $vm:expr, failure: $failure:expr, $body:block) => {{
        let vm: *const ubpf_vm = $vm;
        match guard(|| $body) {
            Ok(value) => value,
            Err(message) => {
                // SAFETY: the header requires `vm` to be NULL or a live VM.
                let printer = unsafe { vm.as_ref() }.map_or(0, |vm| vm.error_printf.load(Ordering::Relaxed));
                report(printer, &message);
                $failure
            }
        }
    }};
    (failure: $failure:expr, $body:block) => {{
        match guard(|| $body) {
            Ok(value) => value,
            Err(_) => $failure,
        }
    }};
}

/// `message` with any NUL written as `\0`, so that it fits a C string.
fn without_nul(message: &str) -> Cow<'_, str> {
    if message.contains('\0') { message.replace('\0', "\\0").into() } else { message.into() }
}

/// Copies `message` into memory from `malloc`, NUL-terminated; NULL when
/// memory is short.
fn malloc_string(message: &str) -> *mut c_char {
    let text = without_nul(message);
    let bytes = text.as_bytes();
    // SAFETY: malloc has no preconditions; the size is at least 1.
    let copy = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
    if !copy.is_null() {
        // SAFETY: `copy` holds `bytes.len() + 1` bytes and is fresh, so it
        // cannot overlap `bytes`.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
            copy.add(bytes.len()).write(0);
        }
    }
    copy.cast()
}

/// Stores a copy of `message` (or NULL) in `*errmsg`, unless `errmsg` is
/// NULL.
///
/// # Safety
/// `errmsg` is NULL or valid for writing a pointer.
unsafe fn write_errmsg(errmsg: *mut *mut c_char, message: Option<&str>) {
    if !errmsg.is_null() {
        let copy = message.map_or(ptr::null_mut(), malloc_string);
        // SAFETY: not NULL, and writable by the caller's contract.
        unsafe { errmsg.write(copy) };
    }
}

/// Reports a failed run as ubpf does: through the VM's `error_printf`
/// (`printer`, an address; 0 for the default, which writes to stderr).
fn report(printer: usize, message: &str) {
    if printer == 0 {
        let _ = writeln!(std::io::stderr(), "qemu-ubpf: {message}");
        return;
    }
    let Ok(text) = std::ffi::CString::new(without_nul(message).as_bytes()) else { return };
    // SAFETY: `printer` was stored by ubpf_set_error_print from a non-NULL
    // function pointer of exactly this type.
    let printer: ErrorPrintf = unsafe { std::mem::transmute::<usize, ErrorPrintf>(printer) };
    // SAFETY: the C library initialises `stderr` before any code runs and
    // nothing here writes it.
    let stream = unsafe { stderr };
    // SAFETY: a printf-like function called with a constant "%s\n" format
    // and one NUL-terminated string, as its contract expects.
    unsafe { printer(stream, c"%s\n".as_ptr(), text.as_ptr()) };
}

/// The VM behind a pointer from C, for reading.
///
/// # Safety
/// `vm` is NULL or a VM from ubpf_create() not yet destroyed, which no other
/// thread changes meanwhile.
unsafe fn vm_ref<'a>(vm: *const ubpf_vm) -> Result<&'a ubpf_vm, String> {
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

/// `len` bytes at `data`, read-only; NULL is allowed only with length 0.
///
/// # Safety
/// Unless NULL, `data` points at `len` readable bytes that stay valid and
/// unchanged for `'a`.
unsafe fn bytes<'a>(data: *const c_void, len: usize, what: &str) -> Result<&'a [u8], String> {
    match (data.is_null(), len) {
        (true, 0) => Ok(&[]),
        (true, _) => Err(format!("{what} is NULL but its length is {len}")),
        (false, len) if len > isize::MAX as usize => {
            Err(format!("{what} is {len} bytes long, more than memory can hold"))
        }
        // SAFETY: the caller's contract; the length fits an isize.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }),
    }
}

/// `len` bytes at `data`, writable; NULL is allowed only with length 0.
///
/// # Safety
/// Unless NULL, `data` points at `len` bytes that the caller lets the
/// program read and write for `'a`.
unsafe fn bytes_mut<'a>(data: *mut c_void, len: usize, what: &str) -> Result<&'a mut [u8], String> {
    match (data.is_null(), len) {
        (true, 0) => Ok(&mut []),
        (true, _) => Err(format!("{what} is NULL but its length is {len}")),
        (false, len) if len > isize::MAX as usize => {
            Err(format!("{what} is {len} bytes long, more than memory can hold"))
        }
        // SAFETY: the caller's contract; the length fits an isize.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) }),
    }
}

/// A C string argument as text; NULL gives `None`.
///
/// # Safety
/// Unless NULL, `text` points at a NUL-terminated string valid for `'a`.
unsafe fn c_str<'a>(text: *const c_char, what: &str) -> Result<Option<&'a str>, String> {
    if text.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str().map(Some).map_err(|_| format!("{what} is not valid UTF-8"))
}

/// The limit a program gets: ubpf's 0 means none.
fn instruction_limit(limit: u32) -> u64 {
    match limit {
        0 => u64::MAX,
        limit => limit as u64,
    }
}

impl ubpf_vm {
    fn loaded(&self) -> Result<&Loaded, String> {
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

    fn config(&self) -> Config {
        Config {
            instruction_limit: instruction_limit(self.instruction_limit),
            reuse_maps: self.reuse_maps.clone(),
            ..Config::default()
        }
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

impl Native {
    /// The compiled program, compiling it on first use.
    fn compiled(&mut self, program: &Arc<Program>, error_printf: &Arc<AtomicUsize>) -> Result<&Arc<Compiled>, String> {
        if self.compiled.is_none() {
            let jit =
                JitProgram::compile(program.clone()).map_err(|error| format!("JIT compilation failed: {error}"))?;
            self.compiled = Some(Arc::new(Compiled { jit, error_printf: error_printf.clone() }));
        }
        Ok(self.compiled.as_ref().expect("set above"))
    }

    /// The entry point for `mode`, generating it on first use.
    fn entry(
        &mut self,
        program: &Arc<Program>,
        error_printf: &Arc<AtomicUsize>,
        mode: Mode,
    ) -> Result<*const u8, String> {
        let compiled = Arc::as_ptr(self.compiled(program, error_printf)?);
        let slot = match mode {
            Mode::Basic => &mut self.basic,
            Mode::Extended => &mut self.extended,
        };
        if slot.is_none() {
            *slot = Some(entry_stub(compiled, mode)?);
        }
        self.last = Some(mode);
        Ok(slot.as_ref().expect("set above").address())
    }
}

/// Generates the entry point of `mode` for `compiled`: it puts `compiled`
/// in the argument register after the C caller's own (rdx for a
/// `ubpf_jit_fn`, r8 for a `ubpf_jit_ex_fn`) and jumps to the Rust function
/// that runs the program. A jump, not a call, so the stack stays as the C
/// caller left it and the Rust function returns straight to it.
#[cfg(target_arch = "x86_64")]
fn entry_stub(compiled: *const Compiled, mode: Mode) -> Result<EntryStub, String> {
    use dynasmrt::x64::X64Relocation;
    use dynasmrt::{DynasmApi, VecAssembler, dynasm};

    type Basic = unsafe extern "C" fn(*mut c_void, usize, *const Compiled) -> u64;
    type Extended = unsafe extern "C" fn(*mut c_void, usize, *mut u8, usize, *const Compiled) -> u64;

    let context = compiled as i64;
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    match mode {
        Mode::Basic => {
            let target = run_basic as Basic as usize as i64;
            dynasm!(ops ; .arch x64 ; mov rdx, QWORD context ; mov rax, QWORD target ; jmp rax);
        }
        Mode::Extended => {
            let target = run_extended as Extended as usize as i64;
            dynasm!(ops ; .arch x64 ; mov r8, QWORD context ; mov rax, QWORD target ; jmp rax);
        }
    }
    let bytes = ops.finalize().map_err(|error| format!("generating the entry point failed: {error}"))?;
    let mut buffer = dynasmrt::mmap::MutableBuffer::new(bytes.len())
        .map_err(|error| format!("mapping the entry point failed: {error}"))?;
    buffer.set_len(bytes.len());
    buffer.copy_from_slice(&bytes);
    let code = buffer.make_exec().map_err(|error| format!("mapping the entry point failed: {error}"))?;
    dynasmrt::cache_control::prepare_for_execution(&code);
    Ok(EntryStub { code, bytes })
}

#[cfg(not(target_arch = "x86_64"))]
fn entry_stub(_compiled: *const Compiled, _mode: Mode) -> Result<EntryStub, String> {
    Err(format!("native entry points are not implemented on {}", std::env::consts::ARCH))
}

/// Runs a compiled program for a native entry point; the failure value
/// `UINT64_MAX` stands for a failed run, whose message goes to the VM's
/// `error_printf` and to ubpf_last_error().
///
/// # Safety
/// `compiled` is the pointer the entry stub was generated with, whose
/// program is still loaded; `mem` is NULL with `mem_len` 0, or points at
/// `mem_len` bytes the program may read and write.
unsafe fn run_native(mem: *mut c_void, mem_len: usize, compiled: *const Compiled) -> u64 {
    // SAFETY: the stub lives no longer than the `Compiled` it points at.
    let compiled = unsafe { &*compiled };
    match guard(|| {
        // SAFETY: the caller's contract.
        let mem = unsafe { bytes_mut(mem, mem_len, "mem") }?;
        compiled.jit.execute(mem).map_err(|error| error.to_string())
    }) {
        Ok(value) => value,
        Err(message) => {
            report(compiled.error_printf.load(Ordering::Relaxed), &message);
            u64::MAX
        }
    }
}

/// Where the `ubpf_jit_fn` stub jumps.
///
/// # Safety
/// As [`run_native`].
unsafe extern "C" fn run_basic(mem: *mut c_void, mem_len: usize, compiled: *const Compiled) -> u64 {
    // SAFETY: the same contract.
    unsafe { run_native(mem, mem_len, compiled) }
}

/// Where the `ubpf_jit_ex_fn` stub jumps; the stack is not used.
///
/// # Safety
/// As [`run_native`].
unsafe extern "C" fn run_extended(
    mem: *mut c_void,
    mem_len: usize,
    _stack: *mut u8,
    _stack_len: usize,
    compiled: *const Compiled,
) -> u64 {
    // SAFETY: the same contract.
    unsafe { run_native(mem, mem_len, compiled) }
}

/// The entry point of `mode` for the program in `vm`, as a function pointer.
fn entry_point(vm: &ubpf_vm, mode: Mode) -> Result<*const u8, String> {
    let loaded = vm.loaded()?;
    loaded.native().entry(&loaded.program, &vm.error_printf, mode)
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
            error_printf: Arc::new(AtomicUsize::new(0)),
            registers: ptr::null_mut(),
            data_relocation: None,
            data_bounds_check: None,
            reuse_maps: Vec::new(),
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
        vm.check_unloaded("ubpf_load()").map_err(|_| "a program is already loaded in this vm: call ubpf_unload_code() first".to_owned())?;
        if code.is_empty() {
            return Err("code_len is 0: there is no program".to_owned());
        }
        let program = Program::load(code, &vm.helpers, &vm.config()).map_err(|error| error.to_string())?;
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
        vm.check_unloaded("ubpf_load_elf()").map_err(|_| "a program is already loaded in this vm: call ubpf_unload_code() first".to_owned())?;
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
///                for none. Nothing else may access it during the run.
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
    boundary!(report: vm, failure: -1, {
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
/// be told apart. Calling again returns the same function. It stays valid
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
/// Difference from ubpf: what is copied is the small stub that enters the
/// VM's compiled program, not the program itself, so the copy (once the
/// caller has made its memory executable) works only while the VM keeps the
/// program loaded.
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
        let stub = match native.last {
            Some(Mode::Basic) => native.basic.as_ref(),
            Some(Mode::Extended) => native.extended.as_ref(),
            None => None,
        }
        .ok_or("the program has not been compiled: call ubpf_compile() first")?;
        if buffer.is_null() {
            return Err("buffer is NULL".to_owned());
        }
        if stub.bytes.len() > size {
            return Err(format!("the buffer of {size} bytes is too small for {} bytes of code", stub.bytes.len()));
        }
        // SAFETY: `buffer` holds `size` writable bytes, at least as many as
        // copied, and cannot overlap the Vec's own memory.
        unsafe { ptr::copy_nonoverlapping(stub.bytes.as_ptr(), buffer.cast::<u8>(), stub.bytes.len()) };
        // SAFETY: the buffer now holds the stub, a `ubpf_jit_fn` once the
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
    let code = native.compiled(&loaded.program, &vm.error_printf)?.jit.code();
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
/// @param[in] error_printf A printf-like function; NULL restores the default,
///            which writes the message on stderr.
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
        vm.error_printf.store(error_printf.map_or(0, |printer| printer as usize), Ordering::Relaxed);
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
/// `bpf_helpers.h` load and run as they are.
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

/// @brief A map of a loaded program, for the host: opaque; get one with
/// ubpf_map_get() or ubpf_map_get_by_index(), free it with
/// ubpf_map_release().
///
/// The handle keeps the map alive, even after the program is unloaded (it
/// is then no program's map any more). Not in ubpf.
pub struct ubpf_map {
    map: Arc<Map>,
    name: std::ffi::CString,
}

/// @brief What a map is: Linux's map type number (`BPF_MAP_TYPE_*`), its
/// sizes and flags.
#[repr(C)]
pub struct ubpf_map_info {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

fn map_handle(map: &Arc<Map>) -> *mut ubpf_map {
    let name = std::ffi::CString::new(without_nul(map.name()).as_bytes()).unwrap_or_default();
    Box::into_raw(Box::new(ubpf_map { map: map.clone(), name }))
}

/// The map behind a handle from C.
///
/// # Safety
/// `map` is NULL or a handle not yet released.
unsafe fn map_ref<'a>(map: *const ubpf_map) -> Result<&'a Map, String> {
    // SAFETY: the caller's contract.
    unsafe { map.as_ref() }.map(|handle| &*handle.map).ok_or_else(|| "the map is NULL".to_owned())
}

/// A map operation's result as C sees it: 0, or a negative errno.
fn map_status(result: Result<(), MapOpError>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(error) => -error.errno(),
    }
}

/// @brief The number of maps of the loaded program: those it declares,
/// then one per global data section (`.rodata`, `.data`, `.bss`, each an
/// array of one value), as libbpf counts them.
///
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @return The count; -1 when `vm` is NULL or has no program loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_count(vm: *const ubpf_vm) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        Ok(c_int::try_from(vm.loaded()?.program.maps().len()).unwrap_or(c_int::MAX))
    })
}

/// @brief A handle to map number `index` of the loaded program (see
/// ubpf_map_count()).
///
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @param[in] index From 0 to the count less 1.
/// @return The handle, to free with ubpf_map_release(); NULL when there is
///         no such map (the reason in ubpf_last_error()).
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_get_by_index(vm: *const ubpf_vm, index: c_uint) -> *mut ubpf_map {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let maps = vm.loaded()?.program.maps();
        let map = maps.get(index as usize).ok_or_else(|| format!("no map {index}: the program has {}", maps.len()))?;
        Ok(map_handle(map))
    })
}

/// @brief A handle to the loaded program's map named `name` (its variable
/// in C; `.bss`, `.data` or `.rodata` for global data).
///
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @param[in] name The map's name.
/// @return The handle, to free with ubpf_map_release(); NULL when there is
///         no such map.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes; `name` is NULL
/// or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_get(vm: *const ubpf_vm, name: *const c_char) -> *mut ubpf_map {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(name, "the map's name") }?.ok_or("the map's name is NULL")?;
        let map = vm.loaded()?.program.map(name).ok_or_else(|| format!("the program has no map named {name:?}"))?;
        Ok(map_handle(map))
    })
}

/// @brief Frees a map handle.
///
/// @param[in] map The handle; NULL does nothing.
///
/// # Safety
/// `map` is NULL or a handle not yet released, which no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_release(map: *mut ubpf_map) {
    boundary!(failure: (), {
        if !map.is_null() {
            // SAFETY: a handle from `map_handle`, released once.
            drop(unsafe { Box::from_raw(map) });
        }
        Ok(())
    })
}

/// @brief The map's name, valid as long as the handle.
///
/// @param[in] map The handle.
/// @return The name; NULL when `map` is NULL.
///
/// # Safety
/// `map` is NULL or a handle not yet released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_name(map: *const ubpf_map) -> *const c_char {
    boundary!(failure: ptr::null(), {
        // SAFETY: the caller's contract.
        let handle = unsafe { map.as_ref() }.ok_or("the map is NULL")?;
        Ok(handle.name.as_ptr())
    })
}

/// @brief The map's type, sizes and flags.
///
/// @param[in] map The handle.
/// @param[out] info Where to write them.
/// @retval 0 Success.
/// @retval -EINVAL A NULL argument.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `info` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_info(map: *const ubpf_map, info: *mut ubpf_map_info) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        let def = map.def();
        let value = ubpf_map_info {
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            flags: def.flags,
        };
        // SAFETY: the caller's contract; checked for NULL.
        unsafe { info.as_mut() }.map(|info| *info = value).ok_or("info is NULL")?;
        Ok(0)
    })
}

/// @brief Copies the value under `key` into `value`.
///
/// Sizes must be the map's. A prog array's value is the slot's index when
/// it holds a program. Thread safety: any number of threads may use maps
/// at once, while programs run.
///
/// @param[in] map The handle.
/// @param[in] key The key, `key_size` bytes.
/// @param[out] value Where the value goes, `value_size` bytes.
/// @retval 0 Found.
/// @retval -ENOENT No such key.
/// @retval -EINVAL Wrong sizes or NULL arguments.
/// @retval -EOPNOTSUPP The map type has no lookup (ring buffer, queue).
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` and `value` are NULL or
/// point at their sizes in bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_lookup(
    map: *const ubpf_map,
    key: *const c_void,
    key_size: usize,
    value: *mut c_void,
    value_size: usize,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let (map, key) = unsafe { (map_ref(map)?, bytes(key, key_size, "key")?) };
        // SAFETY: the caller's contract.
        let out = unsafe { bytes_mut(value, value_size, "value") }?;
        let found = match map.lookup(key) {
            Ok(found) => found,
            Err(error) => return Ok(map_status(Err(error))),
        };
        let Some(found) = found else { return Ok(map_status(Err(MapOpError::NotFound))) };
        if found.len() != out.len() {
            return Ok(map_status(Err(MapOpError::ValueSize { expected: found.len() as u32, got: out.len() })));
        }
        out.copy_from_slice(&found);
        Ok(0)
    })
}

/// @brief Stores `value` under `key`; `flags` is 0 (BPF_ANY), 1
/// (BPF_NOEXIST) or 2 (BPF_EXIST). For a queue or stack, pushes `value`
/// (the key is NULL, size 0).
///
/// Thread safety: as ubpf_map_lookup().
///
/// @retval 0 Success.
/// @retval -EEXIST, -ENOENT As `flags` asks.
/// @retval -E2BIG The map is full.
/// @retval -EINVAL Wrong sizes, flags or NULL arguments.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` and `value` are NULL or
/// point at their sizes in bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_update(
    map: *const ubpf_map,
    key: *const c_void,
    key_size: usize,
    value: *const c_void,
    value_size: usize,
    flags: u64,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let (map, key, value) =
            unsafe { (map_ref(map)?, bytes(key, key_size, "key")?, bytes(value, value_size, "value")?) };
        Ok(map_status(match map.map_type() {
            MapType::Queue | MapType::Stack => map.push(value, flags),
            _ => map.update(key, value, flags),
        }))
    })
}

/// @brief Removes the value under `key` (empties a prog array's slot).
///
/// Thread safety: as ubpf_map_lookup().
///
/// @retval 0 Success.
/// @retval -ENOENT No such key.
/// @retval -EINVAL Wrong size, NULL arguments, or an array (whose elements
///         cannot be deleted).
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` is NULL or points at
/// `key_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_delete(map: *const ubpf_map, key: *const c_void, key_size: usize) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let (map, key) = unsafe { (map_ref(map)?, bytes(key, key_size, "key")?) };
        Ok(map_status(map.delete(key)))
    })
}

/// @brief Iterates keys: writes the key after `key` (the first one when
/// `key` is NULL or absent) to `next_key`. Keys come in a stable order while
/// the map is unchanged: index order for arrays, byte order otherwise.
///
/// Thread safety: as ubpf_map_lookup().
///
/// @retval 0 A key was written.
/// @retval -ENOENT `key` was the last one (or the map is empty).
/// @retval -EINVAL Wrong size or NULL `next_key`.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` is NULL or points at
/// `key_size` bytes; `next_key` is NULL or points at `key_size` writable
/// bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_next_key(
    map: *const ubpf_map,
    key: *const c_void,
    next_key: *mut c_void,
    key_size: usize,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        if key_size != map.def().key_size as usize || next_key.is_null() {
            return Err(format!("next_key must be {} writable bytes", map.def().key_size));
        }
        // SAFETY: the caller's contract (NULL means "the first").
        let key = if key.is_null() { None } else { Some(unsafe { bytes(key, key_size, "key") }?) };
        // SAFETY: the caller's contract; checked for NULL.
        let out = unsafe { bytes_mut(next_key, key_size, "next_key") }?;
        match map.next_key(key) {
            Some(next) => {
                out.copy_from_slice(&next);
                Ok(0)
            }
            None => Ok(-libc::ENOENT),
        }
    })
}

/// @brief Takes the next record a program submitted to a ring buffer map.
///
/// Records come in the order they were reserved; one reserved and not yet
/// submitted holds back those after it. Meant for one consumer per ring
/// buffer. Thread safety: as ubpf_map_lookup().
///
/// @param[in] map The handle of a ring buffer map.
/// @param[out] buffer Where the record goes.
/// @param[in] size The buffer's size.
/// @param[out] len The record's length (also when it does not fit); may be
///             NULL.
/// @retval 1 A record was copied (and taken).
/// @retval 0 No record is ready.
/// @retval -ENOSPC The next record is longer than `size`; it stays.
/// @retval -EINVAL Not a ring buffer, or NULL arguments.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `buffer` is NULL or points
/// at `size` writable bytes; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_ringbuf_read(
    map: *const ubpf_map,
    buffer: *mut c_void,
    size: usize,
    len: *mut usize,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        // SAFETY: the caller's contract.
        let out = unsafe { bytes_mut(buffer, size, "buffer") }?;
        let next = map.ringbuf_next_within(size).map_err(|error| error.to_string())?;
        let (status, record_len) = match next {
            None => (0, 0),
            Some(Err(needed)) => (-libc::ENOSPC, needed),
            Some(Ok(record)) => {
                out[..record.len()].copy_from_slice(&record);
                (1, record.len())
            }
        };
        // SAFETY: the caller's contract.
        if let Some(len) = unsafe { len.as_mut() } {
            *len = record_len;
        }
        Ok(status)
    })
}

/// @brief Every map of the loaded program as JSON, in the format of
/// `qemu-ubpf replay --maps`: `{"maps": [{"name", "type", "key_size",
/// "value_size", "max_entries", "flags", "entries": [{"key", "value"}]}]}`,
/// keys and values as hex bytes in memory order. Arrays list their non-zero
/// values only; ring buffers give (and consume) their records.
///
/// Thread safety: as ubpf_exec(); entries change under a running program,
/// each is read whole but the whole is no snapshot.
///
/// @param[in] vm The VM.
/// @return The JSON text, to free with free(); NULL on failure.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_maps_json(vm: *const ubpf_vm) -> *mut c_char {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let dump = crate::maps::json::dump_all(vm.loaded()?.program.maps());
        Ok(malloc_string(&dump.to_string()))
    })
}

/// @brief Updates maps of the loaded program from JSON, in the format of
/// `qemu-ubpf replay --map-init`: `{"MAP": [{"key": K, "value": V}, ...]}`,
/// K and V hex strings (bytes in memory order), unsigned integers, or, for
/// an LPM trie over IPv4, "a.b.c.d/len" keys.
///
/// Entries before a failing one stay stored. Thread safety: as
/// ubpf_map_lookup().
///
/// @param[in] vm The VM.
/// @param[in] json The text.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @return The number of entries stored; -1 on failure.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes; `json` is NULL
/// or a NUL-terminated string; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_maps_update_json(
    vm: *const ubpf_vm,
    json: *const c_char,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        // SAFETY: the caller's contract.
        let text = unsafe { c_str(json, "json") }?.ok_or("json is NULL")?;
        let stored = crate::maps::json::init(vm.loaded()?.program.maps(), text).map_err(|error| error.to_string())?;
        Ok(c_int::try_from(stored).unwrap_or(c_int::MAX))
    })
}

/// @brief Returns the message of the last call on this thread that failed.
///
/// qemu-ubpf extension, chiefly for the compiled functions, which can only
/// return `UINT64_MAX`. Every call of this API clears the message when it
/// succeeds and sets it when it fails; this one leaves it as it is.
/// Thread safety: may run at any time; each thread has its own message.
///
/// @return A copy of the message, which the caller frees with free(); NULL
///         when the last call succeeded (or memory is short).
#[unsafe(no_mangle)]
pub extern "C" fn ubpf_last_error() -> *mut c_char {
    // Not `boundary!`, which would clear the message it is asked for.
    match catch_unwind(|| {
        LAST_ERROR
            .try_with(|slot| {
                let message = slot.take();
                let copy = message.as_deref().map_or(ptr::null_mut(), malloc_string);
                slot.set(message);
                copy
            })
            .unwrap_or(ptr::null_mut())
    }) {
        Ok(copy) => copy,
        Err(payload) => {
            std::mem::forget(payload);
            ptr::null_mut()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes the message out of a `malloc`'d C string, freeing it.
    fn take(message: *mut c_char) -> Option<String> {
        if message.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated string from `malloc_string`.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
        // SAFETY: allocated with malloc, freed once.
        unsafe { libc::free(message.cast()) };
        Some(text)
    }

    #[test]
    fn a_panic_becomes_a_failure_with_a_message() {
        let mut errmsg: *mut c_char = ptr::null_mut();
        let status: c_int = boundary!(errmsg: &mut errmsg, failure: -1, {
            if errmsg.is_null() {
                panic!("boom");
            }
            Ok(0)
        });
        assert_eq!(status, -1);
        assert_eq!(take(errmsg).as_deref(), Some("internal error (panic): boom"));
        assert_eq!(take(ubpf_last_error()).as_deref(), Some("internal error (panic): boom"));

        let value: u64 = boundary!(report: ptr::null(), failure: u64::MAX, { panic!("{}", String::from("formatted")) });
        assert_eq!(value, u64::MAX);
        assert_eq!(take(ubpf_last_error()).as_deref(), Some("internal error (panic): formatted"));
    }

    #[test]
    fn success_clears_the_last_error_and_errmsg() {
        let mut errmsg: *mut c_char = malloc_string("stale");
        let stale = errmsg;
        let status: c_int = boundary!(errmsg: &mut errmsg, failure: -1, { Err("first".to_owned()) });
        assert_eq!((status, take(ubpf_last_error()).as_deref()), (-1, Some("first")));
        take(stale);
        assert_eq!(take(errmsg).as_deref(), Some("first"));
        let status: c_int = boundary!(errmsg: &mut errmsg, failure: -1, { Ok(0) });
        assert_eq!((status, errmsg), (0, ptr::null_mut()));
        assert_eq!(take(ubpf_last_error()), None);
    }

    #[test]
    fn messages_survive_nul_bytes() {
        assert_eq!(take(malloc_string("a\0b")).as_deref(), Some("a\\0b"));
        assert_eq!(take(malloc_string("")).as_deref(), Some(""));
    }

    #[test]
    fn pointers_from_c_are_checked() {
        // SAFETY: NULL pointers only.
        unsafe {
            assert!(vm_ref(ptr::null()).is_err());
            assert!(vm_mut(ptr::null_mut()).is_err());
            assert_eq!(bytes(ptr::null(), 0, "code"), Ok(&[][..]));
            assert!(bytes(ptr::null(), 1, "code").unwrap_err().contains("code is NULL"));
            assert!(bytes_mut(ptr::null_mut(), 3, "mem").unwrap_err().contains("mem is NULL"));
            assert_eq!(c_str(ptr::null(), "name"), Ok(None));
            write_errmsg(ptr::null_mut(), Some("nowhere to go"));
        }
        let mut bytes = [0u8; 4];
        // SAFETY: a dangling-free pointer to four bytes, with a length past
        // what memory can hold: refused before any slice is made.
        assert!(unsafe { bytes_mut(bytes.as_mut_ptr().cast(), usize::MAX, "mem") }.is_err());
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
            #[cfg(target_arch = "x86_64")]
            {
                let compiled = ubpf_compile(vm, &mut errmsg).expect("compiles");
                assert_eq!(compiled(ptr::null_mut(), 0), 42);
                let extended = ubpf_compile_ex(vm, &mut errmsg, JitModeValue(0)).expect("compiles");
                assert_eq!(extended(ptr::null_mut(), 0, ptr::null_mut(), 0), 42);
            }
            ubpf_destroy(vm);
        }
    }
}
