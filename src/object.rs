//! An ELF object loaded whole, as libbpf loads one: its maps created once,
//! every program of it (each global function outside `.text`) loaded over
//! those maps, and prog arrays filled from their static `.values`.

use std::sync::Arc;

use crate::elf::{self, Linked};
use crate::error::ElfError;
use crate::helpers::Helpers;
use crate::maps::Map;
use crate::program::{Config, Program};

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
        let mut linked = elf::load_all(object, helpers)?;
        if linked.is_empty() {
            // Hand-written code: no global function outside `.text`.
            linked.push(elf::load(object, None, helpers)?);
        }
        let maps = linked[0].image.create_maps(&config.reuse_maps)?;
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

    /// A program of `object` picked by `name` (a function or section, as
    /// [`elf::load`] picks), over this object's maps, which keeps the
    /// object's programs alive for its tail calls. `object` must be the
    /// bytes this was loaded from.
    pub fn instantiate(
        &self,
        object: &[u8],
        name: Option<&str>,
        helpers: &Helpers,
        config: &Config,
    ) -> Result<Program, ElfError> {
        let linked = elf::load(object, name, helpers)?;
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

fn load_linked(linked: Linked, maps: &[Arc<Map>], helpers: &Helpers, config: &Config) -> Result<Program, ElfError> {
    let section = linked.section;
    Program::with_maps(linked.image, maps.to_vec(), helpers, config).map_err(|error| ElfError::Load { section, error })
}
