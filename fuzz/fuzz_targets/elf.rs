//! ELF objects: inspected, loaded whole (`Object::load`) and program by
//! program (`Program::from_elf`); every program that loads runs over a
//! small frame in both engines, which must agree. Seeded with the committed
//! objects and Debian's libbpf/xdp-tools objects (scripts/fuzz.sh).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::{Object, Program, elf};

/// Programs of one object run at most: a big object still takes little time.
const MAX_PROGRAMS_RUN: usize = 8;

fuzz_target!(|object: &[u8]| {
    let _ = elf::inspect(object);
    let helpers = common::helpers();
    let config = common::config();
    let names: Vec<String> = match Object::load(object, &helpers, &config) {
        Ok(loaded) => loaded.program_names().map(|(function, _)| function.to_owned()).collect(),
        Err(_) => Vec::new(),
    };
    common::compare(&common::FRAME, || Program::from_elf(object, None, &helpers, &config).ok());
    for name in names.iter().take(MAX_PROGRAMS_RUN) {
        let loaded = common::compare(&common::FRAME, || Program::from_elf(object, Some(name), &helpers, &config).ok());
        assert!(loaded.is_some(), "{name} loads in the object but not alone");
    }
});
