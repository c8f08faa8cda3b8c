//! qemu-ubpf: a userspace eBPF runtime (RFC 9669) for QEMU's `filter-ubpf`
//! network filter and for any C program that embeds iovisor/ubpf.
//!
//! Stages, one module each, each reading only those before it: [`isa`] (the
//! opcode table everything reads), [`error`], [`asm`] and [`disasm`],
//! [`image`] (code, data and maps before loading: plain values), [`memory`]
//! (the one access rule), [`elf`] (clang objects), [`verifier`] (load-time
//! checks), [`helpers`] (the registry; Linux's built-ins), [`maps`] and
//! [`program`] (a verified image; a prog array holds programs, so these two
//! read each other), [`object`] (the way from ELF bytes to programs),
//! [`interp`] (the reference semantics), [`jit`], [`capi`] (the C API);
//! behind features, `replay` (captures through filters, for the `qemu-ubpf`
//! command) and `testing` (program generator, conformance harness, engine
//! comparer).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod asm;
pub mod capi;
pub mod cbpf;
pub mod disasm;
pub mod elf;
pub mod error;
pub mod helpers;
pub mod image;
pub mod interp;
pub mod isa;
pub mod jit;
pub mod maps;
pub mod memory;
pub mod object;
pub mod program;
#[cfg(feature = "replay")]
pub mod replay;
mod scratch;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verifier;
pub mod xdp;

pub use error::{
    AsmError, AsmErrorKind, ElfError, Error, ExecError, ExecErrorKind, LoadError, LoadErrorKind, MapError,
};
pub use helpers::{HelperFn, Helpers};
pub use image::{Image, MapDef, MapType, ProgramType, Region};
pub use maps::{Map, MapOpError};
pub use object::Object;
pub use program::{Config, Program};
