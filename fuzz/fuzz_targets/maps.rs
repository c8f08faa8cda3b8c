//! Maps: a `--map-init` file (`maps::json::init`, which QMP's `map-update`
//! and ubpf_maps_update_json() use too) over maps of every type, then a
//! sequence of map operations with keys and values of any length, then
//! the dump (`maps::json::dump_all`), which the init file's parser must
//! read back into fresh maps. Bytes: a map definition of the fuzzer's own,
//! the JSON text up to a NUL, then the operations.

#![no_main]

mod common;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qemu_ubpf::maps::json;
use qemu_ubpf::{Map, MapDef, MapType};

/// Bytes a map of the fuzzer's own may take: keeps runs fast.
const MAX_CUSTOM_BYTES: u64 = 1 << 22;

fn def(name: &str, map_type: MapType, key_size: u32, value_size: u32, max_entries: u32, flags: u32) -> MapDef {
    let (map_type, initial_programs) = (map_type as u32, Vec::new());
    MapDef { name: name.into(), map_type, key_size, value_size, max_entries, flags, initial_programs }
}

fn maps(custom: MapDef) -> Vec<Arc<Map>> {
    let mut defs = vec![
        def("array", MapType::Array, 4, 8, 8, 0),
        def("hash", MapType::Hash, 6, 4, 8, 0),
        def("lru", MapType::LruHash, 4, 2, 4, 0),
        def("lpm", MapType::LpmTrie, 8, 4, 8, 1),
        def("queue", MapType::Queue, 0, 4, 4, 0),
        def("stack", MapType::Stack, 0, 3, 4, 0),
        def("ringbuf", MapType::RingBuf, 0, 0, 4096, 0),
        def("progs", MapType::ProgArray, 4, 4, 4, 0),
    ];
    let bytes = u64::from(custom.max_entries) * (u64::from(custom.key_size) + u64::from(custom.value_size) + 64);
    if bytes <= MAX_CUSTOM_BYTES {
        defs.push(custom);
    }
    defs.into_iter().filter_map(|def| Map::new(def).ok()).map(Arc::new).collect()
}

/// Runs one operation the bytes describe on one of `maps`.
fn operate(maps: &[Arc<Map>], bytes: &mut common::Bytes, reserved: &mut Vec<u64>) {
    let map = &maps[usize::from(bytes.u8()) % maps.len()];
    let op = bytes.u8();
    let key_len = match bytes.u8() {
        0..=127 => map.def().key_size as usize,
        len => usize::from(len - 128),
    };
    let key = bytes.take(key_len).to_vec();
    let value_len = match bytes.u8() {
        0..=127 => map.def().value_size as usize,
        len => usize::from(len - 128),
    };
    let value = bytes.take(value_len).to_vec();
    let flags = u64::from(bytes.u8() % 6);
    match op % 12 {
        0 => {
            let _ = map.lookup(&key);
        }
        1 => {
            let _ = map.update(&key, &value, flags);
        }
        2 => {
            let _ = map.delete(&key);
        }
        3 => {
            let _ = map.next_key(Some(&key));
        }
        4 => {
            let _ = map.next_key(None);
        }
        5 => {
            let _ = map.push(&value, flags);
        }
        6 => {
            let _ = map.pop(flags & 1 == 0);
        }
        7 => {
            let _ = (map.keys(), map.peek_all(), map.ringbuf_pending());
        }
        8 => reserved.extend(map.ringbuf_reserve(u64::from(bytes.u32() % 8192)).ok()),
        9 => {
            let addr = reserved.pop().unwrap_or(0).wrapping_add(u64::from(bytes.u8() % 4) * 8);
            let _ = map.ringbuf_commit(addr, flags & 1 == 0);
        }
        10 => {
            let _ = map.ringbuf_next_within(usize::from(bytes.u8()));
        }
        _ => {
            let _ = map.lookup_addr(&key);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = common::Bytes(data);
    let custom_type = [1, 2, 3, 9, 11, 22, 23, 27, u32::from(bytes.u8())][usize::from(bytes.u8()) % 9];
    let custom = MapDef {
        name: "custom".into(),
        map_type: custom_type,
        key_size: u32::from(u16::from_le_bytes([bytes.u8(), bytes.u8()]) % 600),
        value_size: u32::from(u16::from_le_bytes([bytes.u8(), bytes.u8()])),
        max_entries: u32::from(u16::from_le_bytes([bytes.u8(), bytes.u8()])),
        flags: u32::from(bytes.u8()),
        initial_programs: Vec::new(),
    };
    let rest = bytes.rest();
    let (text, operations) = match rest.iter().position(|&byte| byte == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &[][..]),
    };
    let maps = maps(custom.clone());
    if let Ok(text) = std::str::from_utf8(text) {
        let _ = json::init(&maps, text);
    }
    let mut bytes = common::Bytes(operations);
    let mut reserved = Vec::new();
    while !bytes.0.is_empty() {
        operate(&maps, &mut bytes, &mut reserved);
    }
    // What a dump says, an init file of the same entries stores again.
    let dump = json::dump_all(&maps);
    let mut init = serde_json::Map::new();
    for map in dump["maps"].as_array().expect("a list of maps") {
        if let Some(entries) = map.get("entries") {
            init.insert(map["name"].as_str().expect("a name").to_owned(), entries.clone());
        }
    }
    let fresh = self::maps(custom);
    let text = serde_json::Value::Object(init).to_string();
    if let Err(error) = json::init(&fresh, &text) {
        panic!("a dump's entries do not store again: {error}\n{text}");
    }
    for (old, new) in maps.iter().zip(&fresh) {
        if old.map_type() != MapType::RingBuf && old.map_type() != MapType::Queue && old.map_type() != MapType::Stack {
            let sorted = |map: &Map| {
                let entries = json::dump(map)["entries"].as_array().cloned().unwrap_or_default();
                let mut entries: Vec<String> = entries.iter().map(|entry| entry.to_string()).collect();
                entries.sort();
                entries
            };
            assert_eq!(sorted(old), sorted(new), "map {}", old.name());
        }
    }
});
