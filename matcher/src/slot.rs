//! The rule-as-data slot: a fixed-size static in the component's data
//! segment, found by `dac build` through a unique header and overwritten in
//! place. The payload keeps the slot's length, so the component's binary
//! stays valid: nothing before or after it moves.
//!
//! Layout: [`MAGIC`] (32 bytes), the payload's length (u32, little-endian),
//! the payload (JSON, [`Payload`]), then [`FILL`] bytes up to [`CAPACITY`].

use serde::{Deserialize, Serialize};

/// The slot's header. Only the slot's initializer holds these bytes: the
/// guest never compares against them, so they occur once in the component.
pub const MAGIC: [u8; 32] = *b"dac-matcher rule slot v1 \xd9\x1c\x3e\xa7\x52\x0b\xf4";

/// Bytes in the slot, header included.
pub const CAPACITY: usize = 128 * 1024;

const HEADER: usize = MAGIC.len() + 4;

/// The largest payload a slot holds.
pub const PAYLOAD_CAPACITY: usize = CAPACITY - HEADER;

/// What an empty slot is filled with: not zero, so the slot lands in a data
/// segment of the binary rather than in zero-initialized memory.
pub const FILL: u8 = 0xA5;

/// What `dac build` writes into the slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The rule file's name, for error messages and the rule's `source`.
    pub file: String,
    /// The rule text: seed YAML or Sigma.
    pub text: String,
    /// A Sigma field mapping (TOML) other than the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<MappingSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingSource {
    pub file: String,
    pub toml: String,
}

/// Why a template could not take a payload.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("the rule takes {size} bytes in the component, above its capacity of {PAYLOAD_CAPACITY} bytes")]
    TooLarge { size: usize },
    #[error("the matcher component has {found} rule slots instead of one")]
    SlotCount { found: usize },
    #[error("the matcher component's rule slot is not empty")]
    NotEmpty,
}

const fn template() -> [u8; CAPACITY] {
    let mut slot = [FILL; CAPACITY];
    let mut i = 0;
    while i < MAGIC.len() {
        slot[i] = MAGIC[i];
        i += 1;
    }
    // Length 0: no rule yet.
    slot[MAGIC.len()] = 0;
    slot[MAGIC.len() + 1] = 0;
    slot[MAGIC.len() + 2] = 0;
    slot[MAGIC.len() + 3] = 0;
    slot
}

#[used]
static SLOT: [u8; CAPACITY] = template();

/// The payload bytes `dac build` wrote into this component; empty in the
/// template. Read through volatile loads of an opaque pointer: the static
/// is immutable as far as the compiler knows, and it must not fold the
/// template's length 0 into the code.
pub fn embedded() -> Vec<u8> {
    let base = std::hint::black_box(SLOT.as_ptr());
    // SAFETY: every offset read is inside SLOT (len is clamped).
    unsafe {
        let len = u32::from_le_bytes(std::array::from_fn(|i| base.add(MAGIC.len() + i).read_volatile()));
        let len = (len as usize).min(PAYLOAD_CAPACITY);
        (0..len).map(|i| base.add(HEADER + i).read_volatile()).collect()
    }
}

/// The payload in a component's slot: `None` when the component has no
/// slot (it was not made by `dac build`), or an empty one.
pub fn read(component: &[u8]) -> Option<&[u8]> {
    let mut starts = memchr::memmem::find_iter(component, &MAGIC);
    let start = starts.next()?;
    if starts.next().is_some() {
        return None;
    }
    let header = component.get(start + MAGIC.len()..start + HEADER)?;
    let len = u32::from_le_bytes(header.try_into().ok()?) as usize;
    let payload = component.get(start + HEADER..start + HEADER + len.min(PAYLOAD_CAPACITY))?;
    (!payload.is_empty()).then_some(payload)
}

/// A copy of the template component with `payload` in its slot.
pub fn fill(template: &[u8], payload: &[u8]) -> Result<Vec<u8>, SlotError> {
    if payload.len() > PAYLOAD_CAPACITY {
        return Err(SlotError::TooLarge { size: payload.len() });
    }
    let starts: Vec<usize> = memchr::memmem::find_iter(template, &MAGIC).collect();
    let [start] = starts[..] else { return Err(SlotError::SlotCount { found: starts.len() }) };
    let slot = template.get(start..start + CAPACITY).ok_or(SlotError::NotEmpty)?;
    if slot[MAGIC.len()..HEADER] != [0; 4] || slot[HEADER..].iter().any(|&b| b != FILL) {
        return Err(SlotError::NotEmpty);
    }
    let mut out = template.to_vec();
    let len = u32::try_from(payload.len()).expect("below CAPACITY").to_le_bytes();
    out[start + MAGIC.len()..start + HEADER].copy_from_slice(&len);
    out[start + HEADER..start + HEADER + payload.len()].copy_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_component() -> Vec<u8> {
        let mut bytes = b"\0asm header".to_vec();
        bytes.extend_from_slice(&template());
        bytes.extend_from_slice(b"trailer");
        bytes
    }

    #[test]
    fn fills_the_one_slot_in_place() {
        let template = fake_component();
        let filled = fill(&template, b"{\"x\":1}").unwrap();
        assert_eq!(filled.len(), template.len());
        assert!(filled.ends_with(b"trailer") && filled.starts_with(b"\0asm header"));
        let start = 11 + MAGIC.len();
        assert_eq!(&filled[start..start + 4], &7u32.to_le_bytes());
        assert_eq!(&filled[start + 4..start + 11], b"{\"x\":1}");
        assert_eq!(read(&filled), Some(&b"{\"x\":1}"[..]));
        assert_eq!(read(&template), None);
        assert!(matches!(fill(&filled, b"{}"), Err(SlotError::NotEmpty)));
    }

    #[test]
    fn refuses_oversized_payloads_and_ambiguous_templates() {
        let template = fake_component();
        assert!(fill(&template, &vec![b' '; PAYLOAD_CAPACITY]).is_ok());
        let err = fill(&template, &vec![b' '; PAYLOAD_CAPACITY + 1]).unwrap_err();
        assert!(matches!(err, SlotError::TooLarge { size } if size == PAYLOAD_CAPACITY + 1), "{err}");
        let mut twice = template.clone();
        twice.extend_from_slice(&template);
        assert!(matches!(fill(&twice, b"{}"), Err(SlotError::SlotCount { found: 2 })));
        assert!(matches!(fill(b"no slot", b"{}"), Err(SlotError::SlotCount { found: 0 })));
    }

    #[test]
    fn the_native_slot_is_the_empty_template() {
        assert!(embedded().is_empty());
    }
}
