//! Test support, behind the `testing` feature: nothing here is part of the
//! library that C programs and QEMU link.
//!
//! - [`testgen`]: random valid programs, from seeds or a fuzzer's bytes;
//! - [`engines`]: the one comparison of the interpreter with the JIT, which
//!   the differential test, the fuzz target and the JIT's tests use;
//! - [`conformance`]: the bpf_conformance suite's vectors and helpers.

pub mod conformance;
pub mod engines;
pub mod testgen;
