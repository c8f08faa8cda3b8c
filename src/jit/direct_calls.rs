//! Calls of XDP helpers that the code makes to their direct forms
//! ([`crate::helpers::xdp::direct`]): the helpers that move the packet's
//! bounds, and `bpf_redirect`, need nothing of the run but its input, so
//! the code passes that itself and stops the run, at the call, when the
//! helper refuses the context block ([`super::Status::HelperFault`]). No
//! run state, no stop word: a program whose only run-stopping helpers are
//! these and the map lookups the code makes itself takes the direct C
//! entry.

use crate::helpers::xdp::{self, DirectFn};
use crate::image::ProgramType;
use crate::isa::*;
use crate::program::Program;

/// The direct form the code calls for the helper call `insn`, if any: the
/// built-in XDP helper the program has at that index, in an XDP program
/// (the direct forms check no program type), unless the embedder made it
/// the unwind helper.
pub(crate) fn plan(program: &Program, insn: Insn) -> Option<DirectFn> {
    if insn.opc != CALL || insn.src != CALL_HELPER || program.program_type() != ProgramType::Xdp {
        return None;
    }
    let index = insn.imm as u32;
    if program.unwind_helper() == Some(index) {
        return None;
    }
    xdp::direct(program.helper(u64::from(index))?)
}

/// Does the code call any helper in its direct form? Then its prologue
/// keeps the input for them in the context.
pub(crate) fn any(program: &Program) -> bool {
    program.insns().iter().any(|&insn| plan(program, insn).is_some())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::helpers::Helpers;
    use crate::jit::JitProgram;
    use crate::program::Config;

    fn load(object: &[u8], helpers: &Helpers) -> Arc<Program> {
        Arc::new(Program::from_elf(object, None, helpers, &Config::default()).expect("loads"))
    }

    #[test]
    fn examples_whose_helpers_all_have_direct_forms_take_the_direct_entry() {
        // vlan_pop moves the head; truncate looks its setting up (the
        // code's own lookup) and moves the tail. dnat's csum_diff and
        // redirect's bpf_redirect_map still need a run state.
        for (name, object, direct) in [
            ("vlan_pop", &include_bytes!("../../examples/xdp/vlan_pop.o")[..], true),
            ("truncate", &include_bytes!("../../examples/xdp/truncate.o")[..], true),
            ("dnat", &include_bytes!("../../examples/xdp/dnat.o")[..], false),
            ("redirect", &include_bytes!("../../examples/xdp/redirect.o")[..], false),
        ] {
            let jit = JitProgram::compile(load(object, &Helpers::linux())).expect("compiles");
            assert_eq!(jit.runs_without_rust(), direct, "{name}");
        }
    }

    #[test]
    fn a_helper_the_embedder_replaced_is_called_as_registered() {
        extern "C" fn mine(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
            7
        }
        let object = include_bytes!("../../examples/xdp/vlan_pop.o");
        let call = Insn::new(CALL, 0, CALL_HELPER, 0, crate::helpers::linux::XDP_ADJUST_HEAD as i32);
        assert!(plan(&load(object, &Helpers::linux()), call).is_some());
        let mut helpers = Helpers::linux();
        helpers.register(crate::helpers::linux::XDP_ADJUST_HEAD, "mine", mine);
        assert!(plan(&load(object, &helpers), call).is_none());
    }
}
