//! Command-line flags as clap types. These are raw: `process::Settings`
//! and friends validate them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// custody gives every security finding an owner.
#[derive(Debug, Parser)]
#[command(name = "custody", version, about, long_about = None)]
pub struct Cli {
    /// How the service logs to standard error: `text` (a line each) or
    /// `json` (one JSON object a line, for Kubernetes). `RUST_LOG` filters
    /// them (default `info`; e.g. `RUST_LOG=custody=debug`).
    #[arg(long, global = true, env = "CUSTODY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::logging::LogFormat;
pub use crate::process::{Emit, SummaryFormat};

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process scanner reports from files: normalize, fingerprint, track and
    /// group them, printing finding and ticket events as JSON Lines.
    Process(ProcessArgs),
    /// Who owns a path, and why.
    Owners {
        /// What to do.
        #[command(subcommand)]
        command: OwnersCommand,
    },
    /// Run the Kafka service: consume reports, produce finding and ticket
    /// events, keep state in a compacted changelog, serve /metrics,
    /// /healthz and /readyz. SIGTERM or Ctrl-C stops it cleanly; SIGHUP
    /// reloads the ownership configuration.
    Run {
        /// Configuration file (TOML); environment variables override it
        /// (CUSTODY_KAFKA_BROKERS, CUSTODY_KAFKA_GROUP_ID, CUSTODY_HTTP_LISTEN,
        /// CUSTODY_OWNERSHIP_CONFIG, CUSTODY_RDKAFKA_<librdkafka setting>).
        #[arg(long, env = "CUSTODY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish scanner reports to the reports topic with the right key,
    /// headers and chunking (what a CI job runs after a scanner).
    Publish(PublishArgs),
    /// Validate an ownership configuration and publish it, with every file
    /// it names, to the ownership topic that `custody run` follows
    /// (`[ownership] topic`).
    PublishOwnership(PublishOwnershipArgs),
    /// Run the whole pipeline on an embedded Kafka-protocol broker with
    /// bundled real scanner reports and ownership, and print a per-team
    /// table. No setup needed.
    Demo(DemoArgs),
    /// Print the JSON Schemas of the native finding, events and decisions,
    /// or write them into a directory.
    Schemas {
        /// Directory to write `*.schema.json` into (prints them otherwise).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Flags of `custody publish-ownership`.
#[derive(Debug, Args)]
pub struct PublishOwnershipArgs {
    /// The ownership configuration (`owners.toml`, or a directory holding
    /// it).
    pub path: PathBuf,
    /// Bootstrap servers.
    #[arg(long, env = "CUSTODY_KAFKA_BROKERS")]
    pub brokers: String,
    /// Ownership topic.
    #[arg(long, default_value = "custody.ownership")]
    pub topic: String,
    /// Replication factor when the topic is created (compacted, one
    /// partition); -1: the broker's default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,
    /// Seconds to wait for the topic to be read and for delivery.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// A librdkafka setting, name=value (repeatable): TLS, SASL, ...
    #[arg(short = 'X', long = "property")]
    pub property: Vec<String>,
}

/// Flags of `custody publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Report files, each one scan.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Bootstrap servers.
    #[arg(long, env = "CUSTODY_KAFKA_BROKERS")]
    pub brokers: String,
    /// Reports topic.
    #[arg(long, default_value = "custody.reports")]
    pub topic: String,
    /// The scanned target (`repo:host/org/name`, `image:name`,
    /// `cloud:account`): the message key. Required for reports.
    #[arg(long, required_unless_present = "decisions")]
    pub target: Option<String>,
    /// The files are decisions (JSON Lines of decision records: accept
    /// risk, false positive, revoke), each sent keyed by its target, or
    /// VEX documents (CycloneDX VEX, OpenVEX), each sent keyed by
    /// `--target`, the target it is about; not reports.
    #[arg(long)]
    pub decisions: bool,
    /// Scanner name, overriding the one the report names.
    #[arg(long)]
    pub scanner: Option<String>,
    /// Commit scanned.
    #[arg(long)]
    pub commit: Option<String>,
    /// Branch or tag scanned.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Report format (sniffed by the service when not given).
    #[arg(long)]
    pub format: Option<String>,
    /// Scan id (default: derived from target, commit and content; ignored
    /// with several files).
    #[arg(long)]
    pub scan_id: Option<String>,
    /// The scan covered only part of the target: nothing it does not
    /// report is resolved.
    #[arg(long)]
    pub partial: bool,
    /// The scanned checkout: each SARIF result's flagged line is read from
    /// here and its hash written into the report (under
    /// `partialFingerprints."custodyLineHash/v1"`) before it is sent, so
    /// the service fingerprints results without snippets (Ruff, ESLint,
    /// ...) by their line's content. Other formats are sent as they are.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Largest message; bigger reports are split into chunks.
    #[arg(long, default_value_t = crate::kafka::publish::DEFAULT_CHUNK_BYTES)]
    pub chunk_bytes: usize,
    /// Seconds to wait for delivery.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// A librdkafka setting, name=value (repeatable): TLS, SASL, ...
    #[arg(short = 'X', long = "property")]
    pub property: Vec<String>,
}

/// Flags of `custody demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep running with /metrics, /healthz and /readyz up until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// HTTP address with --serve.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
}

/// Flags of `custody process`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Report files, each one complete scan of the target, processed in
    /// order; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Ownership configuration (file, or directory holding owners.toml):
    /// attributes every finding to a team, with the evidence. The state
    /// file remembers it: a rescan without --owners, on a state built with
    /// one, is refused unless it says `--owners none`.
    #[arg(long, value_name = "CONFIG|none")]
    pub owners: Option<PathBuf>,
    /// The scanned target (`repo:host/org/name`, `image:name`,
    /// `cloud:account`); defaults to the target a report names.
    #[arg(long, value_name = "SPEC")]
    pub target: Option<String>,
    /// Scanner name, overriding the one the report names.
    #[arg(long, value_name = "NAME")]
    pub scanner: Option<String>,
    /// Report format (sarif, trivy, grype, gitleaks, semgrep,
    /// detect-secrets, native); sniffed from the content by default.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Lifecycle state file: loaded before, saved (atomically) after.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Decision records (JSON Lines) applied before the reports.
    #[arg(long, value_name = "FILE")]
    pub decisions: Vec<PathBuf>,
    /// The scanned checkout: the source line at each finding's start is
    /// read from here for its fingerprint (more reliable than a report's
    /// snippet, and needed for reports without snippets such as Ruff's).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Configuration file (TOML): SLA policy, ticket routes, limits.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which events to print.
    #[arg(long, value_enum, default_value = "all")]
    pub emit: Emit,
    /// Exit 3 when the run opened or reopened findings at or above this
    /// severity (critical, high, medium, low, info), listing them on
    /// standard error.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<String>,
    /// The files are partial scans (changed files, one directory): what
    /// they do not report is not resolved.
    #[arg(long)]
    pub partial: bool,
    /// How the summary goes to standard error: a table with its legend
    /// (text), one line of JSON (json, the last line), or not at all.
    #[arg(long, value_enum, default_value = "text")]
    pub summary: SummaryFormat,
    /// The time to process at (RFC 3339); defaults to now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// The commit scanned, for reports that name none (ticket links point
    /// there).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The branch or tag scanned, for reports that name none.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
}

/// `custody owners` subcommands.
#[derive(Debug, Subcommand)]
pub enum OwnersCommand {
    /// Explain who owns paths: one JSON object per path, in input order.
    Explain(ExplainArgs),
    /// Validate an ownership configuration and list its problems.
    Check(CheckArgs),
}

/// Flags of `custody owners explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A CODEOWNERS file to match the paths against (GitHub semantics).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["owners", "target"])]
    pub codeowners: Option<PathBuf>,
    /// Read the CODEOWNERS file with GitLab semantics (sections, default
    /// owners, owners united across sections).
    #[arg(long, requires = "codeowners")]
    pub gitlab: bool,
    /// Read paths from a file, one per line (`-` for standard input).
    #[arg(long, value_name = "FILE|-")]
    pub paths_from: Option<PathBuf>,
    /// An ownership configuration (file or directory).
    #[arg(long, value_name = "CONFIG", requires = "target")]
    pub owners: Option<PathBuf>,
    /// The target whose ownership to explain (with --owners).
    #[arg(long, value_name = "SPEC", requires = "owners")]
    pub target: Option<String>,
    /// A path to explain (with --owners; repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub path: Vec<String>,
    /// Paths to explain.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

/// Flags of `custody owners check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The ownership configuration (file or directory).
    #[arg(long, value_name = "CONFIG")]
    pub owners: PathBuf,
}
