//! The project's binary as real processes: masters and workers that can be killed, stopped,
//! paused and resumed with signals. A thin wrap of `crawler::tools::procs`, which owns every
//! command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crawler::tools::procs::{self, Launch, MOVE_AT_ONCE};

pub use crawler::tools::procs::{Proc, Role};

use super::free_port;

/// A config file with TTLs short enough for fault tests (session 2 s, worker lease 3 s), and
/// tasks that move at once ([`MOVE_AT_ONCE`]; `tests/scheduling.rs` tests the policy).
pub fn fault_config(dir: &Path) -> PathBuf {
    fault_config_with(dir, "")
}

/// [`fault_config`] with more `worker:` settings (YAML lines indented by two spaces).
pub fn fault_config_with(dir: &Path, worker: &str) -> PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "etcd:\n  request_timeout_ms: 1000\n  dial_timeout_ms: 500\n\
             master:\n  session_ttl_secs: 2\n\
             worker:\n  lease_ttl_secs: 3\n{worker}\
             {MOVE_AT_ONCE}\
             log:\n  level: warn\n"
        ),
    )
    .expect("write config");
    file
}

/// `crawler <role> --id <id>` on `port`, with `env` and more `args`.
pub fn crawler_process(
    role: Role,
    (id, port): (u32, u16),
    etcd: &[String],
    config: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Proc {
    // A worker whose config names no `data_dir` keeps its tasks in `<tmp>/crawler-<node id>`:
    // its temp dir is the test's own (beside its config, so the same when it is started again),
    // not the machine's, which every test and every earlier run shares.
    let tmp = config.with_file_name(format!("tmp-{id}"));
    let tmp = tmp.display().to_string();
    let mut env = env.to_vec();
    if role == Role::Worker && !env.iter().any(|(k, _)| *k == "TMPDIR") {
        std::fs::create_dir_all(&tmp).expect("the worker's temp dir");
        env.push(("TMPDIR", &tmp));
    }
    procs::launch(Launch {
        binary: Path::new(env!("CARGO_BIN_EXE_crawler")),
        role,
        id,
        port,
        etcd: &etcd.join(","),
        config,
        output: Stdio::inherit(),
        env: &env,
        args,
    })
    .expect("spawn crawler")
}

/// `crawler master --id <id>` on a free port.
pub fn master_process(id: u16, etcd: &[String], config: &Path, env: &[(&str, &str)]) -> Proc {
    let id = (u32::from(id), free_port());
    crawler_process(Role::Master, id, etcd, config, env, &[])
}

/// `crawler worker --id <id>` on a free port.
pub fn worker_process(id: u32, etcd: &[String], config: &Path) -> Proc {
    crawler_process(Role::Worker, (id, free_port()), etcd, config, &[], &[])
}
