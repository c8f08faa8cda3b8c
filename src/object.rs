//! The way from ELF bytes to programs, parsing the file once: one program
//! ([`Program::from_elf`]), or an object loaded whole, as libbpf loads one
//! ([`Object`]): its maps created once, every program of it (each global
//! function outside `.text`) loaded over those maps, and prog arrays filled
//! from their static `.values`.

use std::sync::Arc;

use crate::elf::{ElfFile, Linked};
use crate::error::{ElfError, LoadErrorKind};
use crate::helpers::Helpers;
use crate::image::{MapType, ProgramType};
use crate::isa::Insn;
use crate::maps::{self, Map};
use crate::program::{Config, Program};
use crate::verifier;

impl Program {
    /// Loads a program from a clang `-target bpf` object; `name` picks a
    /// function or section, by default the only program or the first. When
    /// the object has a prog array, its other programs are loaded too,
    /// sharing its maps, so that the array can hold them.
    pub fn from_elf(
        object: &[u8],
        name: Option<&str>,
        helpers: &Helpers,
        config: &Config,
    ) -> Result<Program, ElfError> {
        let file = ElfFile::parse(object)?;
        let linked = file.link(name, helpers)?;
        if linked.image.maps.iter().any(|map| map.map_type == MapType::ProgArray as u32) {
            return Object::from_file(&file, helpers, config)?.instantiate(linked, helpers, config);
        }
        let maps = maps::create_for(&linked.image, &config.reuse_maps)?;
        load_linked(linked, &maps, helpers, config)
    }
}

/// The maps and programs of one object.
pub struct Object {
    maps: Vec<Arc<Map>>,
    /// Function name, section and program.
    programs: Vec<(String, String, Arc<Program>)>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("maps", &self.maps.iter().map(|map| map.name()).collect::<Vec<_>>())
            .field("programs", &self.programs.iter().map(|(name, ..)| name).collect::<Vec<_>>())
            .finish()
    }
}

impl Object {
    /// Loads every program of `object` over one set of maps.
    pub fn load(object: &[u8], helpers: &Helpers, config: &Config) -> Result<Object, ElfError> {
        Object::from_file(&ElfFile::parse(object)?, helpers, config)
    }

    fn from_file(file: &ElfFile, helpers: &Helpers, config: &Config) -> Result<Object, ElfError> {
        let mut linked = file.programs(helpers)?;
        if linked.is_empty() {
            // Hand-written code: no global function outside `.text`.
            linked.push(file.link(None, helpers)?);
        }
        let maps = maps::create_for(&linked[0].image, &config.reuse_maps)?;
        let mut programs = Vec::with_capacity(linked.len());
        for linked in linked {
            let program = load_linked(linked.clone(), &maps, helpers, config)?;
            programs.push((linked.function, linked.section, Arc::new(program)));
        }
        let object = Object { maps, programs };
        for map in &object.maps {
            for (slot, function) in &map.def().initial_programs {
                let program = object.program(function).ok_or_else(|| ElfError::BadMap {
                    section: ".maps".into(),
                    map: map.name().into(),
                    what: format!("slot {slot} names {function}, which is not a program of the object"),
                })?;
                map.set_program(*slot, Some(program)).map_err(|error| ElfError::BadMap {
                    section: ".maps".into(),
                    map: map.name().into(),
                    what: format!("slot {slot}: {error}"),
                })?;
            }
        }
        Ok(object)
    }

    /// A program `linked` out of this object's file, over this object's
    /// maps, which keeps the object's programs alive for its tail calls.
    fn instantiate(&self, linked: Linked, helpers: &Helpers, config: &Config) -> Result<Program, ElfError> {
        let mut program = load_linked(linked, &self.maps, helpers, config)?;
        program.keep_alive(self.programs.iter().map(|(_, _, program)| program.clone()).collect());
        Ok(program)
    }

    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// The map named `name`.
    pub fn map(&self, name: &str) -> Option<&Arc<Map>> {
        self.maps.iter().find(|map| map.name() == name)
    }

    /// The program whose function or section is `name`.
    pub fn program(&self, name: &str) -> Option<&Arc<Program>> {
        let by_function = self.programs.iter().find(|(function, ..)| function == name);
        by_function
            .or_else(|| self.programs.iter().find(|(_, section, _)| section == name))
            .map(|(.., program)| program)
    }

    /// Function names and sections of the programs, in object order.
    pub fn program_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.programs.iter().map(|(function, section, _)| (function.as_str(), section.as_str()))
    }
}

/// Loads `linked` as the type its section says, unless `config` forces one.
fn load_linked(linked: Linked, maps: &[Arc<Map>], helpers: &Helpers, config: &Config) -> Result<Program, ElfError> {
    let section = linked.section;
    let typed;
    let config = match config.program_type {
        Some(_) => config,
        None => {
            let program_type = ProgramType::of_section(&section).map_err(|what| ElfError::Load {
                section: section.clone(),
                error: verifier::error(0, Insn::default(), LoadErrorKind::ProgramType(what)),
            })?;
            typed = Config { program_type: Some(program_type), ..config.clone() };
            &typed
        }
    };
    Program::with_maps(linked.image, maps.to_vec(), helpers, config).map_err(|error| ElfError::Load { section, error })
}
