//! For an architecture the JIT has no backend for: compiling fails, so
//! programs run in the interpreter.

use super::{DirectExits, JitError, MachineCode, MachineCodeForC};
use crate::program::Program;

pub(super) fn compile(_program: &Program) -> Result<MachineCode, JitError> {
    Err(JitError::Unsupported(std::env::consts::ARCH))
}

pub(super) fn compile_for_c(_program: &Program, _exits: &DirectExits) -> Result<MachineCodeForC, JitError> {
    Err(JitError::Unsupported(std::env::consts::ARCH))
}
