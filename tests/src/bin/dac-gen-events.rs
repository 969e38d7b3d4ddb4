//! Writes a seeded, realistic exec-event corpus as NDJSON, so test fixtures
//! and benchmark inputs can be regenerated instead of hand-edited.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use clap::Parser;
use dac_tests::generate::{EventGenerator, GeneratorConfig};

#[derive(Debug, Parser)]
#[command(about = "Generate process-exec events in the seed's schema as NDJSON")]
struct Args {
    /// Number of events to write (lines in the output).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// RNG seed; the same seed and options always give the same file.
    #[arg(long, default_value_t = GeneratorConfig::default().seed)]
    seed: u64,
    /// Share of attack events in thousandths (10 = 1 %).
    #[arg(long, default_value_t = GeneratorConfig::default().malicious_per_mille)]
    malicious_per_mille: u32,
    /// Write here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Put the seed talk's `/usr/bin/sudo cat /etc/shadow` on pop-os at
    /// index count/2, in place of a generated event, so the file still
    /// holds exactly `count` lines.
    #[arg(long)]
    include_seed_event: bool,
    /// The realistic mix for Sigma rules instead (`dac_tests::mix`: long
    /// command lines, parent, user and cwd; attacks from Atomic Red Team),
    /// with --malicious-per-mille attacks.
    #[arg(long, conflicts_with = "include_seed_event")]
    mix: bool,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let cfg = GeneratorConfig {
        seed: args.seed,
        malicious_per_mille: args.malicious_per_mille,
        ..GeneratorConfig::default()
    };
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(File::create(path)?),
        None => Box::new(io::stdout().lock()),
    };
    if args.mix {
        let mix = dac_tests::mix::MixConfig {
            seed: args.seed,
            attacks_per_mille: args.malicious_per_mille,
            ..Default::default()
        };
        return dac_tests::mix::write_mix(mix, args.count, sink);
    }
    let mut out = BufWriter::new(sink);
    let mut generator = EventGenerator::new(cfg);
    let seed_at = args.include_seed_event.then_some(args.count / 2);
    for i in 0..args.count {
        // Drawn from the same generator (not spliced in afterwards) so the
        // planted event's pid and ts fit its neighbours.
        let event = if seed_at == Some(i) {
            generator.next_seed_shadow_event()
        } else {
            generator.next().expect("the generator never ends")
        };
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
