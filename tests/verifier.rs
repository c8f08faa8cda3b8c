//! Load-time refusals seen from outside: programs that can never finish,
//! and programs whose length is wrong.

use qemu_ubpf::{Config, Helpers, LoadErrorKind, Program, asm, isa};

fn load(source: &str) -> Result<Program, qemu_ubpf::LoadError> {
    let insns = asm::assemble(source).unwrap_or_else(|e| panic!("{e}\n{source}"));
    Program::load(&isa::encode_program(&insns), &Helpers::new(), &Config::default())
}

#[test]
fn a_jump_to_itself_is_refused_naming_instruction_0() {
    let error = load("ja -1\nexit").unwrap_err();
    assert_eq!((error.pc, error.kind), (0, LoadErrorKind::EndlessLoop { pcs: vec![0] }));
}

#[test]
fn a_loop_with_no_way_out_is_refused_with_its_instructions() {
    let source = "
        mov %r0, 0
    again:
        add %r0, 1
        jgt %r0, 10, skip
        add %r0, 2
    skip:
        ja again
        exit";
    let error = load(source).unwrap_err();
    assert!(error.to_string().contains("instructions 1-4"), "{error}");
    assert_eq!((error.pc, error.kind), (1, LoadErrorKind::EndlessLoop { pcs: vec![1, 2, 3, 4] }));
    // The same loop with a way out loads; the budget stops it if it must.
    let leaves = source.replace("jgt %r0, 10, skip", "jgt %r0, 10, out").replace("exit", "out:\nexit");
    assert!(load(&leaves).is_ok());
}

#[test]
fn length_errors_name_no_instruction() {
    let error = Program::load(&[0; 100], &Helpers::new(), &Config::default()).unwrap_err();
    assert_eq!(error.kind, LoadErrorKind::PartialSlot(100));
    assert_eq!(error.to_string(), "the program is 100 bytes long, not a multiple of 8");
    let error = Program::load(&[], &Helpers::new(), &Config::default()).unwrap_err();
    assert_eq!(error.to_string(), "the program is empty");
}
