//! The boundary between C and Rust, which every exported function runs in:
//! [`boundary!`] around its body, the checks of the pointers it receives,
//! and the delivery of its messages (`char **errmsg` from `malloc`, the VM's
//! `error_printf`, and ubpf_last_error()).

use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The type of `ubpf_set_error_print`'s function.
pub(super) type ErrorPrintf = unsafe extern "C" fn(*mut libc::FILE, *const c_char, ...) -> c_int;

unsafe extern "C" {
    /// glibc's (and musl's) standard error stream, which ubpf hands to the
    /// `error_printf` function.
    static mut stderr: *mut libc::FILE;
}

thread_local! {
    /// The message of the last call on this thread that failed.
    static LAST_ERROR: LastError = const { LastError(Cell::new(None)) };
}

/// How many threads hold a last error. While it is 0, a run that succeeds
/// has nothing to clear: the native entry points (see `native`) read it
/// instead of calling into Rust after every run. A thread reads it only
/// after its own increment, so it never misses its own message.
pub(super) static THREADS_WITH_LAST_ERROR: AtomicUsize = AtomicUsize::new(0);

/// A thread's last error, counted in [`THREADS_WITH_LAST_ERROR`] while set
/// (until the thread ends, too).
struct LastError(Cell<Option<String>>);

impl Drop for LastError {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            THREADS_WITH_LAST_ERROR.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn set_last_error(message: &str) {
    let _ = LAST_ERROR.try_with(|slot| {
        if slot.0.replace(Some(message.to_owned())).is_none() {
            THREADS_WITH_LAST_ERROR.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Forgets this thread's last error: a call succeeded.
pub(super) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| {
        if slot.0.take().is_some() {
            THREADS_WITH_LAST_ERROR.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

/// Runs `body`, the whole work of an exported function, turning a panic into
/// an error, and records the outcome for [`ubpf_last_error`].
pub(super) fn guard<T>(body: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
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
/// - `boundary!(report: PRINTER, failure: F, { body })`: a run's failure
///   goes to PRINTER, an [`ErrorPrint`], evaluated only on failure;
/// - `boundary!(failure: F, { body })`: the message only goes to
///   ubpf_last_error().
///
/// The body is a closure returning `Result<T, String>`, so `?` works in it.
macro_rules! boundary {
    (errmsg: $errmsg:expr, failure: $failure:expr, $body:block) => {{
        let errmsg: *mut *mut ::std::ffi::c_char = $errmsg;
        // SAFETY: the header requires `errmsg` to be NULL or writable.
        unsafe { $crate::capi::boundary::write_errmsg(errmsg, None) };
        match $crate::capi::boundary::guard(|| $body) {
            Ok(value) => value,
            Err(message) => {
                // SAFETY: as above.
                unsafe { $crate::capi::boundary::write_errmsg(errmsg, Some(&message)) };
                $failure
            }
        }
    }};
    (report: $printer:expr, failure: $failure:expr, $body:block) => {{
        match $crate::capi::boundary::guard(|| $body) {
            Ok(value) => value,
            Err(message) => {
                $crate::capi::boundary::ErrorPrint::report($printer, &message);
                $failure
            }
        }
    }};
    (failure: $failure:expr, $body:block) => {{
        match $crate::capi::boundary::guard(|| $body) {
            Ok(value) => value,
            Err(_) => $failure,
        }
    }};
}
pub(super) use boundary;

/// `message` with any NUL written as `\0`, so that it fits a C string.
pub(super) fn without_nul(message: &str) -> Cow<'_, str> {
    if message.contains('\0') { message.replace('\0', "\\0").into() } else { message.into() }
}

/// Copies `message` into memory from `malloc`, NUL-terminated; NULL when
/// memory is short.
pub(super) fn malloc_string(message: &str) -> *mut c_char {
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
pub(super) unsafe fn write_errmsg(errmsg: *mut *mut c_char, message: Option<&str>) {
    if !errmsg.is_null() {
        let copy = message.map_or(ptr::null_mut(), malloc_string);
        // SAFETY: not NULL, and writable by the caller's contract.
        unsafe { errmsg.write(copy) };
    }
}

/// Default-printed fault messages of one VM printed one by one; after them
/// the VM's faults are counted.
const FAULT_BURST: u32 = 5;
/// How often, at most, the default printer prints a summary of the faults
/// it counted.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

/// Where a VM reports its failed runs, as ubpf does: through the
/// embedder's `error_printf`, which gets every message, or by default on
/// stderr. Under QEMU a guest can make every packet fault, so the default
/// printer is rate-limited per VM: the first [`FAULT_BURST`] messages, then
/// at most one summary a second with the count of those not printed (and
/// a last one when the VM goes).
pub(super) struct ErrorPrint {
    /// The `error_printf` function as an address, 0 for the default.
    printf: AtomicUsize,
    limit: Mutex<FaultLimit>,
}

/// What the default printer has printed of one VM's faults.
struct FaultLimit {
    printed: u32,
    /// Faults since the last summary (or the end of the burst), not printed.
    unprinted: u64,
    since: Option<Instant>,
}

impl ErrorPrint {
    pub(super) const fn new() -> ErrorPrint {
        ErrorPrint {
            printf: AtomicUsize::new(0),
            limit: Mutex::new(FaultLimit { printed: 0, unprinted: 0, since: None }),
        }
    }

    /// Sets the embedder's printer; `None` restores the default.
    pub(super) fn set(&self, printf: Option<ErrorPrintf>) {
        self.printf.store(printf.map_or(0, |printf| printf as usize), Ordering::Relaxed);
    }

    /// Reports a failed run.
    pub(super) fn report(&self, message: &str) {
        let printf = self.printf.load(Ordering::Relaxed);
        if printf == 0 {
            self.print_limited(message);
            return;
        }
        let Ok(text) = std::ffi::CString::new(without_nul(message).as_bytes()) else { return };
        // SAFETY: `printf` was stored by `set` from a function pointer of
        // exactly this type.
        let printf: ErrorPrintf = unsafe { std::mem::transmute::<usize, ErrorPrintf>(printf) };
        // SAFETY: the C library initialises `stderr` before any code runs and
        // nothing here writes it.
        let stream = unsafe { stderr };
        // SAFETY: a printf-like function called with a constant "%s\n" format
        // and one NUL-terminated string, as its contract expects.
        unsafe { printf(stream, c"%s\n".as_ptr(), text.as_ptr()) };
    }

    fn print_limited(&self, message: &str) {
        let mut limit = self.limit.lock().unwrap_or_else(PoisonError::into_inner);
        if limit.printed < FAULT_BURST {
            limit.printed += 1;
            print_line(message);
            if limit.printed == FAULT_BURST {
                print_line(&format!(
                    "{FAULT_BURST} run-time faults printed; this VM's further faults are counted, \
                     with a summary at most once a second"
                ));
                limit.since = Some(Instant::now());
            }
            return;
        }
        limit.unprinted += 1;
        let elapsed = limit.since.get_or_insert_with(Instant::now).elapsed();
        if elapsed >= SUMMARY_INTERVAL {
            let seconds = elapsed.as_secs_f64();
            print_line(&format!(
                "{} more run-time faults in the last {seconds:.1} s, not printed; the latest: {message}",
                limit.unprinted
            ));
            (limit.unprinted, limit.since) = (0, Some(Instant::now()));
        }
    }
}

impl Drop for ErrorPrint {
    /// The faults counted since the last summary, when the VM goes.
    fn drop(&mut self) {
        let limit = self.limit.get_mut().unwrap_or_else(PoisonError::into_inner);
        if limit.unprinted > 0 {
            print_line(&format!("{} more run-time faults, not printed", limit.unprinted));
        }
    }
}

/// The default printer's line on stderr.
fn print_line(message: &str) {
    let _ = writeln!(std::io::stderr(), "qemu-ubpf: {message}");
}

/// `len` bytes at `data`, read-only; NULL is allowed only with length 0.
///
/// # Safety
/// Unless NULL, `data` points at `len` readable bytes that stay valid and
/// unchanged for `'a`.
pub(super) unsafe fn bytes<'a>(data: *const c_void, len: usize, what: &str) -> Result<&'a [u8], String> {
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
pub(super) unsafe fn bytes_mut<'a>(data: *mut c_void, len: usize, what: &str) -> Result<&'a mut [u8], String> {
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
pub(super) unsafe fn c_str<'a>(text: *const c_char, what: &str) -> Result<Option<&'a str>, String> {
    if text.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str().map(Some).map_err(|_| format!("{what} is not valid UTF-8"))
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
                let message = slot.0.take();
                let copy = message.as_deref().map_or(ptr::null_mut(), malloc_string);
                slot.0.set(message);
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
pub(super) mod tests {
    use super::*;

    /// Takes the message out of a `malloc`'d C string, freeing it.
    pub(crate) fn take(message: *mut c_char) -> Option<String> {
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

        let value: u64 =
            boundary!(report: &ErrorPrint::new(), failure: u64::MAX, { panic!("{}", String::from("formatted")) });
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
    }
}
