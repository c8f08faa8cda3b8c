//! Sequences of C API calls with hostile arguments: NULL VMs, code, names,
//! buffers and out-pointers; lengths that do not match what the library
//! expects (never longer than the memory passed, which the C contract
//! forbids); calls in any order (running, compiling or reading maps with
//! nothing loaded, loading twice, using map handles after the program
//! went). Every call must return its failure value, never panic or crash.
//! Where a raw program with only deterministic helpers runs, ubpf_exec()
//! and the compiled function must agree on the result and the memory.

#![no_main]

mod common;

use std::ffi::{CString, c_char, c_int, c_uint};
use std::ptr;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::capi::maps::*;
use qemu_ubpf::capi::vm::*;
use qemu_ubpf::testing::engines;

const OBJECTS: [&[u8]; 4] = [
    include_bytes!("../../examples/drop_1_1_1_1.o"),
    include_bytes!("../../examples/dispatcher.o"),
    include_bytes!("../../examples/prefix_blocklist.o"),
    include_bytes!("../../tests/fixtures/maps.o"),
];
const VMS: usize = 3;

unsafe extern "C" {
    static mut stderr: *mut libc::FILE;
    /// Exported by the library, from a module Rust cannot name.
    fn ubpf_last_error() -> *mut c_char;
}

extern "C" fn helper(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a.wrapping_mul(31) ^ b.rotate_left(7) ^ c.wrapping_add(d) ^ e
}

type CompileEx = unsafe extern "C" fn(*mut ubpf_vm, *mut *mut c_char, c_uint) -> ubpf_jit_fn;
type TranslateEx = unsafe extern "C" fn(*mut ubpf_vm, *mut u8, *mut usize, *mut *mut c_char, c_uint) -> c_int;

#[derive(Default)]
struct Slot {
    vm: Option<*mut ubpf_vm>,
    /// Loaded from raw bytecode with no helpers but `helper`: both engines
    /// must agree on it.
    comparable: bool,
    may_compare: bool,
    jit: ubpf_jit_fn,
}

/// A message from the library, which the caller frees.
fn free(message: *mut c_char) {
    // SAFETY: NULL or a string from malloc, freed once.
    unsafe { libc::free(message.cast()) };
}

/// A NUL-terminated copy of up to `len` fuzzer bytes.
fn c_string(bytes: &[u8]) -> CString {
    CString::new(bytes.iter().map(|&b| b.max(1)).collect::<Vec<_>>()).expect("no NUL")
}

fuzz_target!(|data: &[u8]| {
    static QUIET: Once = Once::new();
    // The library hands `stderr` to an embedder's printer: point it at
    // /dev/null, so that libc's fprintf as the printer writes nowhere.
    QUIET.call_once(|| {
        // SAFETY: at start, before any thread of the target reads stderr.
        unsafe { stderr = libc::fopen(c"/dev/null".as_ptr(), c"w".as_ptr()) };
    });
    let mut bytes = common::Bytes(data);
    let mut slots: [Slot; VMS] = Default::default();
    let mut maps: Vec<*mut ubpf_map> = Vec::new();
    let mut key = [0u8; 600];
    let mut value = [0u8; 1024];
    let mut code_buffer = vec![0u8; 1 << 16];
    let compile_ex: CompileEx = unsafe { std::mem::transmute(ubpf_compile_ex as *const ()) };
    let translate_ex: TranslateEx = unsafe { std::mem::transmute(ubpf_translate_ex as *const ()) };

    while !bytes.0.is_empty() {
        let op = bytes.u8();
        let index = usize::from(bytes.u8()) % VMS;
        // The VM, or NULL (a slot with none, or one in eight calls).
        let null_vm = bytes.u8().is_multiple_of(8);
        let vm = if null_vm { ptr::null_mut() } else { slots[index].vm.unwrap_or(ptr::null_mut()) };
        let mut errmsg: *mut c_char = ptr::null_mut();
        let errmsg_arg = if op & 0x80 != 0 { ptr::null_mut() } else { &mut errmsg as *mut _ };
        // SAFETY (each call below): pointers are NULL, a live VM or map
        // handle, or point at buffers at least as long as the length passed.
        unsafe {
            match op % 32 {
                0 => {
                    if slots[index].vm.is_none() {
                        slots[index] = Slot { vm: Some(ubpf_create()), may_compare: true, ..Slot::default() };
                    }
                }
                1 => {
                    ubpf_destroy(vm);
                    if !vm.is_null() {
                        slots[index] = Slot::default();
                    }
                }
                2 | 3 => {
                    let len = usize::from(bytes.u8()) * 8 + usize::from(bytes.u8().is_multiple_of(8));
                    let code = bytes.take(len);
                    let code_ptr = if bytes.u8().is_multiple_of(16) { ptr::null() } else { code.as_ptr().cast() };
                    let loaded = ubpf_load(vm, code_ptr, code.len() as u32, errmsg_arg) == 0;
                    if loaded && !vm.is_null() {
                        slots[index].comparable = slots[index].may_compare;
                    }
                }
                4 => {
                    let object = match bytes.u8() {
                        0..=200 => OBJECTS[usize::from(bytes.u8()) % OBJECTS.len()],
                        len => bytes.take(usize::from(len) * 16),
                    };
                    let name = match bytes.u8() % 4 {
                        0 => {
                            let len = usize::from(bytes.u8() % 16);
                            Some(c_string(bytes.take(len)))
                        }
                        1 => Some(CString::new("xdp").unwrap()),
                        _ => None,
                    };
                    let name = name.as_ref().map_or(ptr::null(), |name| name.as_ptr());
                    ubpf_load_elf_ex(vm, object.as_ptr().cast(), object.len(), name, errmsg_arg);
                }
                5 => {
                    let count = usize::from(bytes.u8());
                    let insns = bytes.take(count * 8);
                    if ubpf_load_cbpf(vm, insns.as_ptr().cast(), (insns.len() / 8) as u32, errmsg_arg) == 0
                        && !vm.is_null()
                    {
                        slots[index].comparable = true;
                    }
                }
                6 => {
                    ubpf_unload_code(vm);
                    if !vm.is_null() {
                        slots[index].comparable = false;
                        slots[index].jit = None;
                    }
                }
                7 | 8 => {
                    let len = usize::from(bytes.u8());
                    let mut mem = bytes.take(len).to_vec();
                    let mem_ptr =
                        if mem.is_empty() && bytes.u8().is_multiple_of(2) { ptr::null_mut() } else { mem.as_mut_ptr() };
                    let mut r0 = 0u64;
                    let r0_ptr = if bytes.u8().is_multiple_of(16) { ptr::null_mut() } else { &mut r0 as *mut u64 };
                    let mut jit_mem = mem.clone();
                    // Both engines then find the same bytes on the stack.
                    engines::reset_thread_stack();
                    let status = ubpf_exec(vm, mem_ptr.cast(), mem.len(), r0_ptr);
                    let slot = &slots[index];
                    if let (false, true, Some(jit), false) = (null_vm, slot.comparable, slot.jit, r0_ptr.is_null()) {
                        let jit_ptr = if mem_ptr.is_null() { ptr::null_mut() } else { jit_mem.as_mut_ptr() };
                        engines::reset_thread_stack();
                        let native = jit(jit_ptr.cast(), jit_mem.len());
                        if status == 0 {
                            assert_eq!(native, r0, "ubpf_exec() and the compiled function disagree on r0");
                        } else {
                            assert_eq!(native, u64::MAX, "ubpf_exec() failed, the compiled function did not");
                        }
                        assert_eq!(mem, jit_mem, "ubpf_exec() and the compiled function left memory differently");
                    }
                }
                9 => {
                    let jit = ubpf_compile(vm, errmsg_arg);
                    if !vm.is_null() && jit.is_some() {
                        slots[index].jit = jit;
                    }
                }
                10 => {
                    let mode = [0, 1, u32::from(bytes.u8()), u32::MAX][usize::from(bytes.u8()) % 4];
                    let jit = compile_ex(vm, errmsg_arg, mode);
                    if !vm.is_null() && jit.is_some() && mode == 1 {
                        slots[index].jit = jit;
                    }
                }
                11 => {
                    let size = usize::from(bytes.u8()) * 4;
                    let buffer = if bytes.u8().is_multiple_of(8) { ptr::null_mut() } else { code_buffer.as_mut_ptr() };
                    ubpf_copy_jit(vm, buffer.cast(), size, errmsg_arg);
                }
                12 => {
                    let mut size = usize::from(bytes.u8()) * 64;
                    let size_ptr = if bytes.u8().is_multiple_of(8) { ptr::null_mut() } else { &mut size as *mut usize };
                    let buffer = if bytes.u8().is_multiple_of(8) { ptr::null_mut() } else { code_buffer.as_mut_ptr() };
                    if bytes.u8().is_multiple_of(2) {
                        ubpf_translate(vm, buffer, size_ptr, errmsg_arg);
                    } else {
                        translate_ex(vm, buffer, size_ptr, errmsg_arg, u32::from(bytes.u8() % 3));
                    }
                }
                13 => {
                    let helper_index = match bytes.u8() {
                        0..=63 => u32::from(bytes.u8()) % 16,
                        _ => bytes.u32(),
                    };
                    let name = match bytes.u8() % 3 {
                        0 => None,
                        1 => Some(c_string(b"helper")),
                        _ => Some(c_string(bytes.take(8))),
                    };
                    let name = name.as_ref().map_or(ptr::null(), |name| name.as_ptr());
                    let func = if bytes.u8().is_multiple_of(8) { None } else { Some(helper as _) };
                    ubpf_register(vm, helper_index, name, func);
                }
                14 => {
                    if ubpf_register_linux_helpers(vm) == 0 && !vm.is_null() {
                        slots[index].may_compare = false;
                    }
                }
                15 => {
                    let _ = ubpf_set_unwind_function_index(vm, bytes.u32() % 64);
                }
                16 => {
                    let mut previous = 0u32;
                    let previous_ptr =
                        if bytes.u8().is_multiple_of(2) { ptr::null_mut() } else { &mut previous as *mut u32 };
                    // Not 0, no limit at all: a loop would then run for ever.
                    let limit = [1, 100, u32::from(bytes.u8()).max(1), 20_000][usize::from(bytes.u8()) % 4];
                    ubpf_set_instruction_limit(vm, limit, previous_ptr);
                }
                17 => {
                    let _ = (
                        ubpf_toggle_bounds_check(vm, bytes.u8().is_multiple_of(2)),
                        ubpf_toggle_undefined_behavior_check(vm, true),
                    );
                }
                18 => {
                    let printer = if bytes.u8().is_multiple_of(2) { None } else { Some(libc::fprintf as _) };
                    ubpf_set_error_print(vm, printer);
                }
                19 => {
                    let other = slots[usize::from(bytes.u8()) % VMS].vm.unwrap_or(ptr::null_mut());
                    ubpf_reuse_maps(vm, other);
                }
                20 => {
                    let _ = (ubpf_map_count(vm), ubpf_set_jit_code_size(vm, usize::from(bytes.u8()) << 8));
                }
                21 => {
                    let map = ubpf_map_get_by_index(vm, u32::from(bytes.u8() % 8));
                    if !map.is_null() {
                        maps.push(map);
                    }
                }
                22 => {
                    let names: [&[u8]; 5] = [b"counters", b"blocklist", b"jump_table", b"events", b""];
                    let name = c_string(names[usize::from(bytes.u8()) % names.len()]);
                    let name_ptr = if bytes.u8().is_multiple_of(8) { ptr::null() } else { name.as_ptr() };
                    let map = ubpf_map_get(vm, name_ptr);
                    if !map.is_null() {
                        maps.push(map);
                    }
                }
                23..=27 => {
                    let map = match bytes.u8() {
                        0..=15 => ptr::null_mut(),
                        at => maps.get(usize::from(at) % maps.len().max(1)).copied().unwrap_or(ptr::null_mut()),
                    };
                    let key_size = usize::from(bytes.u8()) % 16 + if bytes.u8() == 0 { 500 } else { 0 };
                    let value_size = usize::from(bytes.u8()) % 16 + if bytes.u8() == 0 { 1000 } else { 0 };
                    let filled = bytes.take(key_size);
                    key[..filled.len()].copy_from_slice(filled);
                    let key_ptr: *mut u8 =
                        if bytes.u8().is_multiple_of(8) { ptr::null_mut() } else { key.as_mut_ptr() };
                    let value_ptr: *mut u8 =
                        if bytes.u8().is_multiple_of(8) { ptr::null_mut() } else { value.as_mut_ptr() };
                    match op % 32 {
                        23 => {
                            let _ = ubpf_map_lookup(map, key_ptr.cast(), key_size, value_ptr.cast(), value_size);
                        }
                        24 => {
                            let _ = ubpf_map_update(
                                map,
                                key_ptr.cast(),
                                key_size,
                                value_ptr.cast(),
                                value_size,
                                u64::from(bytes.u8() % 5),
                            );
                        }
                        25 => {
                            let _ = ubpf_map_delete(map, key_ptr.cast(), key_size);
                        }
                        26 => {
                            let mut next = [0u8; 600];
                            let next_ptr: *mut u8 =
                                if bytes.u8().is_multiple_of(8) { ptr::null_mut() } else { next.as_mut_ptr() };
                            let _ = ubpf_map_next_key(map, key_ptr.cast(), next_ptr.cast(), key_size);
                        }
                        _ => {
                            let mut len = 0usize;
                            let len_ptr =
                                if bytes.u8().is_multiple_of(2) { ptr::null_mut() } else { &mut len as *mut usize };
                            let _ = ubpf_ringbuf_read(map, value_ptr.cast(), value_size, len_ptr);
                            let mut info = std::mem::zeroed::<ubpf_map_info>();
                            let _ = (
                                ubpf_map_info(map, &mut info),
                                ubpf_map_info(map, ptr::null_mut()),
                                ubpf_map_name(map),
                            );
                        }
                    }
                }
                28 => {
                    if !maps.is_empty() {
                        let at = usize::from(bytes.u8()) % maps.len();
                        ubpf_map_release(maps.swap_remove(at));
                    }
                    ubpf_map_release(ptr::null_mut());
                }
                29 => free(ubpf_maps_json(vm)),
                30 => {
                    let len = usize::from(bytes.u8());
                    let text = c_string(bytes.take(len));
                    let text_ptr = if bytes.u8().is_multiple_of(8) { ptr::null() } else { text.as_ptr() };
                    ubpf_maps_update_json(vm, text_ptr, errmsg_arg);
                }
                _ => {
                    let mut registers = [0u64; 16];
                    ubpf_set_registers(vm, registers.as_mut_ptr());
                    let _ = ubpf_get_registers(vm);
                    ubpf_set_registers(vm, ptr::null_mut());
                    let _ = ubpf_set_pointer_secret(vm, bytes.u32().into());
                    free(ubpf_last_error());
                }
            }
        }
        free(errmsg);
    }
    for map in maps {
        // SAFETY: handles not yet released, released once.
        unsafe { ubpf_map_release(map) };
    }
    for slot in slots {
        if let Some(vm) = slot.vm {
            // SAFETY: a live VM, destroyed once.
            unsafe { ubpf_destroy(vm) };
        }
    }
});
