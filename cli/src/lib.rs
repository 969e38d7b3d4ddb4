//! The `dac` command line: one module per command in [`commands`] (the
//! `dac` binary dispatches to them, and `dac-run` is [`commands::run`]
//! under its own name), the flags several commands share, and what only
//! the command line needs around the engine: watching rule files for hot
//! reload, running rules' test cases (`dac test`), and writing YAML and
//! Sigma rules into the matcher component (`dac build`).

mod args;
mod builder;
pub mod commands;
mod health;
mod reload;
mod report;
mod testing;

pub use builder::{build as build_rule, template as matcher_template, BuildError, Built, MappingFile};
pub use reload::{RuleWatcher, WatchError};
