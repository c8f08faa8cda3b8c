//! Just enough of BTF (the `.BTF` section) to read libbpf's map
//! definitions: the `.maps` data section's variables, each a struct whose
//! members encode the map's attributes. `__uint(name, n)` is a member
//! `int (*name)[n]` (a pointer to an array of `n` ints), `__type(name, t)`
//! a member `t *name`, `__array(values, t)` a member `t *values[]`.
//!
//! The section is untrusted: every offset, count and type id is checked, and
//! type chains are followed a bounded number of steps.

use crate::error::ElfError;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// Steps a type reference chain may take (typedefs, qualifiers, array
/// elements) before the section is called malformed: a loop otherwise.
const MAX_CHAIN: usize = 32;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One type, as far as the map reader needs it.
#[derive(Clone, Debug)]
enum Type {
    /// Has a size of its own (int, enum, float, struct, union).
    Sized(u64),
    Ptr(u32),
    Array {
        elem: u32,
        count: u32,
    },
    Struct {
        size: u64,
        members: Vec<(String, u32, u32)>,
    },
    /// Typedefs and qualifiers: the same as the type they name.
    Alias(u32),
    Var {
        name: String,
        target: u32,
    },
    Datasec {
        name: String,
        vars: Vec<u32>,
    },
    /// Forward declarations, functions, prototypes, tags.
    Other,
}

pub(crate) struct Btf {
    /// Type `id` is `types[id - 1]`; id 0 is `void`.
    types: Vec<Type>,
}

/// A map's attributes as a `.maps` variable declares them.
#[derive(Debug, Default)]
pub(crate) struct BtfMap {
    pub name: String,
    pub map_type: Option<u32>,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
    pub max_entries: Option<u32>,
    pub flags: Option<u32>,
    /// Byte offset of `__array(values, ...)` in the struct, if declared:
    /// the static contents of a prog array are relocations there.
    pub values_offset: Option<u64>,
}

fn bad(offset: usize, what: impl Into<String>) -> ElfError {
    ElfError::BadBtf { offset, what: what.into() }
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, ElfError> {
    let slice = offset.checked_add(4).and_then(|end| bytes.get(offset..end));
    let slice = slice.ok_or_else(|| bad(offset, "truncated"))?;
    Ok(u32::from_le_bytes(slice.try_into().expect("4 bytes")))
}

impl Btf {
    pub(crate) fn parse(section: &[u8]) -> Result<Btf, ElfError> {
        if section.len() < HEADER_LEN || u16::from_le_bytes([section[0], section[1]]) != MAGIC {
            return Err(bad(0, "no BTF header (magic 0xeb9f, little-endian)"));
        }
        let header_len = u32_at(section, 4)? as usize;
        let (type_off, type_len) = (u32_at(section, 8)? as usize, u32_at(section, 12)? as usize);
        let (str_off, str_len) = (u32_at(section, 16)? as usize, u32_at(section, 20)? as usize);
        let range = |off: usize, len: usize, what: &str| {
            let start = header_len.checked_add(off);
            let end = start.and_then(|start| start.checked_add(len)).filter(|&end| end <= section.len());
            match (start, end) {
                (Some(start), Some(end)) => Ok(start..end),
                _ => Err(bad(header_len, format!("the {what} run past the section's end"))),
            }
        };
        let types_range = range(type_off, type_len, "types")?;
        let strings = &section[range(str_off, str_len, "strings")?];
        let base = types_range.start;
        let types_bytes = &section[types_range];
        let name = |offset: u32| -> String {
            let tail = strings.get(offset as usize..).unwrap_or_default();
            let end = tail.iter().position(|&byte| byte == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        };
        let mut types = Vec::new();
        let mut at = 0;
        while at < types_bytes.len() {
            let place = base + at;
            let field = |index: usize| u32_at(types_bytes, at + 4 * index).map_err(|_| bad(place, "truncated type"));
            let (name_off, info, size_or_type) = (field(0)?, field(1)?, field(2)?);
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            at += 12;
            let entries = |entry_len: usize| -> Result<usize, ElfError> {
                let len = vlen * entry_len;
                if at + len > types_bytes.len() {
                    return Err(bad(place, "a type's entries run past the types"));
                }
                Ok(len)
            };
            let ty = match kind {
                KIND_INT => {
                    at += 4;
                    Type::Sized(u64::from(size_or_type))
                }
                KIND_ENUM | KIND_FLOAT | KIND_ENUM64 => {
                    at += entries(match kind {
                        KIND_ENUM => 8,
                        KIND_ENUM64 => 12,
                        _ => 0,
                    })?;
                    Type::Sized(u64::from(size_or_type))
                }
                KIND_PTR => Type::Ptr(size_or_type),
                KIND_ARRAY => {
                    let array =
                        |index: usize| u32_at(types_bytes, at + 4 * index).map_err(|_| bad(place, "truncated array"));
                    let ty = Type::Array { elem: array(0)?, count: array(2)? };
                    at += 12;
                    ty
                }
                KIND_STRUCT | KIND_UNION => {
                    let len = entries(12)?;
                    let mut members = Vec::with_capacity(vlen);
                    for member in 0..vlen {
                        let offset = at + member * 12;
                        let bits = u32_at(types_bytes, offset + 8)?;
                        // With kind_flag set, the top 8 bits are a bitfield size.
                        let bits = if info >> 31 != 0 { bits & 0xff_ffff } else { bits };
                        members.push((name(u32_at(types_bytes, offset)?), u32_at(types_bytes, offset + 4)?, bits));
                    }
                    at += len;
                    Type::Struct { size: u64::from(size_or_type), members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => Type::Alias(size_or_type),
                KIND_FWD | KIND_FUNC => Type::Other,
                KIND_FUNC_PROTO => {
                    at += entries(8)?;
                    Type::Other
                }
                KIND_VAR => {
                    at += 4;
                    Type::Var { name: name(name_off), target: size_or_type }
                }
                KIND_DATASEC => {
                    let len = entries(12)?;
                    let vars = (0..vlen).map(|var| u32_at(types_bytes, at + var * 12)).collect::<Result<_, _>>()?;
                    at += len;
                    Type::Datasec { name: name(name_off), vars }
                }
                KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                _ => return Err(bad(place, format!("unknown type kind {kind}"))),
            };
            if at > types_bytes.len() {
                return Err(bad(place, "a type runs past the types"));
            }
            types.push(ty);
        }
        Ok(Btf { types })
    }

    fn get(&self, id: u32) -> Result<&Type, ElfError> {
        let index = (id as usize).checked_sub(1);
        index.and_then(|index| self.types.get(index)).ok_or_else(|| bad(0, format!("type id {id} does not exist")))
    }

    /// `id` with typedefs and qualifiers taken off.
    fn resolve(&self, mut id: u32) -> Result<(u32, &Type), ElfError> {
        for _ in 0..MAX_CHAIN {
            match self.get(id)? {
                Type::Alias(target) => id = *target,
                ty => return Ok((id, ty)),
            }
        }
        Err(bad(0, format!("type {id}: the chain of typedefs is too long")))
    }

    /// The size in bytes of type `id`.
    fn size_of(&self, id: u32, depth: usize) -> Result<u64, ElfError> {
        if depth > MAX_CHAIN {
            return Err(bad(0, "array nesting too deep"));
        }
        match self.resolve(id)?.1 {
            Type::Sized(size) | Type::Struct { size, .. } => Ok(*size),
            Type::Ptr(_) => Ok(8),
            Type::Array { elem, count } => Ok(self.size_of(*elem, depth + 1)?.saturating_mul(u64::from(*count))),
            _ => Err(bad(0, format!("type {id} has no size"))),
        }
    }

    /// The maps the `.maps` section's variables declare, by name.
    pub(crate) fn maps(&self) -> Result<Vec<BtfMap>, ElfError> {
        let Some(vars) = self.types.iter().find_map(|ty| match ty {
            Type::Datasec { name, vars } if name == ".maps" => Some(vars),
            _ => None,
        }) else {
            return Ok(Vec::new());
        };
        let mut maps = Vec::new();
        for &var in vars {
            let Type::Var { name, target } = self.get(var)? else {
                return Err(bad(0, format!(".maps entry {var} is not a variable")));
            };
            let Type::Struct { members, .. } = self.resolve(*target)?.1 else {
                return Err(bad(0, format!("map {name}: its type is not a struct")));
            };
            let mut map = BtfMap { name: name.clone(), ..BtfMap::default() };
            for (member, ty, bits) in members {
                let what = |text: &str| bad(0, format!("map {name}, member {member}: {text}"));
                // `__uint(member, n)`: a pointer to an array of n.
                let number = || -> Result<u32, ElfError> {
                    let Type::Ptr(pointee) = self.resolve(*ty)?.1 else { return Err(what("not a pointer")) };
                    match self.resolve(*pointee)?.1 {
                        Type::Array { count, .. } => Ok(*count),
                        _ => Err(what("not __uint(...): a pointer to an array")),
                    }
                };
                // `__type(member, t)`: a pointer to t.
                let pointee_size = || -> Result<u32, ElfError> {
                    let Type::Ptr(pointee) = self.resolve(*ty)?.1 else { return Err(what("not a pointer")) };
                    u32::try_from(self.size_of(*pointee, 0)?).map_err(|_| what("size too large"))
                };
                match member.as_str() {
                    "type" => map.map_type = Some(number()?),
                    "max_entries" => map.max_entries = Some(number()?),
                    "map_flags" => map.flags = Some(number()?),
                    "key_size" => map.key_size = Some(number()?),
                    "value_size" => map.value_size = Some(number()?),
                    "key" => map.key_size = Some(pointee_size()?),
                    "value" => map.value_size = Some(pointee_size()?),
                    "values" => map.values_offset = Some(u64::from(*bits / 8)),
                    // pinning, numa_node, map_extra: no meaning here.
                    _ => {}
                }
            }
            maps.push(map);
        }
        Ok(maps)
    }
}
