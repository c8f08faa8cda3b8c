//! Load-time refusals seen from outside: programs whose length is wrong.

use qemu_ubpf::{Config, Helpers, LoadErrorKind, Program};

#[test]
fn length_errors_name_no_instruction() {
    let error = Program::load(&[0; 100], &Helpers::new(), &Config::default()).unwrap_err();
    assert_eq!(error.kind, LoadErrorKind::PartialSlot(100));
    assert_eq!(error.to_string(), "the program is 100 bytes long, not a multiple of 8");
    let error = Program::load(&[], &Helpers::new(), &Config::default()).unwrap_err();
    assert_eq!(error.to_string(), "the program is empty");
}
