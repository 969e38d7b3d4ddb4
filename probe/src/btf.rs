//! Member offsets of kernel structures, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! Rust BPF programs get no CO-RE relocations, so the offsets the program
//! needs (`task_struct.real_parent`, `mm_struct.arg_start`, …) are looked
//! up here and handed to it as globals. Only what that takes is parsed:
//! the header, the type section's layout, struct and union members
//! (through anonymous members, which is where `mm_struct` keeps its
//! fields), and the string section.

use std::path::{Path, PathBuf};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not BTF data: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: no struct {name} in the kernel's BTF")]
    NoStruct { path: PathBuf, name: String },
    #[error("{path}: struct {structure} has no member {member}")]
    NoMember { path: PathBuf, structure: String, member: String },
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// (name offset, type id, offset field) for structs and unions.
    members: Vec<(u32, u32, u32)>,
}

/// The parsed type and string sections.
pub struct Btf {
    path: PathBuf,
    /// Index 0 is the implicit `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.into(), source })?;
        Btf::parse(path, &data)
    }

    pub fn parse(path: &Path, data: &[u8]) -> Result<Btf, BtfError> {
        let malformed = |reason: String| BtfError::Malformed { path: path.into(), reason };
        let u16_at = |at: usize| data.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if u16_at(0) != Some(0xeb9f) {
            return Err(malformed("bad magic (only little-endian BTF is supported)".into()));
        }
        let header = (|| Some((u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?, u32_at(20)?)))()
            .ok_or_else(|| malformed("truncated header".into()))?;
        let (hdr_len, type_off, type_len, str_off, str_len) = header;
        let types_start = (hdr_len + type_off) as usize;
        let types_end = types_start + type_len as usize;
        let str_start = (hdr_len + str_off) as usize;
        let strings = data
            .get(str_start..str_start + str_len as usize)
            .ok_or_else(|| malformed("string section out of bounds".into()))?
            .to_vec();
        if types_end > data.len() {
            return Err(malformed("type section out of bounds".into()));
        }
        let mut types = vec![Type { name_off: 0, kind: 0, kind_flag: false, size_or_type: 0, members: Vec::new() }];
        let mut at = types_start;
        while at < types_end {
            let (type_id, type_at) = (types.len(), at);
            let truncated = || malformed(format!("type {type_id} truncated at byte {type_at}"));
            let (name_off, info, size_or_type) =
                (|| Some((u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?)))().ok_or_else(truncated)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            // Each kind's trailing data, from the kernel's btf.rst.
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                3 => 12,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for member in 0..vlen {
                        let m = at + member * 12;
                        let fields = (|| Some((u32_at(m)?, u32_at(m + 4)?, u32_at(m + 8)?)))().ok_or_else(truncated)?;
                        members.push(fields);
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,        // ENUM, FUNC_PROTO
                15 | 19 => vlen * 12,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                other => return Err(malformed(format!("unknown BTF kind {other} (type {})", types.len()))),
            };
            at += extra;
            types.push(Type { name_off, kind, kind_flag, size_or_type, members });
        }
        Ok(Btf { path: path.into(), types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Follows typedefs and qualifiers to the type they stand for.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = ty.size_or_type,
                _ => return Some(ty),
            }
        }
        None
    }

    /// The byte offset of `member` in `struct structure`, looking through
    /// anonymous struct and union members.
    pub fn member_offset(&self, structure: &str, member: &str) -> Result<u64, BtfError> {
        let ty = self
            .types
            .iter()
            .find(|ty| {
                ty.kind == KIND_STRUCT && !ty.members.is_empty() && self.name(ty.name_off) == structure.as_bytes()
            })
            .ok_or_else(|| BtfError::NoStruct { path: self.path.clone(), name: structure.into() })?;
        self.find_member(ty, member.as_bytes(), 0).map(|bits| bits / 8).ok_or_else(|| BtfError::NoMember {
            path: self.path.clone(),
            structure: structure.into(),
            member: member.into(),
        })
    }

    fn find_member(&self, ty: &Type, member: &[u8], depth: u32) -> Option<u64> {
        if depth > 8 {
            return None;
        }
        for &(name_off, type_id, offset) in &ty.members {
            // With kind_flag set, the low 24 bits are the bit offset and the
            // high 8 a bitfield size.
            let bits = if ty.kind_flag { offset & 0xff_ffff } else { offset } as u64;
            if name_off == 0 {
                if let Some(inner) = self.resolve(type_id).filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION)) {
                    if let Some(found) = self.find_member(inner, member, depth + 1) {
                        return Some(bits + found);
                    }
                }
            } else if self.name(name_off) == member {
                return Some(bits);
            }
        }
        None
    }
}

/// The offsets `dac-probe`'s BPF program needs, from the kernel's BTF.
pub fn kernel_offsets(btf: &Btf, tp_filename_loc: u64) -> Result<dac_probe_common::KernelOffsets, BtfError> {
    Ok(dac_probe_common::KernelOffsets {
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        tp_filename_loc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmlinux() -> Option<Btf> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: no {VMLINUX_BTF} on this machine");
            return None;
        }
        Some(Btf::from_file(path).unwrap())
    }

    #[test]
    fn finds_the_offsets_the_program_needs_in_the_running_kernel() {
        let Some(btf) = vmlinux() else { return };
        let offsets = kernel_offsets(&btf, 8).unwrap();
        // arg_end is the word after arg_start in every kernel since 2.6.
        assert_eq!(offsets.mm_arg_end, offsets.mm_arg_start + 8);
        assert!(offsets.task_tgid > 0 && offsets.task_real_parent > offsets.task_tgid);
        assert!(offsets.task_mm > 0);
    }

    #[test]
    fn absent_names_are_reported_by_name() {
        let Some(btf) = vmlinux() else { return };
        let err = btf.member_offset("task_struct", "no_such_member").unwrap_err();
        assert_eq!(err.to_string(), "/sys/kernel/btf/vmlinux: struct task_struct has no member no_such_member");
        assert!(matches!(btf.member_offset("no_such_struct", "x"), Err(BtfError::NoStruct { .. })));
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        let path = Path::new("test.btf");
        assert!(Btf::parse(path, b"").is_err());
        assert!(Btf::parse(path, &[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut header = vec![0x9f, 0xeb, 1, 0];
        for field in [24u32, 0, 1000, 0, 0] {
            header.extend(field.to_le_bytes());
        }
        let err = Btf::parse(path, &header).err().unwrap().to_string();
        assert!(err.contains("out of bounds"), "{err}");
    }
}
