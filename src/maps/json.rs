//! Maps as JSON, for `qemu-ubpf replay --maps`, `--map-init` and the C
//! API's dump: keys and values are hex strings of their bytes in memory
//! order (as the program sees them, so a `__u32` 6 on x86-64 is
//! `"06000000"`).
//!
//! A dump is `{"maps": [{"name", "type", "key_size", "value_size",
//! "max_entries", "flags", "entries": [{"key", "value"}]}]}`; a per-CPU
//! map's value is a list, one value per possible CPU in the order of their
//! numbers (`"cpus"` says how many); an array lists only its entries whose
//! value is not all zeros (on every CPU), a devmap or cpumap its filled
//! slots, a ring buffer gives
//! `"records"` (taken from it) instead of entries, a queue or stack its
//! elements as `"values"` (peeked, not taken), and a prog array the slots
//! that hold a program.
//!
//! An init file is `{"MAP": [{"key": K, "value": V}, ...], ...}`: K and V
//! are hex strings as above, unsigned integers (stored in the map's key or
//! value size, in host byte order), or, for an LPM trie with 4-byte
//! addresses, `"a.b.c.d/len"` keys. For a per-CPU map, V given once goes
//! to every CPU, as bpftool does; a list of V gives each CPU its own, one
//! per possible CPU.

use serde_json::{Map as JsonObject, Value, json};

use super::Map;
use crate::image::MapType;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One map's dump.
pub fn dump(map: &Map) -> Value {
    let def = map.def();
    let mut object = JsonObject::new();
    object.insert("name".into(), json!(map.name()));
    object.insert("type".into(), json!(map.map_type().name()));
    object.insert("key_size".into(), json!(def.key_size));
    object.insert("value_size".into(), json!(def.value_size));
    object.insert("max_entries".into(), json!(def.max_entries));
    object.insert("flags".into(), json!(def.flags));
    if map.map_type().is_per_cpu() {
        object.insert("cpus".into(), json!(map.cpus()));
    }
    match map.map_type() {
        MapType::RingBuf | MapType::PerfEventArray => {
            let records = map.ringbuf_drain().unwrap_or_default();
            object.insert("records".into(), records.iter().map(|record| json!(hex(record))).collect());
        }
        MapType::Queue | MapType::Stack => {
            object.insert("values".into(), map.peek_all().iter().map(|value| json!(hex(value))).collect());
        }
        MapType::ProgArray => {
            let slots: Vec<Value> = map.keys().iter().map(|key| json!(hex(key))).collect();
            object.insert("programs".into(), slots.into());
        }
        map_type => {
            let mut entries = Vec::new();
            for key in map.keys() {
                let Ok(Some(value)) = map.lookup(&key) else { continue };
                let array = matches!(map_type, MapType::Array | MapType::PerCpuArray);
                if array && value.iter().all(|&byte| byte == 0) {
                    continue;
                }
                entries.push(json!({"key": hex(&key), "value": value_json(map, &value)}));
            }
            object.insert("entries".into(), entries.into());
        }
    }
    Value::Object(object)
}

/// A value as the host reads it ([`Map::lookup`]) in JSON: hex, or for a
/// per-CPU map a list of each CPU's value (without the padding to 8 bytes
/// that separates them in memory).
pub fn value_json(map: &Map, value: &[u8]) -> Value {
    if !map.map_type().is_per_cpu() {
        return json!(hex(value));
    }
    let size = map.def().value_size as usize;
    let stride = value.len() / map.cpus().max(1);
    value.chunks_exact(stride.max(1)).map(|chunk| json!(hex(&chunk[..size.min(chunk.len())]))).collect()
}

/// Every map's dump, as `{"maps": [...]}`.
pub fn dump_all<'a>(maps: impl IntoIterator<Item = &'a std::sync::Arc<Map>>) -> Value {
    json!({"maps": maps.into_iter().map(|map| dump(map)).collect::<Vec<_>>()})
}

/// Why an init file could not be applied: the map and entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("the top level must be an object of map names")]
    NotAnObject,
    #[error("no map named {0:?}")]
    NoSuchMap(String),
    #[error("map {map}, entry {entry}: {what}")]
    Entry { map: String, entry: usize, what: String },
}

/// Fills `maps` from the init file `text`; returns the entries stored.
pub fn init(maps: &[std::sync::Arc<Map>], text: &str) -> Result<usize, InitError> {
    let value: Value = serde_json::from_str(text).map_err(|error| InitError::Json(error.to_string()))?;
    let Value::Object(by_name) = value else { return Err(InitError::NotAnObject) };
    let mut stored = 0;
    for (name, entries) in &by_name {
        let map = maps.iter().find(|map| map.name() == name).ok_or_else(|| InitError::NoSuchMap(name.clone()))?;
        let Value::Array(entries) = entries else {
            return Err(InitError::Entry { map: name.clone(), entry: 0, what: "not a list of entries".into() });
        };
        for (index, entry) in entries.iter().enumerate() {
            let bad = |what: String| InitError::Entry { map: name.clone(), entry: index, what };
            let field = |field: &str| entry.get(field).ok_or_else(|| bad(format!("no \"{field}\"")));
            let def = map.def();
            let key = bytes(field("key")?, def.key_size as usize, map.map_type() == MapType::LpmTrie).map_err(&bad)?;
            let value = host_value(map, field("value")?).map_err(&bad)?;
            let result = match map.map_type() {
                MapType::Queue | MapType::Stack => map.push(&value, 0),
                _ => map.update(&key, &value, super::BPF_ANY),
            };
            result.map_err(|error| bad(error.to_string()))?;
            stored += 1;
        }
    }
    Ok(stored)
}

/// The value as the host stores it ([`Map::update`]): for a per-CPU map,
/// one value (for every CPU) or a list of one per CPU, each padded to 8
/// bytes.
fn host_value(map: &Map, value: &Value) -> Result<Vec<u8>, String> {
    let size = map.def().value_size as usize;
    if !map.map_type().is_per_cpu() {
        return bytes(value, size, false);
    }
    let cpus = map.cpus();
    let per_cpu: Vec<Vec<u8>> = match value {
        Value::Array(values) if values.len() == cpus => {
            values.iter().map(|value| bytes(value, size, false)).collect::<Result<_, _>>()?
        }
        Value::Array(values) => {
            return Err(format!("{} values for a per-CPU map of {cpus} possible CPUs", values.len()));
        }
        value => vec![bytes(value, size, false)?; cpus],
    };
    let stride = size.div_ceil(8) * 8;
    Ok(per_cpu.iter().flat_map(|value| [&value[..], &vec![0; stride - size]].concat()).collect())
}

/// The bytes `value` stands for, `size` of them.
fn bytes(value: &Value, size: usize, lpm: bool) -> Result<Vec<u8>, String> {
    match value {
        Value::Number(number) => {
            let number = number.as_u64().ok_or_else(|| format!("{number} is not an unsigned integer"))?;
            let bytes = number.to_ne_bytes();
            let fits = size >= 8 || number >> (size * 8) == 0;
            if !fits || size == 0 {
                return Err(format!("{number} does not fit in {size} bytes"));
            }
            let mut out = vec![0; size];
            let len = size.min(8);
            if cfg!(target_endian = "little") {
                out[..len].copy_from_slice(&bytes[..len]);
            } else {
                out[size - len..].copy_from_slice(&bytes[8 - len..]);
            }
            Ok(out)
        }
        Value::String(text) if lpm && text.contains('/') => {
            let (address, length) = text.split_once('/').expect("contains /");
            let address: std::net::Ipv4Addr =
                address.parse().map_err(|_| format!("{address:?} is not an IPv4 address"))?;
            let length: u32 = length.parse().ok().filter(|&length| length <= 32).ok_or("bad prefix length")?;
            if size != 8 {
                return Err(format!("a.b.c.d/len keys need 4-byte addresses; this trie's keys are {size} bytes"));
            }
            Ok([&length.to_ne_bytes()[..], &address.octets()].concat())
        }
        Value::String(text) => {
            let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            if digits.len() != size * 2 || !digits.is_ascii() {
                return Err(format!("{text:?} is not {size} bytes of hex"));
            }
            (0..size)
                .map(|index| u8::from_str_radix(&digits[index * 2..index * 2 + 2], 16))
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{text:?} is not hex"))
        }
        other => Err(format!("{other} is neither a hex string nor a number")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::image::MapDef;
    use crate::maps::BPF_F_NO_PREALLOC;

    fn map(name: &str, map_type: MapType, key_size: u32, value_size: u32, flags: u32) -> Arc<Map> {
        let def = MapDef {
            name: name.into(),
            map_type: map_type as u32,
            key_size,
            value_size,
            max_entries: 4,
            flags,
            initial_programs: Vec::new(),
        };
        Arc::new(Map::new(def).unwrap())
    }

    #[test]
    fn init_then_dump() {
        let maps = [map("counts", MapType::Array, 4, 8, 0), map("block", MapType::LpmTrie, 8, 4, BPF_F_NO_PREALLOC)];
        let text = r#"{"counts": [{"key": 2, "value": "0100000000000000"}],
                       "block": [{"key": "10.0.0.0/8", "value": 3}]}"#;
        assert_eq!(init(&maps, text), Ok(2));
        let dump = dump_all(&maps);
        assert_eq!(dump["maps"][0]["entries"], json!([{"key": hex(&2u32.to_ne_bytes()), "value": "0100000000000000"}]));
        assert_eq!(dump["maps"][1]["type"], "lpm_trie");
        assert_eq!(dump["maps"][1]["entries"][0]["value"], hex(&3u32.to_ne_bytes()));
        assert!(matches!(init(&maps, r#"{"nope": []}"#), Err(InitError::NoSuchMap(_))));
        let error = init(&maps, r#"{"counts": [{"key": 9, "value": 1}]}"#).unwrap_err();
        assert!(matches!(error, InitError::Entry { entry: 0, .. }), "{error}");
        assert!(init(&maps, r#"{"counts": [{"key": 4294967296, "value": 1}]}"#).is_err());
    }

    #[test]
    fn per_cpu_values_once_for_every_cpu_or_one_each() {
        let cpus = crate::maps::cpus::count();
        let maps = [map("hits", MapType::PerCpuHash, 4, 4, 0)];
        assert_eq!(init(&maps, r#"{"hits": [{"key": 1, "value": 7}]}"#), Ok(1));
        let each: Vec<u32> = (0..cpus as u32).map(|cpu| cpu + 10).collect();
        let text = json!({"hits": [{"key": 2, "value": each}]}).to_string();
        assert_eq!(init(&maps, &text), Ok(1));
        let dump = dump_all(&maps);
        assert_eq!(dump["maps"][0]["cpus"], cpus);
        let entries = &dump["maps"][0]["entries"];
        assert_eq!(entries[0]["value"], json!(vec![hex(&7u32.to_ne_bytes()); cpus]));
        let each_hex: Vec<String> = each.iter().map(|value| hex(&value.to_ne_bytes())).collect();
        assert_eq!(entries[1]["value"], json!(each_hex));
        let too_many = json!({"hits": [{"key": 3, "value": vec![1; cpus + 1]}]}).to_string();
        assert!(matches!(init(&maps, &too_many), Err(InitError::Entry { entry: 0, .. })));
    }
}
