//! What a code generator needs to know of a program before it starts:
//! its control flow, how each access is checked, and which runs of
//! instructions it may emit as one. Nothing here depends on the target.

use super::checks::Checks;
use super::flow::Flow;
use super::fusion::{self, Fusion};
use crate::program::Program;
use crate::scratch::Reused;

/// The plan a backend emits a program by.
pub(crate) struct Plan {
    pub(crate) flow: Flow,
    pub(crate) checks: Checks,
    /// For each instruction slot, the run that starts there and is emitted
    /// as one, if any.
    pub(crate) fusions: Reused<Option<Fusion>>,
}

impl Plan {
    pub(crate) fn new(program: &Program) -> Plan {
        let flow = Flow::new(program);
        let checks = Checks::plan(program, &flow);
        let fusions = fusion::plan(program.insns(), &flow, &checks);
        Plan { flow, checks, fusions }
    }
}
