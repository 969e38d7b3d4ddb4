//! What a stream must keep beside its position for a restart to go on
//! exactly where it stopped: the correlations' windows.
//!
//! A source that can store it (`dac-mongo`'s change stream) stores it with
//! the position it belongs to in one atomic write
//! ([`crate::Source::commit_state`]), and hands it back at a restart,
//! which resumes at that position: fed the same events again, the
//! correlations fire exactly as an uninterrupted run's (their alert ids
//! are derived from the rule, the group and the window, so the alerts
//! already written are not written twice). The bytes are dac's own
//! format: a header naming it and its version, then the windows in
//! postcard, compact and fast to write.

use dac_detect::{Correlator, Restored, SavedCorrelator};

/// The bytes every saved state starts with.
const MAGIC: [u8; 8] = *b"dacstate";

/// The layout's version; a state of another version is refused, not
/// misread.
pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("encoding the correlation state: {0}")]
    Encode(postcard::Error),
    #[error("the stored state is not a dac state (its first bytes are not \"dacstate\")")]
    NotState,
    #[error(
        "the stored state is format {found}; this dac reads format {STATE_FORMAT} (an older or newer dac wrote it)"
    )]
    Format { found: u32 },
    #[error("the stored state is damaged: {0}")]
    Decode(postcard::Error),
}

/// A header naming the format and its version, then the body.
#[derive(serde::Serialize)]
struct Out<B: serde::Serialize> {
    magic: [u8; 8],
    format: u32,
    body: B,
}

#[derive(serde::Deserialize)]
struct Header {
    magic: [u8; 8],
    format: u32,
}

/// The bytes a bundle of states starts with.
const BUNDLE_MAGIC: [u8; 8] = *b"dacstset";

fn encode(magic: [u8; 8], body: impl serde::Serialize) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(&Out { magic, format: STATE_FORMAT, body }).map_err(StateError::Encode)
}

/// The body of bytes of [`encode`] with `magic`: the header checked, no
/// byte left over.
fn decode<B: serde::de::DeserializeOwned>(magic: [u8; 8], bytes: &[u8]) -> Result<B, StateError> {
    let (header, rest) = postcard::take_from_bytes::<Header>(bytes).map_err(|_| StateError::NotState)?;
    if header.magic != magic {
        return Err(StateError::NotState);
    }
    if header.format != STATE_FORMAT {
        return Err(StateError::Format { found: header.format });
    }
    match postcard::take_from_bytes::<B>(rest) {
        Ok((body, [])) => Ok(body),
        Ok(_) => Err(StateError::Decode(postcard::Error::DeserializeBadEncoding)),
        Err(err) => Err(StateError::Decode(err)),
    }
}

/// The correlator's windows as bytes.
pub(crate) fn save(correlator: &Correlator) -> Result<Vec<u8>, StateError> {
    encode(MAGIC, correlator.saved())
}

/// Restores the windows in `bytes` into `correlator`.
pub(crate) fn restore(correlator: &mut Correlator, bytes: &[u8]) -> Result<Restored, StateError> {
    Ok(correlator.restore(decode::<SavedCorrelator>(MAGIC, bytes)?))
}

/// One stream's states of several engines, by name (a `dac serve`
/// stream: each tenant's), as one state to store with the position.
pub fn bundle_states(parts: &[(String, Vec<u8>)]) -> Result<Vec<u8>, StateError> {
    encode(BUNDLE_MAGIC, parts)
}

/// The states of [`bundle_states`], by name.
pub fn unbundle_states(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StateError> {
    decode(BUNDLE_MAGIC, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_foreign_bytes_are_refused_by_name() {
        let parts = vec![("acme".to_owned(), vec![1, 2, 3]), ("globex".to_owned(), Vec::new())];
        assert_eq!(unbundle_states(&bundle_states(&parts).unwrap()).unwrap(), parts);
        let mut correlator = Correlator::default();
        let saved = save(&correlator).unwrap();
        assert!(restore(&mut correlator, &saved).is_ok());
        assert!(matches!(restore(&mut correlator, b"not a state at all"), Err(StateError::NotState)));
        assert!(matches!(unbundle_states(&saved), Err(StateError::NotState)));
        let mut newer = saved.clone();
        newer[8] = 9; // the format, one varint byte
        assert!(matches!(restore(&mut correlator, &newer), Err(StateError::Format { found: 9 })));
        assert!(matches!(restore(&mut correlator, &saved[..saved.len() - 1]), Err(StateError::Decode(_))));
    }
}
