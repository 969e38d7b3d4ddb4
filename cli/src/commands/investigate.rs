//! `dac investigate`: what happened around an alert.

use crate::args::{environment_help, Format, MongoArgs, MongoSettings};
use dac_investigate as investigate;
use dac_mongo::{redact, Connection};
use std::io::Write;
use std::path::PathBuf;

/// Shows what happened around an alert: the host's timeline and the
/// alerting process's tree.
///
/// The timeline is every event of the alert's host within --window of the
/// alerting event, oldest first (for a correlation's alert, the events of
/// its window are listed first, `+` in the timeline): `*` marks the alerting event, `!` events
/// other alerts name. The process tree, like `ps -ef --forest`, shows the
/// alerting process's ancestors as far up as the data goes and its
/// descendants within the window; a parent is the latest exec of the
/// parent pid on the host before the child, so reused pids are not
/// confused, and a process that execs again (same pid and parent) is
/// nested under its previous image, marked `(exec)`.
///
/// Indexes on the event collection — (hostname, ts) and (hostname, pid,
/// ts) — and on the alert collection (event_id) are created on first use
/// (or by `dac init`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = concat!("Exit status: 0 shown; 2 usage error, unknown alert, database error.\n\n", environment_help!())
)]
pub struct InvestigateArgs {
    /// The alert's `_id` (32 hex digits, as in the alert collection).
    #[arg(value_name = "ALERT_ID", required_unless_present = "last", conflicts_with = "last")]
    alert_id: Option<String>,

    /// Investigate the newest N alerts (by detection time) instead.
    #[arg(long, value_name = "N")]
    last: Option<usize>,

    /// With --last: only alerts of this rule (its name or uuid).
    #[arg(long, value_name = "NAME|UUID", requires = "last")]
    rule: Option<String>,

    /// With --last: only alerts on this host.
    #[arg(long, value_name = "HOSTNAME", requires = "last")]
    host: Option<String>,

    /// How far either side of the alerting event the timeline reaches, in
    /// seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    window: u64,

    /// Events of the window read at most (the timeline says when it was
    /// cut).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_events: usize,

    /// `text` for people; `json` for tools: one JSON object per alert,
    /// one per line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Do not create the indexes (e.g. with a read-only user).
    #[arg(long)]
    no_create_indexes: bool,

    /// A settings file (TOML; `dac watch`'s): its mongodb_uri, database,
    /// collection and alert_collection are used, other keys ignored.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    mongo: MongoArgs,
}

pub(crate) fn investigation_target(settings: &MongoSettings) -> investigate::Target {
    investigate::Target {
        database: settings.database.clone(),
        events: settings.collection.clone(),
        alerts: settings.alert_collection.clone(),
    }
}

pub fn run(args: InvestigateArgs) -> Result<(), String> {
    let settings = args.mongo.resolve_with(args.config.as_deref())?;
    let connection = Connection::open(&settings.uri).map_err(|err| err.to_string())?;
    let target = investigation_target(&settings);
    if args.last.is_none() && (args.rule.is_some() || args.host.is_some()) {
        return Err("--rule and --host select among the latest alerts: use them with --last N".into());
    }
    let unreachable = |err: investigate::InvestigateError| {
        let hint = if err.is_unreachable() {
            format!("\n  is MongoDB running at {}? (--mongodb-uri, MONGODB_URI)", redact(&settings.uri))
        } else {
            String::new()
        };
        format!("{err}{hint}")
    };
    if !args.no_create_indexes {
        match investigate::ensure_indexes(&connection, &target) {
            Ok(_) => {}
            // A read-only user may investigate without them.
            Err(err) if err.is_unauthorized() => {
                tracing::warn!("{err}; investigating without it (pass --no-create-indexes to skip)")
            }
            Err(err) => return Err(unreachable(err)),
        }
    }
    let query = investigate::Query {
        window_ms: i64::try_from(args.window.saturating_mul(1000)).unwrap_or(i64::MAX),
        max_events: args.max_events.max(1),
    };
    let investigations = match (&args.alert_id, args.last) {
        (Some(id), _) => vec![investigate::investigate_id(&connection, &target, id, query).map_err(unreachable)?],
        (None, Some(count)) => {
            let alerts =
                investigate::latest_alerts(&connection, &target, count, args.rule.as_deref(), args.host.as_deref())
                    .map_err(unreachable)?;
            alerts
                .iter()
                .map(|alert| investigate::investigate(&connection, &target, alert, query))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| err.to_string())?
        }
        (None, None) => unreachable!("clap requires ALERT_ID or --last"),
    };
    let mut out = std::io::stdout().lock();
    for (i, investigation) in investigations.iter().enumerate() {
        let written = match args.format {
            Format::Text if i > 0 => write!(out, "\n{}", investigation.render_text()),
            Format::Text => write!(out, "{}", investigation.render_text()),
            Format::Json => writeln!(out, "{}", investigation.to_json()),
        };
        written.map_err(|err| format!("writing to stdout: {err}"))?;
    }
    Ok(())
}
