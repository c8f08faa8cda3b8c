//! The engine a replay runs programs in.

use std::sync::Arc;

use crate::error::ExecError;
use crate::interp::{self, Stack};
use crate::jit::{JitError, JitProgram, ReadOnlyRuns};
use crate::program::Program;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// Native code: the fast one, where the JIT has a backend.
    Jit,
    /// The interpreter: the reference semantics.
    Interpreter,
}

/// A loaded program, ready to run in the engine chosen for it.
pub enum Engine {
    Jit(JitProgram),
    Interpreter(Arc<Program>),
}

impl Engine {
    pub fn new(program: Program, kind: EngineKind) -> Result<Engine, JitError> {
        let program = Arc::new(program);
        Ok(match kind {
            EngineKind::Jit => Engine::Jit(JitProgram::compile(program)?),
            EngineKind::Interpreter => Engine::Interpreter(program),
        })
    }

    /// The program the engine runs (its maps, for the host).
    pub fn program(&self) -> &Arc<Program> {
        match self {
            Engine::Jit(jit) => jit.program(),
            Engine::Interpreter(program) => program,
        }
    }

    /// Runs the program over `packet` (r1 = its address, r2 = its length)
    /// with `stack` as its call frames, and returns r0. A caller that runs
    /// many packets keeps one stack for all, rather than look up the
    /// thread's own each time.
    #[inline]
    pub fn run(&self, packet: &mut [u8], stack: &mut Stack) -> Result<u64, ExecError> {
        let mut executed = 0;
        match self {
            Engine::Jit(jit) => jit.run(packet, stack, &mut executed),
            Engine::Interpreter(program) => interp::run(program, packet, stack, &mut executed),
        }
    }

    /// Runs of the program over packets in place, which spares copying
    /// each into memory it may write, when the engine can: in the JIT, a
    /// program that writes only its stack ([`JitProgram::read_only`]).
    /// `None` otherwise.
    #[inline]
    pub fn read_only<'a>(&'a self, stack: &'a mut Stack) -> Option<ReadOnlyRuns<'a>> {
        match self {
            Engine::Jit(jit) => jit.read_only(stack),
            Engine::Interpreter(_) => None,
        }
    }
}
