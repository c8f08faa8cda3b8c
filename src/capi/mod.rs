//! The C API: iovisor/ubpf's `ubpf.h`, with the same names, signatures and
//! semantics, for QEMU's `filter-ubpf` and any C program written for ubpf.
//! `include/ubpf.h` is generated from this module by cbindgen (see
//! `cbindgen.toml`; `tests/capi.rs` fails when the committed header is stale).
//!
//! Every item the library exports (`#[no_mangle]`) lives here, in five rooms:
//! - `boundary`: what every exported function runs in. `boundary!` catches
//!   panics (a panic must never unwind into C: it would abort QEMU), turns
//!   every failure into the C convention (-1, NULL or `UINT64_MAX`) with a
//!   message, and records the message for `ubpf_last_error`. Pointers from C
//!   are checked for NULL before use; messages for `char **errmsg` are
//!   allocated with `malloc`, so C frees them with `free`.
//! - [`vm`]: `struct ubpf_vm` and the calls on it: helpers, loading, runs,
//!   compiling, settings.
//! - `native`: the native entry points that ubpf_compile() returns.
//! - [`maps`]: the host's view of a loaded program's maps.
//! - [`xdp`]: XDP runs: the context block, ubpf_exec_xdp().
//!
//! Thread safety, as the header documents it: the calls that only read a
//! loaded VM (running it, compiling it, copying its code) may run at the same
//! time from any threads, so they take `&ubpf_vm` and keep the lazily built
//! native code behind a mutex; the calls that change the VM take `&mut` and
//! the caller must not overlap them with any other call on that VM.

#![allow(non_camel_case_types)]

use std::ffi::c_int;

use crate::isa::{MAX_CALL_DEPTH, STACK_FRAME_SIZE};

// The rooms in the header's order: cbindgen writes the functions in the
// order it reads them, this module first, then each room as declared here.
pub mod vm;

pub mod maps;

pub mod xdp;

mod boundary;

mod native;

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
