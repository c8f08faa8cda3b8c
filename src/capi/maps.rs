//! The host's view of a loaded program's maps: handles, lookups, updates,
//! iteration, ring buffers, and the JSON form of `qemu-ubpf replay`.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::ptr;
use std::sync::Arc;

use super::boundary::{boundary, bytes, bytes_mut, c_str, malloc_string, without_nul};
use super::vm::{ubpf_vm, vm_ref};
use crate::image::MapType;
use crate::maps::{Map, MapOpError};

/// @brief A map of a loaded program, for the host: opaque; get one with
/// ubpf_map_get() or ubpf_map_get_by_index(), free it with
/// ubpf_map_release().
///
/// The handle keeps the map alive, even after the program is unloaded (it
/// is then no program's map any more). Not in ubpf.
pub struct ubpf_map {
    map: Arc<Map>,
    name: std::ffi::CString,
}

/// @brief What a map is: Linux's map type number (`BPF_MAP_TYPE_*`), its
/// sizes and flags.
#[repr(C)]
pub struct ubpf_map_info {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

fn map_handle(map: &Arc<Map>) -> *mut ubpf_map {
    let name = std::ffi::CString::new(without_nul(map.name()).as_bytes()).unwrap_or_default();
    Box::into_raw(Box::new(ubpf_map { map: map.clone(), name }))
}

/// The map behind a handle from C.
///
/// # Safety
/// `map` is NULL or a handle not yet released.
unsafe fn map_ref<'a>(map: *const ubpf_map) -> Result<&'a Map, String> {
    // SAFETY: the caller's contract.
    unsafe { map.as_ref() }.map(|handle| &*handle.map).ok_or_else(|| "the map is NULL".to_owned())
}

/// A map operation's result as C sees it: 0, or a negative errno.
fn map_status(result: Result<(), MapOpError>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(error) => -error.errno(),
    }
}

/// @brief The number of maps of the loaded program: those it declares,
/// then one per global data section (`.rodata`, `.data`, `.bss`, each an
/// array of one value), as libbpf counts them.
///
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @return The count; -1 when `vm` is NULL or has no program loaded.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_count(vm: *const ubpf_vm) -> c_int {
    boundary!(failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        Ok(c_int::try_from(vm.loaded()?.program.maps().len()).unwrap_or(c_int::MAX))
    })
}

/// @brief A handle to map number `index` of the loaded program (see
/// ubpf_map_count()).
///
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @param[in] index From 0 to the count less 1.
/// @return The handle, to free with ubpf_map_release(); NULL when there is
///         no such map (the reason in ubpf_last_error()).
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_get_by_index(vm: *const ubpf_vm, index: c_uint) -> *mut ubpf_map {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let maps = vm.loaded()?.program.maps();
        let map = maps.get(index as usize).ok_or_else(|| format!("no map {index}: the program has {}", maps.len()))?;
        Ok(map_handle(map))
    })
}

/// @brief A handle to the loaded program's map named `name` (its variable
/// in C; `.bss`, `.data` or `.rodata` for global data).
///
/// Thread safety: as ubpf_exec().
///
/// @param[in] vm The VM.
/// @param[in] name The map's name.
/// @return The handle, to free with ubpf_map_release(); NULL when there is
///         no such map.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes; `name` is NULL
/// or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_get(vm: *const ubpf_vm, name: *const c_char) -> *mut ubpf_map {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(name, "the map's name") }?.ok_or("the map's name is NULL")?;
        let map = vm.loaded()?.program.map(name).ok_or_else(|| format!("the program has no map named {name:?}"))?;
        Ok(map_handle(map))
    })
}

/// @brief Frees a map handle.
///
/// @param[in] map The handle; NULL does nothing.
///
/// # Safety
/// `map` is NULL or a handle not yet released, which no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_release(map: *mut ubpf_map) {
    boundary!(failure: (), {
        if !map.is_null() {
            // SAFETY: a handle from `map_handle`, released once.
            drop(unsafe { Box::from_raw(map) });
        }
        Ok(())
    })
}

/// @brief The map's name, valid as long as the handle.
///
/// @param[in] map The handle.
/// @return The name; NULL when `map` is NULL.
///
/// # Safety
/// `map` is NULL or a handle not yet released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_name(map: *const ubpf_map) -> *const c_char {
    boundary!(failure: ptr::null(), {
        // SAFETY: the caller's contract.
        let handle = unsafe { map.as_ref() }.ok_or("the map is NULL")?;
        Ok(handle.name.as_ptr())
    })
}

/// @brief The map's type, sizes and flags.
///
/// @param[in] map The handle.
/// @param[out] info Where to write them.
/// @retval 0 Success.
/// @retval -EINVAL A NULL argument.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `info` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_info(map: *const ubpf_map, info: *mut ubpf_map_info) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        let def = map.def();
        let value = ubpf_map_info {
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            flags: def.flags,
        };
        // SAFETY: the caller's contract; checked for NULL.
        unsafe { info.as_mut() }.map(|info| *info = value).ok_or("info is NULL")?;
        Ok(0)
    })
}

/// @brief The size of the value buffer ubpf_map_lookup() and
/// ubpf_map_update() take: the map's `value_size`, or for a per-CPU map
/// (types 5, 6 and 10) one value per possible CPU of the host, each
/// rounded up to 8 bytes, as libbpf lays them out
/// (`libbpf_num_possible_cpus() * round_up(value_size, 8)`).
///
/// Thread safety: any thread, at any time.
///
/// @param[in] map The handle.
/// @return The size in bytes; 0 when `map` is NULL.
///
/// # Safety
/// `map` is NULL or a handle not yet released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_value_size(map: *const ubpf_map) -> usize {
    boundary!(failure: 0, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        Ok(map.host_value_size())
    })
}

/// @brief Copies the value under `key` into `value`.
///
/// Sizes must be the map's (for the value, ubpf_map_value_size()): a
/// per-CPU map gives every possible CPU's value, in the order of the CPUs'
/// numbers, each rounded up to 8 bytes. A prog array's value is the slot's
/// index when it holds a program; a devmap's or cpumap's empty slot is not
/// found. Thread safety: any number of threads may use maps at once, while
/// programs run.
///
/// @param[in] map The handle.
/// @param[in] key The key, `key_size` bytes.
/// @param[out] value Where the value goes, ubpf_map_value_size() bytes.
/// @retval 0 Found.
/// @retval -ENOENT No such key.
/// @retval -EINVAL Wrong sizes or NULL arguments.
/// @retval -EOPNOTSUPP The map type has no lookup (ring buffer, queue).
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` and `value` are NULL or
/// point at their sizes in bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_lookup(
    map: *const ubpf_map,
    key: *const c_void,
    key_size: usize,
    value: *mut c_void,
    value_size: usize,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let (map, key) = unsafe { (map_ref(map)?, bytes(key, key_size, "key")?) };
        // SAFETY: the caller's contract.
        let out = unsafe { bytes_mut(value, value_size, "value") }?;
        let found = match map.lookup(key) {
            Ok(found) => found,
            Err(error) => return Ok(map_status(Err(error))),
        };
        let Some(found) = found else { return Ok(map_status(Err(MapOpError::NotFound))) };
        if found.len() != out.len() {
            return Ok(map_status(Err(MapOpError::ValueSize { expected: found.len() as u32, got: out.len() })));
        }
        out.copy_from_slice(&found);
        Ok(0)
    })
}

/// @brief Stores `value` under `key`; `flags` is 0 (BPF_ANY), 1
/// (BPF_NOEXIST) or 2 (BPF_EXIST). For a queue or stack, pushes `value`
/// (the key is NULL, size 0). A per-CPU map takes every possible CPU's
/// value, laid out as ubpf_map_lookup() gives them. A devmap's value is an
/// ifindex (0 empties the slot), a cpumap's a queue size; programs in their
/// entries are not supported (-EOPNOTSUPP), nor are AF_XDP sockets in an
/// xskmap.
///
/// Thread safety: as ubpf_map_lookup().
///
/// @retval 0 Success.
/// @retval -EEXIST, -ENOENT As `flags` asks.
/// @retval -E2BIG The map is full.
/// @retval -EINVAL Wrong sizes, flags or NULL arguments.
/// @retval -EOPNOTSUPP What the map cannot hold here (see above).
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` and `value` are NULL or
/// point at their sizes in bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_update(
    map: *const ubpf_map,
    key: *const c_void,
    key_size: usize,
    value: *const c_void,
    value_size: usize,
    flags: u64,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let (map, key, value) =
            unsafe { (map_ref(map)?, bytes(key, key_size, "key")?, bytes(value, value_size, "value")?) };
        Ok(map_status(match map.map_type() {
            MapType::Queue | MapType::Stack => map.push(value, flags),
            _ => map.update(key, value, flags),
        }))
    })
}

/// @brief Removes the value under `key` (empties a prog array's slot).
///
/// Thread safety: as ubpf_map_lookup().
///
/// @retval 0 Success.
/// @retval -ENOENT No such key.
/// @retval -EINVAL Wrong size, NULL arguments, or an array (whose elements
///         cannot be deleted).
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` is NULL or points at
/// `key_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_delete(map: *const ubpf_map, key: *const c_void, key_size: usize) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let (map, key) = unsafe { (map_ref(map)?, bytes(key, key_size, "key")?) };
        Ok(map_status(map.delete(key)))
    })
}

/// @brief Iterates keys: writes the key after `key` (the first one when
/// `key` is NULL or absent) to `next_key`. Keys come in a stable order while
/// the map is unchanged: index order for arrays, byte order otherwise.
///
/// Thread safety: as ubpf_map_lookup().
///
/// @retval 0 A key was written.
/// @retval -ENOENT `key` was the last one (or the map is empty).
/// @retval -EINVAL Wrong size or NULL `next_key`.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `key` is NULL or points at
/// `key_size` bytes; `next_key` is NULL or points at `key_size` writable
/// bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_map_next_key(
    map: *const ubpf_map,
    key: *const c_void,
    next_key: *mut c_void,
    key_size: usize,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        if key_size != map.def().key_size as usize || next_key.is_null() {
            return Err(format!("next_key must be {} writable bytes", map.def().key_size));
        }
        // SAFETY: the caller's contract (NULL means "the first").
        let key = if key.is_null() { None } else { Some(unsafe { bytes(key, key_size, "key") }?) };
        // SAFETY: the caller's contract; checked for NULL.
        let out = unsafe { bytes_mut(next_key, key_size, "next_key") }?;
        match map.next_key(key) {
            Some(next) => {
                out.copy_from_slice(&next);
                Ok(0)
            }
            None => Ok(-libc::ENOENT),
        }
    })
}

/// @brief Takes the next record a program submitted to a ring buffer map,
/// or wrote to a perf event array with bpf_perf_event_output().
///
/// Records come in the order they were reserved; one reserved and not yet
/// submitted holds back those after it. Meant for one consumer per ring
/// buffer. Thread safety: as ubpf_map_lookup().
///
/// @param[in] map The handle of a ring buffer or perf event array map.
/// @param[out] buffer Where the record goes.
/// @param[in] size The buffer's size.
/// @param[out] len The record's length (also when it does not fit); may be
///             NULL.
/// @retval 1 A record was copied (and taken).
/// @retval 0 No record is ready.
/// @retval -ENOSPC The next record is longer than `size`; it stays.
/// @retval -EINVAL Not a ring buffer or perf event array, or NULL
///         arguments.
///
/// # Safety
/// `map` is NULL or a handle not yet released; `buffer` is NULL or points
/// at `size` writable bytes; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_ringbuf_read(
    map: *const ubpf_map,
    buffer: *mut c_void,
    size: usize,
    len: *mut usize,
) -> c_int {
    boundary!(failure: -libc::EINVAL, {
        // SAFETY: the caller's contract.
        let map = unsafe { map_ref(map) }?;
        // SAFETY: the caller's contract.
        let out = unsafe { bytes_mut(buffer, size, "buffer") }?;
        let next = map.ringbuf_next_within(size).map_err(|error| error.to_string())?;
        let (status, record_len) = match next {
            None => (0, 0),
            Some(Err(needed)) => (-libc::ENOSPC, needed),
            Some(Ok(record)) => {
                out[..record.len()].copy_from_slice(&record);
                (1, record.len())
            }
        };
        // SAFETY: the caller's contract.
        if let Some(len) = unsafe { len.as_mut() } {
            *len = record_len;
        }
        Ok(status)
    })
}

/// @brief Every map of the loaded program as JSON, in the format of
/// `qemu-ubpf replay --maps`: `{"maps": [{"name", "type", "key_size",
/// "value_size", "max_entries", "flags", "entries": [{"key", "value"}]}]}`,
/// keys and values as hex bytes in memory order. Arrays list their non-zero
/// values only; ring buffers give (and consume) their records. A per-CPU
/// map's value is a list of each possible CPU's value.
///
/// Thread safety: as ubpf_exec(); entries change under a running program,
/// each is read whole but the whole is no snapshot.
///
/// @param[in] vm The VM.
/// @return The JSON text, to free with free(); NULL on failure.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_maps_json(vm: *const ubpf_vm) -> *mut c_char {
    boundary!(failure: ptr::null_mut(), {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        let dump = crate::maps::json::dump_all(vm.loaded()?.program.maps());
        Ok(malloc_string(&dump.to_string()))
    })
}

/// @brief Updates maps of the loaded program from JSON, in the format of
/// `qemu-ubpf replay --map-init`: `{"MAP": [{"key": K, "value": V}, ...]}`,
/// K and V hex strings (bytes in memory order), unsigned integers, or, for
/// an LPM trie over IPv4, "a.b.c.d/len" keys. For a per-CPU map, V given
/// once goes to every CPU; a list of V gives one per possible CPU.
///
/// Entries before a failing one stay stored. Thread safety: as
/// ubpf_map_lookup().
///
/// @param[in] vm The VM.
/// @param[in] json The text.
/// @param[out] errmsg NULL, or where to store the error message (or NULL on
///             success), which the caller frees with free().
/// @return The number of entries stored; -1 on failure.
///
/// # Safety
/// `vm` is NULL or a live VM that no other thread changes; `json` is NULL
/// or a NUL-terminated string; `errmsg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ubpf_maps_update_json(
    vm: *const ubpf_vm,
    json: *const c_char,
    errmsg: *mut *mut c_char,
) -> c_int {
    boundary!(errmsg: errmsg, failure: -1, {
        // SAFETY: the caller's contract.
        let vm = unsafe { vm_ref(vm) }?;
        // SAFETY: the caller's contract.
        let text = unsafe { c_str(json, "json") }?.ok_or("json is NULL")?;
        let stored = crate::maps::json::init(vm.loaded()?.program.maps(), text).map_err(|error| error.to_string())?;
        Ok(c_int::try_from(stored).unwrap_or(c_int::MAX))
    })
}
