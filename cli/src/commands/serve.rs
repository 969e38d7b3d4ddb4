//! `dac serve`: many tenants' rules, managed over HTTP, fed by shared
//! change streams.

use crate::args::{environment_help, named, MappingArgs};
use dac_engine::Compiler;
use dac_mongo::{redact, BucketFilter, Connection, HistoryLost, Partition, Partitioning, StartAt};
use dac_serve::{Service, StreamSettings, Streams};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Hosts many tenants' rules and manages them over an HTTP API.
///
/// Each tenant of the --tenants file (TOML) has its own rules, kept in
/// STATE-DIR/tenants/ID/rules/, its own sandbox and limits, and a bearer
/// token; the admin token lists tenants and reads the audit log
/// (STATE-DIR/audit.jsonl). An uploaded rule is checked (world, size,
/// compilation, YAML/Sigma parse, uuid clash) before it goes live, without
/// a restart; a refused upload leaves the previous version running.
///
/// With --mongodb-uri, each collection the tenants' scopes name is watched
/// by one change stream, shared by its tenants; each event is evaluated by
/// the rules of the tenants whose scope takes it, and alerts go to each
/// tenant's alert collection. One checkpoint per stream is stored once
/// every tenant's alerts before it are written: a restart loses and
/// duplicates nothing. Without --mongodb-uri, rules are managed and
/// dry-run only.
#[derive(Debug, clap::Args)]
#[command(
    after_help = concat!("API (Authorization: Bearer TOKEN):\n  GET    /v1/tenants/{tenant}/rules                  the tenant's live rules\n  GET    /v1/tenants/{tenant}/rules/{name}           a rule's bytes\n  PUT    /v1/tenants/{tenant}/rules/{name}           upload (body: a .wasm component or a YAML/Sigma rule)\n  DELETE /v1/tenants/{tenant}/rules/{name}           remove\n  POST   /v1/tenants/{tenant}/rules/{name}/disable   keep stored, stop running (enable: run again)\n  POST   /v1/tenants/{tenant}/dry-run                events (NDJSON or a JSON array) -> the alerts all rules would raise\n  POST   /v1/tenants/{tenant}/rules/{name}/dry-run   the same, one rule\n  GET    /v1/tenants/{tenant}/alerts?limit=N         the newest alerts of the tenant's alert collection\n  GET    /v1/tenants/{tenant}/audit?after=SEQ&limit=N  a page of the tenant's audit trail\n  GET    /v1/tenants                                 (admin) the tenants\n  POST   /v1/tenants/reload                          (admin) read the tenants file again and apply it\n  GET    /v1/audit?after=SEQ&limit=N&tenant=ID       (admin) a page of the audit log\n\n`dac token` makes a token and the hash the tenants file holds.\nSIGINT or SIGTERM: finish the requests in flight and each stream's current event, write\nthe alerts, store the checkpoints, exit 0. SIGHUP: read the tenants file again.\n\n",
    environment_help!()
))]
pub struct ServeArgs {
    /// The tenants file (TOML; see docs/serve.md): who may use the server,
    /// each tenant's events, limits and alert collection.
    #[arg(long, value_name = "FILE")]
    tenants: PathBuf,

    /// Where rules and the audit log are kept (created if missing).
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,

    /// Address to listen on (plain HTTP: put TLS in front).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,

    #[command(flatten)]
    mapping: MappingArgs,

    /// MongoDB connection string (the seed's CHANGE_STREAM_DB also works);
    /// without it no events are read.
    #[arg(long, env = "MONGODB_URI", value_name = "URI", hide_env_values = true)]
    mongodb_uri: Option<String>,

    /// Database of the tenants' event and alert collections.
    #[arg(
        long = "db",
        env = "CHANGE_DB_NAME",
        value_name = "NAME",
        hide_env_values = true,
        default_value = "monitoring"
    )]
    database: String,

    /// Where the streams' checkpoints are kept (one per watched
    /// collection). Not `dac watch`'s `config`: the two keep the same
    /// checkpoint id for a collection, and must not share one.
    #[arg(long, value_name = "NAME", default_value = "serve_config")]
    config_collection: String,

    /// Where to start: after the stored checkpoints (from now when there
    /// are none), or from now.
    #[arg(long, value_name = "WHERE", default_value = "stored", value_parser = named::<StartAt>(StartAt::NAMES))]
    start_at: StartAt,

    /// When a stored checkpoint is no longer in the server's history: stop
    /// with an error, or warn, count the gap and go on from now.
    #[arg(long, value_name = "WHAT", default_value = "stop", value_parser = named::<HistoryLost>(HistoryLost::NAMES))]
    on_history_lost: HistoryLost,

    /// Threads delivering each stream's events to its tenants [default:
    /// the machine's cores]: a stream's tenants are evaluated side by side,
    /// each tenant's events in stream order on one thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,

    /// Seconds between stores of the tenants' correlation windows with
    /// each stream's checkpoint (only when correlations run). A restart
    /// resumes at the last one, so after a crash up to this much of the
    /// stream is evaluated again; its alerts are not written twice.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    state_interval: u64,

    /// Read only partition K of N of each stream (K from 0), so that N
    /// servers with the same tenants share the events, each evaluated by
    /// one (docs/scale.md) [default: 0/1, the whole stream].
    #[arg(long, value_name = "K/N", default_value = "0/1")]
    partition: Partition,

    /// The field whose value decides an event's partition; every tenant's
    /// correlations must group by it.
    #[arg(long, value_name = "FIELD", default_value = "hostname")]
    partition_key: String,

    /// How the server picks a partition's events: by the `dac_bucket`
    /// field written at insert time (any MongoDB), or by hashing the
    /// partition key in the change stream (MongoDB 7.0 or later).
    #[arg(long, value_name = "HOW", default_value = "field", value_parser = named::<BucketFilter>(BucketFilter::NAMES))]
    bucket_filter: BucketFilter,
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the async runtime: {err}"))?;
    // Caught from the start: SIGHUP's default action ends the process, and a
    // reload asked for while the rules load is applied once they are served.
    let hangup = {
        let _context = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    };
    let config = dac_serve::ServeConfig::read(&args.tenants).map_err(|err| err.to_string())?;
    let mapping = args.mapping.load()?;
    let tenants = config.tenants.len();
    let listen = args.listen;
    // Each upload compiles in a child process (this binary's hidden
    // `compile-component` command), bounded by the tenant's compile limits
    // and stopped when its client goes away or the server stops.
    let program =
        std::env::current_exe().map_err(|err| format!("finding this program, to compile uploads with: {err}"))?;
    let compiler = Compiler::Child { program, args: vec!["compile-component".into()] };
    let service = Arc::new(Service::open(config, &args.state_dir, mapping, compiler).map_err(|err| err.to_string())?);
    service.set_config_file(args.tenants.clone());
    // Set by SIGINT/SIGTERM, or by a stream that cannot go on.
    let shutdown = Arc::new(AtomicBool::new(false));
    let uri = args.mongodb_uri.or_else(|| std::env::var("CHANGE_STREAM_DB").ok().filter(|uri| !uri.is_empty()));
    let streams = match uri {
        Some(uri) => {
            let connection = Connection::open(&uri).map_err(|err| err.to_string())?;
            let settings = StreamSettings {
                database: args.database.clone(),
                config_collection: args.config_collection,
                start_at: args.start_at,
                history_lost: args.on_history_lost,
                flush_interval: Duration::from_millis(250),
                state_interval: Duration::from_secs(args.state_interval),
                threads: args.threads.map_or_else(dac_engine::default_threads, usize::from),
                partitioning: Partitioning {
                    partition: args.partition,
                    key: args.partition_key.clone(),
                    filter: args.bucket_filter,
                },
            };
            let streams = Streams::start(&service, &connection, &settings, shutdown.clone()).map_err(|err| {
                format!("{err}\n  is MongoDB running at {} with change streams (a replica set)?", redact(&uri))
            })?;
            service.attach_alerts(connection, args.database);
            Some(streams)
        }
        None => {
            tracing::warn!("no --mongodb-uri (or MONGODB_URI): rules are managed and dry-run, but no events are read");
            None
        }
    };
    let stop = shutdown.clone();
    let served = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|err| format!("--listen {listen}: {err}"))?;
        let address = listener.local_addr().map_err(|err| err.to_string())?;
        tracing::info!("serving {tenants} tenants on http://{address}/v1/");
        tokio::spawn(reload_on_sighup(hangup, service.clone()));
        let stopping = service.clone();
        let shutdown = async move {
            shutdown_signal(stop).await;
            // Compilations in progress end now, not after the grace period.
            stopping.stop_work();
        };
        dac_serve::serve(service, listener, shutdown).await.map_err(|err| err.to_string())
    });
    // The streams end at their next poll: alerts written, positions stored.
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let streamed = streams.map_or(Ok(()), |streams| streams.join().map_err(|err| err.to_string()));
    served.and(streamed)
}

/// Reads the tenants file again at each SIGHUP, as `POST /v1/tenants/reload`
/// does (audited as `dac`).
async fn reload_on_sighup(hangup: std::io::Result<tokio::signal::unix::Signal>, service: Arc<Service>) {
    let Ok(mut hangup) = hangup else {
        tracing::warn!("SIGHUP cannot be caught here; reload the tenants file with POST /v1/tenants/reload");
        return;
    };
    while hangup.recv().await.is_some() {
        let service = service.clone();
        match tokio::task::spawn_blocking(move || service.reload_file("dac")).await {
            Ok(Ok(changes)) => tracing::info!("SIGHUP: tenants file reloaded, {} tenant changes", changes.len()),
            Ok(Err(err)) => tracing::error!("SIGHUP: the tenants file was not applied: {err}"),
            Err(err) => tracing::error!("SIGHUP: reloading the tenants file panicked: {err}"),
        }
    }
}

/// Completes on SIGINT or SIGTERM, or once `stop` is set (a stream failed).
async fn shutdown_signal(stop: Arc<AtomicBool>) {
    let stopped = async {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::error!("stopping: a change stream ended");
    };
    tokio::select! {
        _ = signalled() => {}
        _ = stopped => {}
    }
}

async fn signalled() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return interrupt.await.unwrap_or(()),
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: finishing the requests in flight and the streams' current events");
}
