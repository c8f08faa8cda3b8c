//! Helper calls the code makes without a run state, to functions that need
//! nothing of the run but their arguments and its input:
//! - the direct forms of the XDP helpers that move the packet's bounds,
//!   and of `bpf_redirect` ([`crate::helpers::xdp::direct`]): the code
//!   passes the input itself and stops the run, at the call, when the
//!   helper refuses its arguments ([`super::Status::HelperFault`]);
//! - `bpf_redirect_map`'s direct form, where the facts say that r1 is one
//!   of the program's devmaps or devmap-hashes;
//! - `bpf_csum_diff` as it is, but without its checks, where the facts say
//!   that both buffers lie in the current stack frame.
//!
//! No run state, no stop word: a program whose only run-stopping helpers
//! are these and the map lookups the code makes itself takes the direct C
//! entry.

use super::facts::{Facts, Value};
use crate::helpers::builtin::{self, csum_diff_proved};
use crate::helpers::xdp::{self, DirectFn, redirect_map_direct};
use crate::image::{MapType, ProgramType};
use crate::isa::*;
use crate::program::Program;

/// A helper call the code makes without a run state.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DirectCall {
    /// A direct form, with r1-r3 and the input (see [`DirectFn`]).
    Form(DirectFn),
    /// A helper that cannot fail or stop the run, called with r1-r5.
    Plain(unsafe extern "C" fn(u64, u64, u64, u64, u64) -> u64),
}

/// How the code calls the helper at the call `insn`, given the facts
/// before it, when it needs no run state; unless the embedder made the
/// helper the unwind helper.
pub(crate) fn plan(program: &Program, facts: &Facts, insn: Insn) -> Option<DirectCall> {
    if insn.opc != CALL || insn.src != CALL_HELPER {
        return None;
    }
    let index = insn.imm as u32;
    if program.unwind_helper() == Some(index) {
        return None;
    }
    let helper = program.helper(u64::from(index))?;
    if builtin::is_csum_diff(helper) {
        let in_frame = |pointer: u8, size: u8| match (facts.value(pointer), facts.value(size)) {
            (Value::Frame(start), Value::Const(len)) => {
                start >= -(STACK_FRAME_SIZE as i64) && len <= STACK_FRAME_SIZE as u64 && start + len as i64 <= 0
            }
            _ => false,
        };
        return (in_frame(1, 2) && in_frame(3, 4)).then_some(DirectCall::Plain(csum_diff_proved));
    }
    // The direct forms of the XDP helpers check no program type.
    if program.program_type() != ProgramType::Xdp {
        return None;
    }
    if xdp::is_redirect_map(helper) {
        let Value::Const(handle) = facts.value(1) else { return None };
        let devmap = program
            .maps()
            .iter()
            .any(|map| map.handle() == handle && matches!(map.map_type(), MapType::DevMap | MapType::DevMapHash));
        return devmap.then_some(DirectCall::Form(redirect_map_direct));
    }
    xdp::direct(helper).map(DirectCall::Form)
}

/// Does the code call a direct form (by instruction slot, as planned)?
/// Then its prologue keeps the input for them in the context.
pub(crate) fn need_input(direct_calls: &[Option<DirectCall>]) -> bool {
    direct_calls.iter().any(|call| matches!(call, Some(DirectCall::Form(_))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::helpers::Helpers;
    use crate::helpers::linux::{CSUM_DIFF, REDIRECT_MAP};
    use crate::jit::JitProgram;
    use crate::program::Config;

    fn load(object: &[u8], helpers: &Helpers) -> Arc<Program> {
        Arc::new(Program::from_elf(object, None, helpers, &Config::default()).expect("loads"))
    }

    #[test]
    fn examples_whose_helpers_all_have_direct_forms_take_the_direct_entry() {
        // vlan_pop moves the head; truncate looks its setting up (the
        // code's own lookup) and moves the tail; dnat sums buffers on its
        // stack with csum_diff; redirect calls bpf_redirect_map with its
        // devmap.
        for (name, object) in [
            ("vlan_pop", &include_bytes!("../../examples/xdp/vlan_pop.o")[..]),
            ("truncate", &include_bytes!("../../examples/xdp/truncate.o")[..]),
            ("dnat", &include_bytes!("../../examples/xdp/dnat.o")[..]),
            ("redirect", &include_bytes!("../../examples/xdp/redirect.o")[..]),
        ] {
            let jit = JitProgram::compile(load(object, &Helpers::linux())).expect("compiles");
            assert!(jit.runs_without_rust(), "{name}");
        }
    }

    #[test]
    fn csum_diff_and_redirect_map_need_their_arguments_proved() {
        // Nothing known of r1-r4: the buffers may lie anywhere, r1 may be
        // any map.
        for (helper, object) in [
            (CSUM_DIFF, &include_bytes!("../../examples/xdp/dnat.o")[..]),
            (REDIRECT_MAP, &include_bytes!("../../examples/xdp/redirect.o")[..]),
        ] {
            let call = Insn::new(CALL, 0, CALL_HELPER, 0, helper as i32);
            assert!(plan(&load(object, &Helpers::linux()), &Facts::fresh(), call).is_none(), "{helper}");
        }
    }

    #[test]
    fn a_helper_the_embedder_replaced_is_called_as_registered() {
        extern "C" fn mine(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
            7
        }
        let object = include_bytes!("../../examples/xdp/vlan_pop.o");
        let call = Insn::new(CALL, 0, CALL_HELPER, 0, crate::helpers::linux::XDP_ADJUST_HEAD as i32);
        assert!(plan(&load(object, &Helpers::linux()), &Facts::fresh(), call).is_some());
        let mut helpers = Helpers::linux();
        helpers.register(crate::helpers::linux::XDP_ADJUST_HEAD, "mine", mine);
        assert!(plan(&load(object, &helpers), &Facts::fresh(), call).is_none());
    }
}
