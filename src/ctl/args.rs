//! `crawler ctl`'s command line, in kubectl's and nomad's habits: a verb, a kind, a name.

use clap::{Args, Subcommand, ValueEnum};

/// `crawler ctl`.
#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 done (or nothing to change), 1 error, 2 usage, 3 not found.")]
pub struct CtlArgs {
    /// Masters to talk to, comma-separated; each is tried in turn until one answers.
    #[arg(
        long,
        env = "CRAWLER_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub server: Vec<String>,
    /// Bearer token, when the masters require one.
    #[arg(long, env = "CRAWLER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA certificates to trust for the masters' HTTPS (default: the system's trust store).
    #[arg(long, env = "CRAWLER_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for masters that require one (with --key and --ca).
    #[arg(long, env = "CRAWLER_CERT", global = true, requires_all = ["key", "ca"])]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "CRAWLER_KEY", global = true, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List workers or resources, or show one.
    Get(GetArgs),
    /// A resource in full: status, labels and history.
    Describe {
        /// `resource`.
        kind: DescribeKind,
        /// Its name.
        name: String,
    },
    /// Create a resource (a crawl task), with its labels and schedule.
    Create {
        /// Its name.
        name: String,
        /// A label, `key=value` (repeat).
        #[arg(short, long = "label")]
        labels: Vec<String>,
        /// Its schedule, when it recurs.
        #[command(flatten)]
        schedule: ScheduleArgs,
    },
    /// A task's runs: why each started, when, how long, how it ended; and the slots passed.
    Runs {
        /// The resource.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Suspend a resource's schedule (the run going is left alone).
    Suspend {
        /// The resource.
        name: String,
    },
    /// Resume a resource's schedule (slots passed while suspended are not caught up).
    Resume {
        /// The resource.
        name: String,
    },
    /// Delete a resource.
    Delete {
        /// Its name.
        name: String,
        /// Exit 0 when it does not exist.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Set (`key=value`) or remove (`key-`) labels of a resource.
    Label {
        /// The resource.
        name: String,
        /// `key=value` to set, `key-` to remove.
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Restart a resource's task.
    Restart {
        /// The resource.
        name: String,
    },
    /// A task's checkpoint: who wrote it, when, at which epoch, and its size; or its bytes.
    Checkpoint {
        /// The resource.
        name: String,
        /// Print the checkpoint's bytes as they are, and nothing else.
        #[arg(long, conflicts_with = "clear")]
        raw: bool,
        /// Clear it, so that the task's next run starts over.
        #[arg(long)]
        clear: bool,
    },
    /// A task's output, from the worker that runs it.
    Logs {
        /// The resource.
        name: String,
        /// Keep following new output (across a master's failover).
        #[arg(short, long)]
        follow: bool,
        /// Last lines to show first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10000))]
        tail: u16,
    },
    /// Stop placing new tasks on a worker.
    Cordon {
        /// The worker's node id.
        node: String,
    },
    /// Let a worker take tasks again (and stop its drain).
    Uncordon {
        /// The worker's node id.
        node: String,
    },
    /// Move a worker's tasks away at the reassignment rate.
    Drain {
        /// The worker's node id.
        node: String,
        /// Move the rest regardless of the rate after this long, e.g. `10m`.
        #[arg(long)]
        deadline: Option<String>,
        /// Show progress until the worker holds no task.
        #[arg(long)]
        wait: bool,
    },
    /// What would move where if workers were drained or removed (nothing moves).
    Preview {
        /// Workers to drain (repeat, or comma-separated).
        #[arg(long, value_delimiter = ',')]
        drain: Vec<String>,
        /// Workers to take away for good (repeat, or comma-separated).
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Lift a storm freeze.
    Thaw,
    /// The masters, the leader and the scheduling state.
    Cluster {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Print a shell completion script, e.g. `crawler ctl completion bash > /etc/bash_completion.d/crawler`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `crawler ctl get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// `workers` or `resources`.
    pub kind: Kind,
    /// One of them, by name.
    pub name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Only resources whose labels match, e.g. `team=a,tier!=low,urgent,!archived`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Only resources whose task is in this state (`running`, `failed`, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// After the list, print each change as it happens (across a master's failover).
    #[arg(short, long)]
    pub watch: bool,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Worker registrations.
    #[value(alias = "worker", alias = "w")]
    Workers,
    /// Resources (crawl tasks).
    #[value(alias = "resource", alias = "r")]
    Resources,
}

/// What `describe` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    /// A resource.
    #[value(alias = "resources", alias = "r")]
    Resource,
}

/// How to print objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// More columns.
    Wide,
    /// The API's JSON.
    Json,
    /// The API's objects as YAML.
    Yaml,
}

/// The schedule flags of `create`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScheduleArgs {
    /// Run on a 5-field cron, e.g. "0 */6 * * *" or @daily.
    #[arg(long, conflicts_with = "every")]
    pub cron: Option<String>,
    /// Run every so often, e.g. 30m.
    #[arg(long)]
    pub every: Option<String>,
    /// IANA time zone of the cron (default UTC).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// What a slot does while a run goes: skip (default) or replace.
    #[arg(long)]
    pub overlap: Option<String>,
    /// A slot decided later than this after it was due is missed, e.g. 10m.
    #[arg(long)]
    pub starting_deadline: Option<String>,
    /// Create it suspended.
    #[arg(long)]
    pub suspend: bool,
}
