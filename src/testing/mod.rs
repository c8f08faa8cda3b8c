//! Test support, behind the `testing` feature: nothing here is part of the
//! library that C programs and QEMU link.
//!
//! - [`testgen`]: random valid programs, from seeds or a fuzzer's bytes;
//! - [`engines`]: the one comparison of the interpreter with the JIT, which
//!   the differential test, the fuzz target and the JIT's tests use;
//! - [`conformance`]: the bpf_conformance suite's vectors and helpers;
//! - [`kernelgen`]: random programs that the Linux kernel's verifier
//!   accepts, and [`kernel`], which runs them in the kernel (`bpf(2)`).

pub mod conformance;
pub mod engines;
pub mod kernel;
pub mod kernelgen;
pub mod testgen;
