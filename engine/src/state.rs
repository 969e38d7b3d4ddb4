//! What a stream must keep beside its position for a restart to go on
//! exactly where it stopped: the correlations' windows and the code rules'
//! keyed state (`dac:rule/state`).
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
use dac_state::{RestoredStore, SavedStore, Store};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// The field whose value keeps a host's events on one worker when rules
/// keep state (the exec event's host name), and scopes a code rule's keyed
/// state.
pub const PARTITION_FIELD: &str = "hostname";

/// A rule set's keyed state, shared by the engine, its replicas and its
/// components' instances.
pub(crate) type SharedState = Arc<Mutex<Store>>;

/// The store behind `state`, even if a thread panicked holding it (a
/// store's operations leave it consistent at every step).
pub(crate) fn lock_state(state: &SharedState) -> MutexGuard<'_, Store> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bytes every saved state starts with.
const MAGIC: [u8; 8] = *b"dacstate";

/// The layout's version; a state of another version is refused, not
/// misread. Format 1 (correlations only) is still read.
pub const STATE_FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("encoding the correlation state: {0}")]
    Encode(postcard::Error),
    #[error("the stored state is not a dac state (its first bytes are not \"dacstate\")")]
    NotState,
    #[error("the stored state is format {found}; this dac reads formats 1 to {STATE_FORMAT} (a newer dac wrote it)")]
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

/// The format and body of bytes of [`encode`] with `magic`: the header
/// checked, no byte left over. `body` reads the body of a format.
fn decode<B>(
    magic: [u8; 8],
    bytes: &[u8],
    body: impl FnOnce(u32, &[u8]) -> postcard::Result<(B, &[u8])>,
) -> Result<B, StateError> {
    let (header, rest) = postcard::take_from_bytes::<Header>(bytes).map_err(|_| StateError::NotState)?;
    if header.magic != magic {
        return Err(StateError::NotState);
    }
    if header.format == 0 || header.format > STATE_FORMAT {
        return Err(StateError::Format { found: header.format });
    }
    match body(header.format, rest) {
        Ok((body, [])) => Ok(body),
        Ok(_) => Err(StateError::Decode(postcard::Error::DeserializeBadEncoding)),
        Err(err) => Err(StateError::Decode(err)),
    }
}

/// Format 2's body: format 1's (the windows alone) and the code rules'
/// state.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Saved<C> {
    pub(crate) correlations: C,
    pub(crate) rules: SavedStore,
}

/// The correlator's windows and the rules' keyed state as bytes.
pub(crate) fn save(correlator: &Correlator, store: &Store) -> Result<Vec<u8>, StateError> {
    encode(MAGIC, Saved { correlations: correlator.saved(), rules: store.saved() })
}

/// A state of [`save`], read back (any format this dac reads).
pub(crate) fn read(bytes: &[u8]) -> Result<Saved<SavedCorrelator>, StateError> {
    decode(MAGIC, bytes, |format, rest| match format {
        1 => postcard::take_from_bytes::<SavedCorrelator>(rest)
            .map(|(correlations, rest)| (Saved { correlations, rules: SavedStore::default() }, rest)),
        _ => postcard::take_from_bytes::<Saved<SavedCorrelator>>(rest),
    })
}

/// Restores the windows and keyed state of a state [`read`] into
/// `correlator` and `store`, keeping the keyed state of the rules in
/// `running` (uuids).
pub(crate) fn restore_saved(
    correlator: &mut Correlator,
    store: &mut Store,
    running: &HashSet<&str>,
    saved: Saved<SavedCorrelator>,
) -> (Restored, RestoredStore) {
    (correlator.restore(saved.correlations), store.restore(saved.rules, running))
}

/// One stream's states of several engines, by name (a `dac serve`
/// stream: each tenant's), as one state to store with the position.
pub fn bundle_states(parts: &[(String, Vec<u8>)]) -> Result<Vec<u8>, StateError> {
    encode(BUNDLE_MAGIC, parts)
}

/// The states of [`bundle_states`], by name.
pub fn unbundle_states(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StateError> {
    // The bundle's layout is the same in every format.
    decode(BUNDLE_MAGIC, bytes, |_, rest| postcard::take_from_bytes(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`read`] then [`restore_saved`].
    fn restore(
        correlator: &mut Correlator,
        store: &mut Store,
        running: &HashSet<&str>,
        bytes: &[u8],
    ) -> Result<(Restored, RestoredStore), StateError> {
        Ok(restore_saved(correlator, store, running, read(bytes)?))
    }

    #[test]
    fn states_round_trip_and_foreign_bytes_are_refused_by_name() {
        let parts = vec![("acme".to_owned(), vec![1, 2, 3]), ("globex".to_owned(), Vec::new())];
        assert_eq!(unbundle_states(&bundle_states(&parts).unwrap()).unwrap(), parts);
        let (mut correlator, mut store) = (Correlator::default(), Store::default());
        let running = HashSet::from(["rule-1"]);
        let mut journal = dac_state::Journal::default();
        let at = dac_state::At { rule: "rule-1", host: "web-01", ts: Some(0) };
        store.set(&mut journal, &at, "k", "v", 1_000).unwrap();
        let saved = save(&correlator, &store).unwrap();
        let mut back = Store::default();
        let (_, restored) = restore(&mut correlator, &mut back, &running, &saved).unwrap();
        assert_eq!(restored.keys, 1);
        assert_eq!(back.get(&at, "k").unwrap().as_deref(), Some("v"));
        let mut restore = |bytes: &[u8]| restore(&mut correlator, &mut back, &running, bytes);
        assert!(matches!(restore(b"not a state at all"), Err(StateError::NotState)));
        assert!(matches!(unbundle_states(&saved), Err(StateError::NotState)));
        let mut newer = saved.clone();
        newer[8] = 9; // the format, one varint byte
        assert!(matches!(restore(&newer), Err(StateError::Format { found: 9 })));
        assert!(matches!(restore(&saved[..saved.len() - 1]), Err(StateError::Decode(_))));
    }

    #[test]
    fn a_format_1_state_is_still_read() {
        let mut correlator = Correlator::default();
        let old = postcard::to_allocvec(&Out { magic: MAGIC, format: 1, body: correlator.saved() }).unwrap();
        let mut store = Store::default();
        assert!(restore(&mut correlator, &mut store, &HashSet::new(), &old).is_ok());
        assert!(store.is_empty());
    }
}
