//! The `credwatch` command.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use credwatch::cli::parallel::replay_parallel;
use credwatch::cli::replay::{replay, replay_maillog, RejectFile, RejectSink, ReplayOptions};
use credwatch::config::Config;
#[cfg(feature = "demo")]
use credwatch::demo::sample;
use credwatch::engine::Engine;
use credwatch::source::event::ParseLimits;
use credwatch::time::now_millis;

// glibc's allocator spends a noticeable share of replay time consolidating
// free lists; mimalloc does not (see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "credwatch",
    version,
    about = "Finds stolen mail passwords while they are being used, and locks the account."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `replay` reads.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Maillog,
}

#[derive(Subcommand)]
enum Command {
    /// Run the detectors over JSON-lines events from a file or standard input:
    /// actions as JSON lines on stdout, a summary on stderr. Sends nothing anywhere.
    Replay {
        /// Config file (TOML); defaults apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write every rejected line here with its reason (JSON lines).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Threads for parsing and judging; 1 is strictly sequential (and
        /// exactly reproducible), more spreads accounts over threads.
        /// Default: the number of CPUs, at most 8.
        #[arg(long)]
        threads: Option<usize>,
        /// What the input is: `json` (the contract's events, one per
        /// line) or `maillog` (Dovecot's and Postfix's own log lines:
        /// syslog, RFC 3339 stamps, or the daemons' own files; `.gz` too).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Year of classic syslog stamps, which have none (`--format
        /// maillog`; default: maillog.year, else inferred from each file's
        /// modification time).
        #[arg(long)]
        year: Option<i32>,
        /// `--format maillog`: write every event the log lines made here,
        /// as the contract's JSON events (one per line).
        #[arg(long)]
        events_out: Option<PathBuf>,
        /// Time zone of stamps without one, `UTC` or `+09:00` (`--format
        /// maillog`; default: maillog.timezone).
        #[arg(long)]
        timezone: Option<String>,
        /// Also write a self-contained HTML report here: the summary, a
        /// timeline, every incident as a card, the places on a map.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
        /// Events file(s), or `-` for standard input. With `--format
        /// maillog`, several files are merged in time order (rotated logs,
        /// Dovecot's file beside Postfix's).
        #[arg(default_value = "-")]
        input: Vec<String>,
    },
    /// Validate a config file and print the effective config (secrets redacted).
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Print the configuration reference (Markdown) generated from the code:
    /// every key, its default, its environment variable and what it does
    /// (docs/configuration.md is this output).
    ConfigReference,
    /// Write a sample world into a folder: GeoIP databases, a config, and a
    /// day of events with attacks and their benign look-alikes.
    #[cfg(feature = "demo")]
    Generate {
        /// Folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Ordinary accounts in the generated day.
        #[arg(long, default_value_t = 500)]
        accounts: usize,
        /// Successful logins per ordinary account.
        #[arg(long, default_value_t = 6)]
        logins: u32,
        /// Seed of the generator (the same seed, the same day).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Of every ten logins, how many come over IPv6 (0-10).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10))]
        ipv6_in_ten: u32,
        /// Messages each login on the submission port sends (one login in
        /// six is on it).
        #[arg(long, default_value_t = 1)]
        submissions: u32,
    },
    /// The service: Kafka in, actions out, metrics served on http.listen.
    /// Stops cleanly on SIGTERM or Ctrl-C (drains, commits, leaves the group).
    Run {
        /// Config file (TOML); defaults and CREDWATCH_* variables apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The whole service on one machine with nothing installed: an embedded
    /// Kafka broker, a generated GeoIP database, a compressed day of a mail
    /// platform with the seed's attacks, and a timeline of what was caught.
    #[cfg(feature = "demo")]
    Demo {
        /// Keep playing days (seed+1, seed+2, ...) until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Where /metrics, /healthz and /readyz are served (a free port is
        /// taken if this one is busy).
        #[arg(long, default_value = "127.0.0.1:9898")]
        listen: String,
        /// Wall-clock seconds one day of events takes.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Ordinary customers in the day.
        #[arg(long, default_value_t = 500)]
        accounts: usize,
        /// Seed of the generated day.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// `maillog`: play the day as the log lines Dovecot and Postfix
        /// write for it, on a log topic the service reads
        /// (`kafka.log_topics`), instead of JSON events.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Where the HTML report of the run is written at the end
        /// (default: credwatch-demo-report.html in the temporary folder).
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
    },
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    if io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("credwatch: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Writes `replay --report`'s page and says where it is.
fn write_report(
    collector: &credwatch::report::Collector,
    summary: &credwatch::cli::replay::Summary,
    engine: &Engine,
    inputs: &[String],
    path: &std::path::Path,
    out: &mut BufWriter<File>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let facts = credwatch::report::Facts::of_replay(summary, inputs, now_millis());
    collector
        .write(&facts, Some(&engine.geo()), out)
        .and_then(|_| out.flush())
        .with_context(|| format!("cannot write the report file {}", path.display()))?;
    eprintln!(
        "  report:    {} ({} incidents, {:.1} MB, written in {:.2} s)",
        path.display(),
        collector.incidents().len(),
        out.get_ref().metadata().map_or(0, |m| m.len()) as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay {
            config,
            rejects,
            threads,
            format,
            year,
            timezone,
            events_out,
            report,
            input,
        } => {
            init_logs("warn,credwatch=info");
            let mut settings = Config::load(config.as_deref())?;
            if year.is_some() || timezone.is_some() {
                // The flags win over the file, and are checked like it.
                if let Some(y) = year {
                    settings.config.maillog.year = y;
                }
                if let Some(z) = timezone {
                    settings.config.maillog.timezone = z;
                }
                settings = settings.config.check()?;
            }
            let mut engine = Engine::new(&settings)?;
            let limits = ParseLimits::new(settings.config.events.max_bytes, now_millis())
                .with_form(settings.config.events.form());
            let mut reject_file = match &rejects {
                Some(p) => Some(RejectFile(BufWriter::new(File::create(p).with_context(
                    || format!("cannot create the rejects file {}", p.display()),
                )?))),
                None => None,
            };
            // The report's file is made before the run: a path that cannot
            // be written is found before a long replay, not after it.
            let mut report_file = match &report {
                Some(p) => Some((
                    p,
                    BufWriter::new(File::create(p).with_context(|| {
                        format!("cannot create the report file {}", p.display())
                    })?),
                )),
                None => None,
            };
            let mut collector = report.as_ref().map(|_| credwatch::report::Collector::new());
            let out = BufWriter::with_capacity(1 << 16, io::stdout());
            let mut opts = ReplayOptions {
                limits,
                rejects: reject_file
                    .as_mut()
                    .map(|r| r as &mut (dyn RejectSink + Send)),
                progress_total: None,
                events_out: None,
                threads: 1,
                report: collector.as_mut(),
            };
            let mut events_file = match &events_out {
                Some(p) => Some(BufWriter::new(File::create(p).with_context(|| {
                    format!("cannot create the events file {}", p.display())
                })?)),
                None => None,
            };
            opts.events_out = events_file.as_mut().map(|w| w as &mut (dyn Write + Send));
            let threads = threads
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map_or(1, |n| n.get())
                        .min(8)
                })
                .max(1);
            engine.set_lanes(threads);
            if format == Format::Maillog {
                // One judge, in the order the lines make events: the
                // reading and joining run beside it (see replay_maillog).
                engine.set_lanes(1);
                opts.threads = threads;
                let cfg = settings.config.maillog.clone();
                let inputs = credwatch::source::maillog::open_inputs(
                    &input,
                    &cfg,
                    settings.config.events.max_bytes,
                )?;
                if input.len() == 1 && input[0] != "-" {
                    opts.progress_total = std::fs::metadata(&input[0]).map(|m| m.len()).ok();
                }
                let summary = replay_maillog(&engine, inputs, &cfg, out, opts)?;
                if let Some(mut w) = events_file {
                    w.flush()?;
                }
                eprintln!("{summary}");
                if let (Some(c), Some((path, w))) = (&collector, report_file.as_mut()) {
                    write_report(c, &summary, &engine, &input, path, w)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let [input] = &input[..] else {
                anyhow::bail!("--format json reads one file (or - for standard input); give several only with --format maillog");
            };
            let input = input.clone();
            let input_name = input.clone();
            let input: Box<dyn io::BufRead + Send> = if input == "-" {
                Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
            } else {
                let f = File::open(&input)
                    .with_context(|| format!("cannot open the events file {input}"))?;
                opts.progress_total = f.metadata().map(|m| m.len()).ok();
                Box::new(BufReader::with_capacity(1 << 20, f))
            };
            let summary = if threads == 1 {
                replay(&engine, input, out, opts)?
            } else {
                replay_parallel(&engine, input, out, opts, threads)?
            };
            if let Some(RejectFile(mut w)) = reject_file {
                w.flush()?;
            }
            eprintln!("{summary}");
            if let (Some(c), Some((path, w))) = (&collector, report_file.as_mut()) {
                write_report(c, &summary, &engine, &[input_name], path, w)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let settings = Config::load(Some(&file))?;
            // Opening the databases is part of the check: a missing file is
            // what an operator most needs to hear about before deploying.
            credwatch::geo::GeoIp::open(&settings.config.geoip)?;
            print!("{}", settings.config.to_redacted_toml());
            eprintln!("credwatch: {} is valid.", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::ConfigReference => match credwatch::config::reference::markdown() {
            Ok(page) => {
                print!("{page}");
                Ok(ExitCode::SUCCESS)
            }
            Err(keys) => anyhow::bail!("settings without documentation: {}", keys.join(", ")),
        },
        #[cfg(feature = "demo")]
        Command::Generate {
            out,
            accounts,
            logins,
            seed,
            ipv6_in_ten,
            submissions,
        } => {
            let geo = sample::write_geoip(&out)
                .with_context(|| format!("cannot write GeoIP databases into {}", out.display()))?;
            let config = out.join("credwatch.toml");
            std::fs::write(&config, sample::config_toml(&geo))?;
            let params = sample::DayParams {
                accounts,
                logins_per_account: logins,
                seed,
                ipv6_in_ten,
                submissions_per_smtp_login: submissions,
                ..Default::default()
            };
            let (lines, expected) = sample::generate_day(&params);
            let events = out.join("events.jsonl");
            sample::write_lines(&lines, BufWriter::new(File::create(&events)?))?;
            let mut exp = BufWriter::new(File::create(out.join("expected.txt"))?);
            for e in &expected {
                writeln!(
                    exp,
                    "{}\t{}\t{}",
                    e.account,
                    e.detector.unwrap_or("-"),
                    e.scenario
                )?;
            }
            exp.flush()?;
            eprintln!(
                "Wrote {} events, GeoIP databases and a config into {}.\nNext: credwatch replay --config {} {}",
                lines.len(),
                out.display(),
                config.display(),
                events.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            init_logs("info");
            let settings = Config::load(config.as_deref())?;
            credwatch::cli::service::run(settings)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            follow,
            listen,
            seconds,
            accounts,
            seed,
            format,
            report,
        } => {
            init_logs("warn");
            let opts = credwatch::demo::DemoOptions {
                follow,
                listen,
                seconds: seconds.max(0.0),
                accounts,
                seed,
                maillog: format == Format::Maillog,
                report: report
                    .unwrap_or_else(|| std::env::temp_dir().join("credwatch-demo-report.html")),
            };
            let ok = credwatch::demo::demo(opts, &mut io::stdout())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
