//! `dac-probe`: captures every successful exec on this host with an eBPF
//! tracepoint and writes each as a dac event — the seed's schema plus
//! argv, user and parent — to a MongoDB collection (`dac watch` reads it)
//! or to stdout as NDJSON (`dac-probe --stdout | dac-run rules/ --replay -`).

use anyhow::{bail, Context as _};
use clap::Parser;
use dac_probe::event::{decode, hostname, ip_address, Enricher, ProcessEvent};
use dac_probe::mongo::{write_stats, MongoWriter, WriterConfig};
use dac_probe::probe::{KernelCounters, Probe};
use mongodb::bson::{doc, Document};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "dac-probe",
    version,
    about = "Capture every exec on this host (eBPF) and write it as a dac event to MongoDB or stdout",
    after_help = "Environment:\n  MONGODB_URI (or the seed's CHANGE_STREAM_DB), CHANGE_DB_NAME, CHANGE_COLLECTION_NAME: as the flags\n  DAC_LOG  log filter (default: info)\n\nRuns as root. SIGINT or SIGTERM: stop capturing, write what is buffered, print the summary.\nExit status: 0 done; 2 usage or setup error; 3 done, but some events were lost (counted in the summary)."
)]
struct Cli {
    /// Write events to stdout as NDJSON instead of MongoDB.
    #[arg(long)]
    stdout: bool,

    /// MongoDB connection string.
    #[arg(long, env = "MONGODB_URI", value_name = "URI", hide_env_values = true)]
    mongodb_uri: Option<String>,

    /// Database of the event and stats collections.
    #[arg(long = "db", env = "CHANGE_DB_NAME", value_name = "NAME", default_value = "monitoring")]
    database: String,

    /// The event collection (the one `dac watch` reads).
    #[arg(long, env = "CHANGE_COLLECTION_NAME", value_name = "NAME", default_value = "process")]
    collection: String,

    /// Where the run's counters are kept, one document per run.
    #[arg(long, value_name = "NAME", default_value = "probe_stats")]
    stats_collection: String,

    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,

    /// Ring buffer size in bytes (K/M/G suffixes): a power of two, at least a page.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    ring_buffer_size: u32,

    /// How often the ring buffer is read (the kernel does not wake the
    /// reader per event).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    poll_interval_ms: u64,

    /// Most events in one MongoDB insert.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    batch_size: usize,

    /// Longest an event waits for its batch to fill.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    batch_latency_ms: u64,

    /// Events held while MongoDB is slow or unreachable; beyond this they
    /// are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    buffer_events: usize,

    /// Seconds between stats lines (and stats documents).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    stats_interval: u64,

    /// The `hostname` field [default: this host's name].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,

    /// The `ip_address` field [default: the address this host's name resolves to].
    #[arg(long, value_name = "IP")]
    ip_address: Option<String>,
}

fn parse_size(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((at, 'k' | 'K')) => (&text[..at], 1u64 << 10),
        Some((at, 'm' | 'M')) => (&text[..at], 1 << 20),
        Some((at, 'g' | 'G')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    let value = digits.parse::<u64>().map_err(|_| format!("{text:?} is not a size (e.g. 4096, 256K, 16M)"))?;
    u32::try_from(value * multiplier).map_err(|_| format!("{text}: larger than 2 GiB"))
}

/// Where events go.
enum Output {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Mongo(MongoWriter),
}

/// Everything counted during a run, for the stats lines and the summary.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    captured: u64,
    malformed: u64,
    written: u64,
    /// Dropped in userspace: the MongoDB queue was full, or shutdown gave up.
    user_dropped: u64,
    /// Captured but not written because the output failed (stdout closed);
    /// an event counts as written only once its line is flushed.
    unwritten: u64,
    /// Lines in stdout's buffer, not yet flushed.
    buffered: u64,
    kernel: KernelCounters,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match run(cli) {
        Ok(counts) if counts.kernel.dropped + counts.user_dropped + counts.unwritten > 0 => ExitCode::from(3),
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dac-probe: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Counts> {
    let mongodb_uri =
        cli.mongodb_uri.clone().or_else(|| std::env::var("CHANGE_STREAM_DB").ok().filter(|uri| !uri.is_empty()));
    if !cli.stdout && mongodb_uri.is_none() {
        bail!("choose where events go: --stdout, or --mongodb-uri (or MONGODB_URI)");
    }
    if cli.batch_size == 0 || cli.poll_interval_ms == 0 {
        bail!("--batch-size and --poll-interval-ms must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let host = cli.hostname.clone().unwrap_or_else(hostname);
    let ip = match cli.ip_address.clone().or_else(|| ip_address(&host)) {
        Some(ip) => ip,
        None => {
            tracing::warn!("cannot find this host's address; ip_address will be 127.0.0.1 (set --ip-address)");
            "127.0.0.1".into()
        }
    };

    // Connect before loading, so a bad URI fails before any capture starts.
    let mongo = match (&mongodb_uri, cli.stdout) {
        (Some(uri), false) => {
            let client = runtime
                .block_on(mongodb::Client::with_uri_str(uri))
                .with_context(|| "--mongodb-uri: not a usable MongoDB connection string".to_string())?;
            let db = client.database(&cli.database);
            Some((db.collection::<Document>(&cli.collection), db.collection::<Document>(&cli.stats_collection)))
        }
        _ => None,
    };

    let mut probe = Probe::load(cli.ring_buffer_size)?;
    if probe.mounted_tracefs {
        tracing::info!("mounted tracefs on {}", dac_probe::tracefs::TRACEFS);
    }
    let started = Instant::now();
    let started_at = mongodb::bson::DateTime::now();
    let run_id = format!("{host}:{}:{}", std::process::id(), started_at.timestamp_millis());
    let target = match &mongo {
        Some((events, _)) => format!("MongoDB {}", events.namespace()),
        None => "stdout".to_string(),
    };
    tracing::info!(
        "capturing execs on {host} ({ip}) into {target}; ring buffer {} KiB, polled every {} ms",
        cli.ring_buffer_size >> 10,
        cli.poll_interval_ms
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            wait_for_signal().await;
            stop.store(true, Ordering::SeqCst);
        });
    }

    let mut output = match &mongo {
        Some((events, _)) => Output::Mongo(MongoWriter::spawn(
            runtime.handle(),
            events.clone(),
            WriterConfig {
                batch_size: cli.batch_size,
                batch_latency: Duration::from_millis(cli.batch_latency_ms),
                queue_capacity: cli.buffer_events,
                flush_timeout: Duration::from_secs(10),
            },
        )),
        None => Output::Stdout(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
    };

    let mut enricher = Enricher::new(host.clone(), ip);
    let mut counts = Counts::default();
    let mut reported = Counts::default();
    let mut next_stats = Instant::now() + Duration::from_secs(cli.stats_interval.max(1));
    let deadline = cli.duration.map(|seconds| started + Duration::from_secs_f64(seconds.max(0.0)));
    let poll = Duration::from_millis(cli.poll_interval_ms);
    let mut output_error: Option<std::io::Error> = None;

    loop {
        let stopping = stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d);
        if stopping {
            // Detach first, so the last drain sees every record the kernel
            // counted and the counters add up exactly.
            probe.detach()?;
        }
        probe.drain(|record| {
            counts.captured += 1;
            match decode(record) {
                Ok(raw) => {
                    let event = enricher.enrich(&raw);
                    if output_error.is_some() {
                        counts.unwritten += 1;
                    } else if let Err(err) = emit(&mut output, &event, &mut counts) {
                        counts.unwritten += counts.buffered + 1;
                        counts.buffered = 0;
                        output_error = Some(err);
                    }
                }
                Err(err) => {
                    counts.malformed += 1;
                    tracing::error!("skipping a record: {err}");
                }
            }
        });
        if let Output::Stdout(out) = &mut output {
            if output_error.is_none() {
                match out.flush() {
                    Ok(()) => counts.written += counts.buffered,
                    Err(err) => {
                        counts.unwritten += counts.buffered;
                        output_error = Some(err);
                    }
                }
                counts.buffered = 0;
            }
        }
        if let Some(err) = &output_error {
            tracing::warn!("writing events failed ({err}); stopping");
            stop.store(true, Ordering::SeqCst);
            if !stopping {
                continue;
            }
        }
        if stopping {
            break;
        }
        if Instant::now() >= next_stats {
            next_stats += Duration::from_secs(cli.stats_interval.max(1));
            refresh(&probe, &output, &mut counts)?;
            report(&counts, &mut reported, &output);
            if let Some((_, stats)) = &mongo {
                runtime.block_on(write_stats(stats, &run_id, stats_document(&counts, &host, started_at, true)));
            }
        }
        std::thread::sleep(poll);
    }

    if let Output::Mongo(writer) = output {
        let stats = writer.stats.clone();
        runtime.block_on(writer.finish());
        counts.written = stats.inserted.load(Ordering::Relaxed);
        counts.user_dropped = stats.queue_dropped.load(Ordering::Relaxed) + stats.unwritten.load(Ordering::Relaxed);
    }
    counts.kernel = probe.counters()?;
    if let Some((_, stats)) = &mongo {
        runtime.block_on(write_stats(stats, &run_id, stats_document(&counts, &host, started_at, false)));
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "dac-probe: {} execs seen, {} captured, {} lost in the kernel (ring buffer full), {} dropped in userspace, {} written to {target}, {} malformed records, in {seconds:.1} s",
        counts.kernel.seen,
        counts.captured,
        counts.kernel.dropped,
        counts.user_dropped + counts.unwritten,
        counts.written,
        counts.malformed,
    );
    if counts.kernel.dropped > 0 {
        tracing::warn!("raise --ring-buffer-size or lower --poll-interval-ms to lose fewer events");
    }
    Ok(counts)
}

fn emit(output: &mut Output, event: &ProcessEvent, counts: &mut Counts) -> std::io::Result<()> {
    match output {
        Output::Stdout(out) => {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
            counts.buffered += 1;
        }
        Output::Mongo(writer) => {
            let document = mongodb::bson::to_document(event).map_err(std::io::Error::other)?;
            writer.push(document);
        }
    }
    Ok(())
}

fn refresh(probe: &Probe, output: &Output, counts: &mut Counts) -> anyhow::Result<()> {
    counts.kernel = probe.counters()?;
    if let Output::Mongo(writer) = output {
        counts.written = writer.stats.inserted.load(Ordering::Relaxed);
        counts.user_dropped = writer.stats.queue_dropped.load(Ordering::Relaxed);
    }
    Ok(())
}

/// A stats line; a warning whenever something was lost since the last one.
fn report(counts: &Counts, reported: &mut Counts, output: &Output) {
    let queued = match output {
        Output::Mongo(writer) => writer.queued(),
        Output::Stdout(_) => 0,
    };
    tracing::info!(
        "stats: {} execs seen, {} captured, {} written, {queued} queued, {} lost in the kernel, {} dropped in userspace",
        counts.kernel.seen,
        counts.captured,
        counts.written,
        counts.kernel.dropped,
        counts.user_dropped
    );
    if counts.kernel.dropped > reported.kernel.dropped {
        tracing::warn!(
            "{} execs lost in the kernel since the last report: the ring buffer was full (raise --ring-buffer-size or lower --poll-interval-ms)",
            counts.kernel.dropped - reported.kernel.dropped
        );
    }
    if counts.user_dropped > reported.user_dropped {
        tracing::warn!(
            "{} events dropped since the last report: MongoDB is not keeping up or unreachable and the queue of {} is full",
            counts.user_dropped - reported.user_dropped,
            match output {
                Output::Mongo(writer) => writer.queued(),
                Output::Stdout(_) => 0,
            }
        );
    }
    *reported = *counts;
}

fn stats_document(counts: &Counts, host: &str, started_at: mongodb::bson::DateTime, running: bool) -> Document {
    doc! {
        "hostname": host,
        "pid": std::process::id() as i64,
        "started_at": started_at,
        "updated_at": mongodb::bson::DateTime::now(),
        "running": running,
        "seen": counts.kernel.seen as i64,
        "captured": counts.captured as i64,
        "written": counts.written as i64,
        "kernel_dropped": counts.kernel.dropped as i64,
        "user_dropped": counts.user_dropped as i64,
        "malformed": counts.malformed as i64,
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; SIGINT/SIGTERM will end dac-probe without a flush");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("4G").unwrap_err().contains("larger than 2 GiB"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
    }
}
