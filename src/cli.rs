//! The command line. Flags override `config.yaml`, which overrides built-in defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Control plane of a distributed web crawler.
#[derive(Debug, Parser)]
#[command(name = "crawler", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master: caches, election and the REST API.
    Master(MasterArgs),
    /// Run a worker agent.
    Worker(WorkerArgs),
    /// Serve the small demo site the example runner crawls (docker-compose runs it).
    DemoSite(DemoSiteArgs),
    /// Print the master API's OpenAPI document.
    Openapi {
        /// Print the task agent's document instead (what a worker serves its tasks).
        #[arg(long)]
        agent: bool,
    },
    /// Run a local cluster: etcd (if none answers), 3 masters and 3 workers.
    Dev(DevArgs),
    /// Talk to a cluster's API: list, describe, create, label, drain, follow logs and events.
    Ctl(crate::ctl::CtlArgs),
    /// Run the benchmarks (starts its own etcd, masters and load) and write a report.
    Bench(BenchArgs),
    /// The bare HTTP server the benchmark compares cached reads with.
    #[command(hide = true)]
    BenchBare(BenchBareArgs),
    /// A worker's guard process, which its worker starts: holds the task processes and stops
    /// them when the worker's lease proof runs out. Its stdin is the worker's socket.
    #[command(hide = true)]
    Guard(GuardArgs),
}

/// `crawler guard`.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// Between a task's SIGTERM and its SIGKILL.
    #[arg(long)]
    pub stop_grace_ms: u64,
    /// `tracing` filter directive.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log JSON rather than text.
    #[arg(long)]
    pub log_json: bool,
}

/// `crawler dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Configuration file (YAML): etcd endpoints, key layout, seed tasks.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// First master port; the masters use it and the next two.
    #[arg(long, default_value_t = 8081)]
    pub http_port: u16,
    /// First worker port; the workers use it and the next two.
    #[arg(long, default_value_t = 9091)]
    pub worker_port: u16,
    /// Show every process's logs here instead of writing them to files.
    #[arg(long)]
    pub verbose: bool,
    /// Serve the API over HTTPS, with certificates from a local CA made at start (dev prints
    /// how to trust it).
    #[arg(long)]
    pub tls: bool,
    /// etcd endpoints, comma-separated, over the config file's. When none answers, dev starts
    /// an etcd on the first one's port (a loopback address only).
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
}

/// `crawler bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tiny counts: a smoke test of every scenario in seconds, not figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the Markdown report (default BENCHMARKS.md, or
    /// target/BENCHMARKS-quick.md with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only these scenarios (numbers 1 to 17, comma-separated), e.g. when profiling one.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<u8>,
    /// Resources in the scale scenario (6) and creates in the real-load one (11), e.g. 1000000
    /// for the million-task case (default 100000; the scale scenario's workers stay 10000).
    #[arg(long)]
    pub scale: Option<usize>,
    /// Length of the soak scenario (12) in seconds (default 600, or 30 with --quick).
    #[arg(long)]
    pub soak_secs: Option<u64>,
}

/// `crawler bench-bare`.
#[derive(Debug, Args)]
pub struct BenchBareArgs {
    /// Address to serve on.
    #[arg(long)]
    pub addr: String,
    /// File whose bytes every response carries.
    #[arg(long)]
    pub body: PathBuf,
}

/// Flags shared by every process that talks to etcd.
/// `crawler demo-site`.
#[derive(Debug, Args)]
pub struct DemoSiteArgs {
    /// Address to serve on, host:port.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: String,
    /// Milliseconds before each answer, like a real site's.
    #[arg(long, default_value_t = 50)]
    pub delay_ms: u64,
    /// Record every request here, one `<unix ms> <path>` line each.
    #[arg(long)]
    pub access_log: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct Common {
    /// etcd endpoints, comma-separated (default http://127.0.0.1:2379).
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Configuration file (YAML).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl Common {
    /// Loads the file and applies the flags over it.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if !self.etcd.is_empty() {
            config.etcd.endpoints = self.etcd.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

/// `crawler master`.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// Master id, 0..=1023; also the snowflake node id.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub id: u16,
    /// Address to serve HTTP on, host:port.
    #[arg(long)]
    pub http: String,
    /// URL clients and other masters use to reach this master (default: derived from --http).
    #[arg(long)]
    pub advertise: Option<String>,
    /// etcd and config flags.
    #[command(flatten)]
    pub common: Common,
}

/// `crawler worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Worker id; the node id is `<service>-<id>`.
    #[arg(long)]
    pub id: u32,
    /// Address to serve on and advertise, host:port.
    #[arg(long)]
    pub addr: String,
    /// Most resources this worker takes (default: from config).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// A label published in the registration, which tasks' selectors match: `key=value`
    /// (repeat it); it adds to or overrides `worker.labels`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// etcd and config flags.
    #[command(flatten)]
    pub common: Common,
}

/// One `--label key=value`, checked.
fn label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    crate::model::registry::check_label(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// The URL to advertise for a master listening on `http`, over HTTPS when `tls`.
pub fn advertise_url(http: &str, tls: bool) -> String {
    let http = http.trim();
    let host_port = http
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| http.to_owned());
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host_port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_flags_parse() {
        let cli = Cli::try_parse_from([
            "crawler",
            "master",
            "--id",
            "3",
            "--http",
            "127.0.0.1:8080",
            "--etcd",
            "http://a:1,http://b:2",
            "--advertise",
            "http://m:8080",
        ])
        .expect("parses");
        let Command::Master(m) = cli.command else {
            panic!("expected master")
        };
        assert_eq!(m.id, 3);
        assert_eq!(m.common.etcd, ["http://a:1", "http://b:2"]);
        let cli = Cli::try_parse_from([
            "crawler",
            "worker",
            "--id",
            "2",
            "--addr",
            "127.0.0.1:9089",
            "--capacity",
            "5",
        ])
        .expect("parses");
        let Command::Worker(w) = cli.command else {
            panic!("expected worker")
        };
        assert_eq!(w.capacity, Some(5));
        assert!(Cli::try_parse_from(["crawler", "master", "--id", "1024", "--http", "x"]).is_err());
    }

    #[test]
    fn advertise_is_derived_from_http() {
        assert_eq!(
            advertise_url("0.0.0.0:8080", false),
            "http://127.0.0.1:8080"
        );
        assert_eq!(advertise_url("10.1.2.3:80", false), "http://10.1.2.3:80");
        assert_eq!(advertise_url("10.1.2.3:443", true), "https://10.1.2.3:443");
    }
}
