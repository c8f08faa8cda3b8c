//! dynasm's `VecAssembler` cut down to dynamic labels, with its buffer open
//! to the direct encoder ([`super::encoder`]).

use dynasmrt::components::{LabelRegistry, PatchLoc, RelocRegistry};
use dynasmrt::x64::X64Relocation;
use dynasmrt::{AssemblyOffset, DynamicLabel, DynasmApi, DynasmError, DynasmLabelApi};

use super::encoder;
use crate::scratch::Reused;

pub(super) struct Assembler {
    ops: Reused<u8>,
    labels: LabelRegistry,
    relocs: RelocRegistry<X64Relocation>,
    error: Option<DynasmError>,
}

impl Assembler {
    pub(super) fn with_capacity(bytes: usize, labels: usize, relocs: usize) -> Assembler {
        let mut ops = Reused::new();
        ops.reserve(bytes);
        Assembler {
            ops,
            labels: LabelRegistry::with_capacity(0, 0, labels),
            relocs: RelocRegistry::with_capacity(0, relocs),
            error: None,
        }
    }

    pub(super) fn new_dynamic_label(&mut self) -> DynamicLabel {
        self.labels.new_dynamic_label()
    }

    /// Appends one directly encoded instruction.
    #[inline(always)]
    pub(super) fn put(&mut self, bytes: encoder::Encoding) {
        self.ops.reserve(encoder::MAX_LEN);
        let len = self.ops.len();
        // SAFETY: the reserve leaves room for `MAX_LEN` bytes past `len`;
        // all of them are written (the instruction and zeroes after it) and
        // only the instruction's are counted in.
        unsafe {
            std::ptr::write_unaligned(self.ops.as_mut_ptr().add(len).cast::<[u8; encoder::MAX_LEN]>(), bytes.buf);
            self.ops.set_len(len + bytes.len);
        }
    }

    /// The code, with every label reference resolved.
    pub(super) fn finalize(mut self) -> Result<Reused<u8>, DynasmError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        for (loc, id) in self.relocs.take_dynamics() {
            let target = self.labels.resolve_dynamic(id)?;
            if loc.patch(&mut self.ops[loc.range(0)], 0, target.0).is_err() {
                return Err(DynasmError::ImpossibleRelocation(dynasmrt::TargetKind::Dynamic(id)));
            }
        }
        Ok(self.ops)
    }

    /// Pads to a multiple of `alignment` with the fewest no-op
    /// instructions (the recommended multi-byte forms), which run when
    /// control falls through them.
    pub(super) fn align_with_nops(&mut self, alignment: usize) {
        const NOPS: [&[u8]; 9] = [
            &[0x90],
            &[0x66, 0x90],
            &[0x0f, 0x1f, 0x00],
            &[0x0f, 0x1f, 0x40, 0x00],
            &[0x0f, 0x1f, 0x44, 0x00, 0x00],
            &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
            &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
            &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        ];
        let mut padding = self.ops.len().wrapping_neg() % alignment;
        while padding > 0 {
            let nop = NOPS[padding.min(NOPS.len()) - 1];
            self.ops.extend_from_slice(nop);
            padding -= nop.len();
        }
    }

    /// For the label kinds this assembler does not keep.
    fn unsupported(&mut self) {
        self.error = Some(DynasmError::CheckFailed);
    }
}

impl Extend<u8> for Assembler {
    fn extend<T: IntoIterator<Item = u8>>(&mut self, iter: T) {
        self.ops.extend(iter)
    }
}

impl<'a> Extend<&'a u8> for Assembler {
    fn extend<T: IntoIterator<Item = &'a u8>>(&mut self, iter: T) {
        self.ops.extend(iter)
    }
}

impl DynasmApi for Assembler {
    fn offset(&self) -> AssemblyOffset {
        AssemblyOffset(self.ops.len())
    }

    #[inline(always)]
    fn push(&mut self, byte: u8) {
        self.ops.push(byte);
    }

    fn align(&mut self, alignment: usize, with: u8) {
        while self.ops.len() % alignment != 0 {
            self.ops.push(with);
        }
    }
}

impl DynasmLabelApi for Assembler {
    type Relocation = X64Relocation;

    fn local_label(&mut self, _: &'static str) {
        self.unsupported();
    }

    fn global_label(&mut self, _: &'static str) {
        self.unsupported();
    }

    fn dynamic_label(&mut self, id: DynamicLabel) {
        let offset = self.offset();
        if let Err(error) = self.labels.define_dynamic(id, offset) {
            self.error = Some(error);
        }
    }

    fn forward_relocation(&mut self, _: &'static str, _: isize, _: u8, _: u8, _: X64Relocation) {
        self.unsupported();
    }

    fn backward_relocation(&mut self, _: &'static str, _: isize, _: u8, _: u8, _: X64Relocation) {
        self.unsupported();
    }

    fn global_relocation(&mut self, _: &'static str, _: isize, _: u8, _: u8, _: X64Relocation) {
        self.unsupported();
    }

    fn dynamic_relocation(
        &mut self,
        id: DynamicLabel,
        target_offset: isize,
        field_offset: u8,
        ref_offset: u8,
        kind: X64Relocation,
    ) {
        let location = self.offset();
        self.relocs.add_dynamic(id, PatchLoc::new(location, target_offset, field_offset, ref_offset, kind));
    }

    fn value_relocation(&mut self, _: usize, _: u8, _: u8, _: X64Relocation) {
        self.unsupported();
    }
}
