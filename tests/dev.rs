//! `crawler dev`, as a user runs it: a whole local cluster from one command, its seed tasks
//! spread over its workers, and Ctrl-C stopping everything cleanly.

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;

/// A port whose next two are free too.
fn three_free_ports() -> u16 {
    loop {
        let first = free_port();
        if first < u16::MAX - 2
            && (1..3).all(|i| TcpListener::bind(("127.0.0.1", first + i)).is_ok())
        {
            return first;
        }
    }
}

#[tokio::test]
async fn dev_starts_a_cluster_that_spreads_its_seeds_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("dir");
    let etcd_port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "etcd:\n  endpoints: [http://127.0.0.1:{etcd_port}]\n\
             tasks:\n  - name: seed-a\n  - name: seed-b\n  - name: seed-c\n\
             log:\n  level: warn\n"
        ),
    )
    .expect("config");
    let http = three_free_ports();
    let workers = three_free_ports();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["dev", "--config"])
        .arg(&config)
        .args(["--http-port", &http.to_string()])
        .args(["--worker-port", &workers.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("crawler dev");
    let master = format!("http://127.0.0.1:{http}");
    // The workers registered before the leader took over: one seed each.
    let loads = eventually(
        "three seeds on three workers",
        Duration::from_secs(60),
        || async {
            let (status, _, body) = get_json(&format!("{master}/api/v1/workers")).await?;
            let loads: Vec<u64> = body["items"]
                .as_array()?
                .iter()
                .filter_map(|w| w["load"].as_u64())
                .collect();
            (status == 200 && loads.len() == 3 && loads.iter().sum::<u64>() == 3).then_some(loads)
        },
    )
    .await;
    assert_eq!(loads, [1, 1, 1], "the seeds are spread");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGINT).expect("ctrl-c");
    let exited = eventually("dev stops", Duration::from_secs(30), || {
        let status = child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");
    // Everything it started is gone: the masters' port is free again.
    assert!(TcpListener::bind(("127.0.0.1", http)).is_ok());
}
