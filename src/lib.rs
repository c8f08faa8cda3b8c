//! qemu-ubpf: a userspace eBPF runtime (RFC 9669) for QEMU's `filter-ubpf`
//! network filter and for any C program that embeds iovisor/ubpf.
//!
//! Stages, one module each: [`isa`] (the opcode table everything reads),
//! [`asm`] and [`disasm`], [`elf`] (clang objects), [`verifier`] (load-time
//! checks), [`interp`] (the reference semantics), [`jit`], [`helpers`]
//! (with Linux's built-ins), [`maps`], [`program`] (a loaded program),
//! [`object`] (every program of an ELF object over one set of maps),
//! [`error`], [`ffi`] (the C API), [`replay`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod asm;
pub mod cbpf;
pub mod conformance;
pub mod disasm;
pub mod elf;
pub mod error;
pub mod ffi;
pub mod helpers;
pub mod interp;
pub mod isa;
pub mod jit;
pub mod maps;
pub mod object;
pub mod program;
pub mod replay;
#[doc(hidden)]
pub mod testgen;
pub mod verifier;

pub use error::{AsmError, ElfError, Error, ExecError, ExecErrorKind, LoadError, LoadErrorKind};
pub use helpers::{HelperFn, Helpers};
pub use maps::{Map, MapDef, MapError, MapOpError, MapType};
pub use object::Object;
pub use program::{Config, Image, Program, Region};
