//! `dac init`: the indexes `dac investigate` needs.

use crate::args::environment_help;
use crate::args::MongoArgs;
use crate::commands::investigate::investigation_target;
use dac_investigate as investigate;
use dac_mongo::Connection;
use std::path::PathBuf;

/// Creates the indexes `dac investigate` queries by (idempotent).
///
/// On the event collection: {hostname: 1, ts: 1} (the timeline) and
/// {hostname: 1, pid: 1, ts: 1} (each ancestor: the latest exec of a pid
/// before a time); on the alert collection: {event_id: 1} (the alerts in
/// the window). Creating an index that exists does nothing.
#[derive(Debug, clap::Args)]
#[command(after_help = environment_help!())]
pub struct InitArgs {
    /// A settings file (TOML; `dac watch`'s): its mongodb_uri, database,
    /// collection and alert_collection are used, other keys ignored.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    mongo: MongoArgs,
}

pub fn run(args: InitArgs) -> Result<(), String> {
    let settings = args.mongo.resolve_with(args.config.as_deref())?;
    let connection = Connection::open(&settings.uri).map_err(|err| err.to_string())?;
    let target = investigation_target(&settings);
    for index in investigate::ensure_indexes(&connection, &target).map_err(|err| err.to_string())? {
        println!("index {index}");
    }
    Ok(())
}
