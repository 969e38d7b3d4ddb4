//! Write dac detection rules in Rust.
//!
//! A rule is a function from an [`Event`] to findings, plus its metadata:
//!
//! ```ignore
//! use dac_rule_sdk::prelude::*;
//!
//! dac_rule_sdk::rule! {
//!     name: "Suspicious /etc/shadow Usage",
//!     uuid: "5e3566a3-9f19-4ac7-8710-ec5fb09260ed",
//!     severity: High,
//!     prefilter: { fields: ["command_line"], literals: ["/etc/shadow"] },
//!     evaluate: shadow,
//! }
//!
//! fn shadow(event: &Event) -> Option<Finding> {
//!     let command_line = event.text("command_line")?;
//!     contains(&command_line, "/etc/shadow")
//!         .then(|| Finding::new("/etc/shadow read").matched("command_line", command_line))
//! }
//! ```
//!
//! Built with `cargo build --target wasm32-wasip2` the crate is a component
//! of the `dac:rule` world (see `wit/rule.wit`) that the dac host runs in its
//! sandbox. Built natively, the same code runs under `cargo test`: [`Event`]
//! is then backed by `dac-event`, the very code the host uses to answer a
//! rule's field lookups, and [`fixture_tests!`] turns a rule's fixture files
//! into tests.
//!
//! A rule that needs several events (a threshold, a sequence) keeps its
//! state in the host, through [`Event::state`]: values with a time to
//! live, sliding-window counters and distinct sets, per host and in event
//! time ([`State`]; natively, the host's own store, `dac-state`).

mod event;
pub mod matchers;
pub mod shell;
mod state;
mod types;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use event::Event;
pub use state::State;
pub use types::{Finding, IntoFindings, MatchedField, Metadata, Prefilter, Severity, Value};

/// Everything a rule usually needs, in one `use`.
pub mod prelude {
    pub use crate::matchers::*;
    pub use crate::{log, Event, Finding, Metadata, Rule, Severity, State, Value};
    pub use std::time::Duration;
}

/// A detection rule. Implemented by [`rule!`]; implement it by hand only to
/// compute metadata at run time.
pub trait Rule {
    fn metadata() -> Metadata;
    fn evaluate(event: &Event) -> Vec<Finding>;
}

/// Log levels of [`log()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Sends a log line to the host, attributed to this rule. The host
/// rate-limits rule logs; natively the line goes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use bindings::dac::rule::host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[rule {level:?}] {message}");
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "rule",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_rule_world",
        default_bindings_module: "dac_rule_sdk::bindings",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod component;

/// Declares a rule: its metadata and the function that evaluates an event.
///
/// The function takes `&Event` and returns `Option<Finding>`,
/// `Vec<Finding>` or `bool` (see [`IntoFindings`]). The macro defines a unit
/// struct `DetectionRule` implementing [`Rule`] and, when building for
/// WebAssembly, exports it as the component's `metadata` and `evaluate`.
/// `version` defaults to the crate's version; `severity` is one of
/// `Informational`, `Low`, `Medium`, `High`, `Critical`. `fields` lists the
/// paths whose values the host hands over with each event (reading them
/// costs no call out of the sandbox); it defaults to the prefilter's
/// fields. Any other path can still be read.
#[macro_export]
macro_rules! rule {
    (
        name: $name:expr,
        uuid: $uuid:expr,
        $(version: $version:expr,)?
        severity: $severity:ident,
        $(description: $description:expr,)?
        $(tags: [$($tag:expr),* $(,)?],)?
        $(prefilter: {
            fields: [$($field:expr),* $(,)?],
            literals: [$($literal:expr),* $(,)?]
            $(, ascii_case_insensitive: $case_insensitive:expr)?
            $(,)?
        },)?
        $(fields: [$($read:expr),* $(,)?],)?
        evaluate: $evaluate:path $(,)?
    ) => {
        /// This crate's detection rule.
        pub struct DetectionRule;

        impl $crate::Rule for DetectionRule {
            fn metadata() -> $crate::Metadata {
                #[allow(unused_mut)]
                let mut version = env!("CARGO_PKG_VERSION").to_string();
                $(version = ::std::string::ToString::to_string(&$version);)?
                #[allow(unused_mut)]
                let mut metadata = $crate::Metadata::new($name, $uuid, version, $crate::Severity::$severity);
                $(metadata.description = ::std::string::ToString::to_string(&$description);)?
                $(metadata.tags = vec![$(::std::string::ToString::to_string(&$tag)),*];)?
                $(metadata.prefilter = Some($crate::Prefilter {
                    fields: vec![$(::std::string::ToString::to_string(&$field)),*],
                    literals: vec![$(::std::string::ToString::to_string(&$literal)),*],
                    ascii_case_insensitive: false $(|| $case_insensitive)?,
                });)?
                // The fields that come with each event: the prefilter's,
                // unless the rule lists them.
                metadata.fields = metadata.prefilter.as_ref().map(|p| p.fields.clone()).unwrap_or_default();
                $(metadata.fields = vec![$(::std::string::ToString::to_string(&$read)),*];)?
                metadata
            }

            fn evaluate(event: &$crate::Event) -> Vec<$crate::Finding> {
                $crate::IntoFindings::into_findings($evaluate(event))
            }
        }

        $crate::__export_component!(DetectionRule);
    };
}

/// Generates `must_fire`, `must_not_fire`, `sequences` and
/// `prefilter_admits_every_must_fire_fixture` tests for a rule from its
/// fixture files (`fixtures/` beside the crate's `Cargo.toml`; see
/// [`testing`]).
#[macro_export]
macro_rules! fixture_tests {
    ($rule:ty) => {
        #[cfg(all(test, not(target_arch = "wasm32")))]
        mod dac_fixture_tests {
            #[allow(unused_imports)]
            use super::*;

            fn dir() -> ::std::path::PathBuf {
                ::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
            }

            #[test]
            fn must_fire() {
                $crate::testing::check_fixtures::<$rule>(&dir(), $crate::testing::Expect::Fire);
            }

            #[test]
            fn must_not_fire() {
                $crate::testing::check_fixtures::<$rule>(&dir(), $crate::testing::Expect::NoFire);
            }

            #[test]
            fn sequences() {
                $crate::testing::check_sequences::<$rule>(&dir());
            }

            #[test]
            fn prefilter_admits_every_must_fire_fixture() {
                $crate::testing::check_prefilter::<$rule>(&dir());
            }
        }
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_component {
    ($rule:ty) => {
        struct __DacComponent;
        impl $crate::bindings::Guest for __DacComponent {
            fn metadata() -> $crate::bindings::dac::rule::types::Metadata {
                $crate::component::metadata::<$rule>()
            }
            fn evaluate(
                batch: &$crate::bindings::dac::rule::types::Batch,
                fields: $crate::bindings::dac::rule::types::Fields,
            ) -> ::std::vec::Vec<::std::vec::Vec<$crate::bindings::dac::rule::types::Finding>> {
                $crate::component::evaluate::<$rule>(batch, fields)
            }
        }
        $crate::bindings::export_rule_world!(__DacComponent with_types_in $crate::bindings);
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_component {
    ($rule:ty) => {};
}
