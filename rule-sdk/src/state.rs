//! The rule's keyed state, kept by the host (`dac:rule/state` in
//! `wit/rule.wit`): values with a time to live, sliding-window counters and
//! sets of distinct values, read and written on behalf of one event.
//!
//! Natively (under `cargo test`) the same store the host uses
//! (`dac-state`) runs in the test's thread, so fixtures see the host's
//! semantics; [`crate::testing::reset_state`] empties it.

use crate::Event;
use std::time::Duration;

/// The rule's state on behalf of one event: [`Event::state`].
///
/// - The event's `hostname` scopes every key: the rule reads only what it
///   wrote for the same host.
/// - The event's `ts` is the time of each operation: a value set with a
///   time to live is read by events of that host before `ts + ttl`; a
///   window counts what happened in `(ts - window, ts]`.
/// - Values, counters and sets have keys of their own.
/// - Writes are kept when the evaluation succeeds; if it faults (a panic,
///   a limit), none of them is, so an event evaluated again does not count
///   twice.
/// - At the host's quota a write that needs a new key or more bytes is
///   refused and counted: [`State::set`] returns false, [`State::count`]
///   and [`State::distinct`] answer as if this occurrence were recorded,
///   but it is not kept.
pub struct State<'e> {
    event: &'e Event,
}

/// Milliseconds, saturating: a longer time to live than ~584 million years
/// is forever anyway.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Event {
    /// The rule's keyed state, on behalf of this event (see [`State`]).
    pub fn state(&self) -> State<'_> {
        State { event: self }
    }
}

#[cfg(target_arch = "wasm32")]
impl State<'_> {
    /// The value under `key`, if one is set and has not expired at the
    /// event's time.
    pub fn get(&self, key: &str) -> Option<String> {
        crate::bindings::dac::rule::state::get(self.event.index(), key)
    }

    /// Sets `key` to `value` until `ttl` after the event's time; false when
    /// refused at the quota.
    pub fn set(&self, key: &str, value: &str, ttl: Duration) -> bool {
        crate::bindings::dac::rule::state::set(self.event.index(), key, value, ms(ttl))
    }

    /// Removes the value under `key`.
    pub fn remove(&self, key: &str) {
        crate::bindings::dac::rule::state::remove(self.event.index(), key)
    }

    /// Records an occurrence of `key` at the event's time: how many fall in
    /// the `window` up to it, this one included.
    pub fn count(&self, key: &str, window: Duration) -> u32 {
        crate::bindings::dac::rule::state::count(self.event.index(), key, ms(window))
    }

    /// Records `member` in the set `key` at the event's time: how many
    /// distinct members the set holds in the `window` up to it, this one
    /// included.
    pub fn distinct(&self, key: &str, member: &str, window: Duration) -> u32 {
        crate::bindings::dac::rule::state::distinct(self.event.index(), key, member, ms(window))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native {
    use std::cell::RefCell;

    thread_local! {
        /// The test thread's store: each test runs on a thread of its own,
        /// so tests do not see each other's state.
        pub(crate) static STORE: RefCell<(dac_state::Store, dac_state::Journal)> =
            RefCell::new((dac_state::Store::new(dac_state::StateLimits::default()), dac_state::Journal::default()));
    }

    /// Runs `op` on the thread's store for `event`; a fault (a key over the
    /// limit) panics, as it would fault the call in the host.
    pub(crate) fn with<T>(
        event: &crate::Event,
        op: impl FnOnce(
            &mut dac_state::Store,
            &mut dac_state::Journal,
            &dac_state::At<'_>,
        ) -> Result<T, dac_state::StateFault>,
    ) -> T {
        let host = event.text("hostname").unwrap_or_default();
        let ts = match event.get("ts") {
            Some(crate::Value::Integer(ms) | crate::Value::DateTime(ms)) => Some(ms),
            Some(crate::Value::Float(f)) if f.is_finite() => Some(f as i64),
            _ => None,
        };
        // Natively there is one rule per test binary: its name is the scope.
        let at = dac_state::At { rule: "", host: &host, ts };
        STORE.with_borrow_mut(|(store, journal)| {
            let result = op(store, journal, &at);
            journal.commit();
            result.unwrap_or_else(|fault| panic!("state fault (the host would fault the call): {fault}"))
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl State<'_> {
    /// The value under `key`, if one is set and has not expired at the
    /// event's time.
    pub fn get(&self, key: &str) -> Option<String> {
        native::with(self.event, |store, _, at| store.get(at, key))
    }

    /// Sets `key` to `value` until `ttl` after the event's time; false when
    /// refused at the quota.
    pub fn set(&self, key: &str, value: &str, ttl: Duration) -> bool {
        native::with(self.event, |store, journal, at| store.set(journal, at, key, value, ms(ttl)))
    }

    /// Removes the value under `key`.
    pub fn remove(&self, key: &str) {
        native::with(self.event, |store, journal, at| store.remove(journal, at, key))
    }

    /// Records an occurrence of `key` at the event's time: how many fall in
    /// the `window` up to it, this one included.
    pub fn count(&self, key: &str, window: Duration) -> u32 {
        native::with(self.event, |store, journal, at| store.count(journal, at, key, ms(window)))
    }

    /// Records `member` in the set `key` at the event's time: how many
    /// distinct members the set holds in the `window` up to it, this one
    /// included.
    pub fn distinct(&self, key: &str, member: &str, window: Duration) -> u32 {
        native::with(self.event, |store, journal, at| store.distinct(journal, at, key, member, ms(window)))
    }
}
