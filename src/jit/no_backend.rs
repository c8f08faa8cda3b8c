//! For an architecture the JIT has no backend for: compiling fails, so
//! programs run in the interpreter.

use super::{JitError, MachineCode};
use crate::program::Program;

pub(super) fn compile(_program: &Program) -> Result<MachineCode, JitError> {
    Err(JitError::Unsupported(std::env::consts::ARCH))
}
