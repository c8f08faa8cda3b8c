//! Test support, behind the `testing` feature: nothing here is part of the
//! library that C programs and QEMU link.
//!
//! - [`testgen`]: random valid programs, from seeds or a fuzzer's bytes, and
//!   the comparison of the interpreter's runs with the JIT's;
//! - [`conformance`]: the bpf_conformance suite's vectors and helpers.

pub mod conformance;
pub mod testgen;
