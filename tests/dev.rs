//! `crawler dev`, as a user runs it: a whole local cluster from one command, its seed tasks
//! spread over its workers, and Ctrl-C stopping everything cleanly; and when it cannot start
//! (a port taken, etcd's port taken by something else, a runner missing), an exit with the
//! cause and what to change, never "ready".

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

/// `crawler dev` on free ports with three seeds; returns it, the first master's port and etcd's.
fn spawn_dev(dir: &std::path::Path) -> (std::process::Child, u16, u16) {
    spawn_dev_with(dir, &[], Stdio::null())
}

/// `spawn_dev` with more arguments, its stdout going to `stdout`.
fn spawn_dev_with(
    dir: &std::path::Path,
    more: &[&str],
    stdout: Stdio,
) -> (std::process::Child, u16, u16) {
    let etcd_port = free_port();
    let config = dir.join("config.yaml");
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
    let child = Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["dev", "--config"])
        .arg(&config)
        .args(["--http-port", &http.to_string()])
        .args(["--worker-port", &workers.to_string()])
        .args(more)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("crawler dev");
    (child, http, etcd_port)
}

/// Sends Ctrl-C and checks that dev exits 0 and that nothing it started still answers.
async fn ctrl_c_stops_everything(mut child: std::process::Child, ports: &[u16]) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGINT).expect("ctrl-c");
    let exited = eventually("dev stops", Duration::from_secs(30), || {
        let status = child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");
    nothing_answers(ports, &[]);
}

#[tokio::test]
async fn dev_starts_a_cluster_that_spreads_its_seeds_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("dir");
    // Its stdout is a pipe no one reads, closed at once (`crawler dev | head -1`): what it
    // prints later is lost, and the cluster runs and stops all the same.
    let (mut child, http, etcd_port) = spawn_dev_with(dir.path(), &[], Stdio::piped());
    drop(child.stdout.take());
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
    // Ctrl-C as soon as the seeds are placed, perhaps before dev has printed that it is ready.
    ctrl_c_stops_everything(child, &[http, http + 1, http + 2, etcd_port]).await;
}

#[tokio::test]
async fn dev_tls_serves_https_that_clients_trust_as_it_says() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, http, etcd_port) = spawn_dev_with(dir.path(), &["--tls"], Stdio::piped());
    // What dev prints, up to its last line; the rest is read too, so that its stdout stays
    // open until it exits.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
            if line.contains("Ctrl-C stops everything") {
                let _ = tx.send(text.clone());
            }
        }
        let _ = tx.send(text);
    });
    let printed = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(90)))
        .await
        .expect("join")
        .expect("dev prints that it is ready within 90 s");
    let ca = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("export CRAWLER_CA="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("dev says how to trust its CA:\n{printed}"))
        .to_owned();
    let master = format!("https://127.0.0.1:{http}");
    assert!(
        printed.contains(&format!("dashboard    {master}/")),
        "{printed}"
    );
    // curl as printed.
    let (ok, out) = run_tool(Command::new("curl").args([
        "-sS",
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{master}/api/v1/cluster"),
    ]));
    assert!(ok && out == "200", "curl --cacert: {out}");
    // Python with SSL_CERT_FILE, as printed.
    let (ok, out) = run_tool(
        Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).status)",
                &format!("{master}/api/v1/workers"),
            ])
            .env("SSL_CERT_FILE", &ca),
    );
    assert!(
        ok && out.trim() == "200",
        "python with SSL_CERT_FILE: {out}"
    );
    // crawler ctl with CRAWLER_CA, writing through a follower (whichever master does not
    // lead forwards it over HTTPS, checking the leader's certificate).
    for port in [http, http + 1, http + 2] {
        let (ok, out) = run_tool(
            Command::new(env!("CARGO_BIN_EXE_crawler"))
                .args(["ctl", "--server", &format!("https://127.0.0.1:{port}")])
                .args(["create", &format!("over-tls-{port}")])
                .env("CRAWLER_CA", &ca)
                .env_remove("CRAWLER_TOKEN"),
        );
        assert!(ok, "ctl create through master on {port}: {out}");
    }
    // The etcd dev started speaks TLS too, and only to a client with a certificate.
    assert!(printed.contains("over TLS"), "{printed}");
    for (url, ca) in [
        (format!("http://127.0.0.1:{etcd_port}/version"), None),
        (format!("https://127.0.0.1:{etcd_port}/version"), Some(&ca)),
    ] {
        let mut curl = Command::new("curl");
        curl.args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        if let Some(ca) = ca {
            curl.args(["--cacert", ca]);
        }
        let (ok, out) = run_tool(curl.arg(&url));
        assert!(
            !ok || out != "200",
            "etcd answered {url} without a client certificate: {out}"
        );
    }
    ctrl_c_stops_everything(child, &[http, http + 1, http + 2, etcd_port]).await;
}

#[tokio::test]
async fn ctrl_c_while_dev_starts_stops_what_it_started() {
    let dir = tempfile::tempdir().expect("dir");
    let (child, http, etcd_port) = spawn_dev(dir.path());
    // Etcd answers: dev is starting the rest.
    eventually("etcd starts", Duration::from_secs(30), || async {
        std::net::TcpStream::connect(("127.0.0.1", etcd_port))
            .ok()
            .map(|_| ())
    })
    .await;
    ctrl_c_stops_everything(child, &[http, http + 1, http + 2, etcd_port]).await;
}

/// Runs `crawler dev` on etcd port `etcd_port` (plus `more_yaml` in its config file), masters
/// from port `http` and workers from `workers`, expecting it to stop by itself within a minute,
/// exit 1 and never say "ready"; returns what it printed on stderr.
async fn dev_fails(etcd_port: u16, more_yaml: &str, http: u16, workers: u16) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!("etcd:\n  endpoints: [http://127.0.0.1:{etcd_port}]\n{more_yaml}"),
    )
    .expect("config");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["dev", "--config"])
        .arg(&path)
        .args(["--http-port", &http.to_string()])
        .args(["--worker-port", &workers.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("crawler dev");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("dev exits by itself")
        .expect("its output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("dev said: {}", stderr.trim());
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("ready in"), "{stdout}");
    stderr
}

/// Checks that `stderr` holds every one of `parts`.
fn says(stderr: &str, parts: &[&str]) {
    for part in parts {
        assert!(stderr.contains(part), "{part:?} not in: {stderr}");
    }
}

/// Checks that nothing listens on any of `ports`, or the next two of each of `triples`.
fn nothing_answers(ports: &[u16], triples: &[u16]) {
    let all = triples
        .iter()
        .flat_map(|first| [*first, first + 1, first + 2]);
    for port in ports.iter().copied().chain(all) {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers"
        );
    }
}

#[tokio::test]
async fn a_taken_master_port_stops_dev_naming_the_port_and_the_flag() {
    let (http, workers, etcd_port) = (three_free_ports(), three_free_ports(), free_port());
    // Another program holds the first master port.
    let other = TcpListener::bind(("127.0.0.1", http)).expect("hold the port");
    let stderr = dev_fails(etcd_port, "", http, workers).await;
    says(
        &stderr,
        &[&format!("127.0.0.1:{http} is taken"), "--http-port <PORT>"],
    );
    assert!(!stderr.contains("logs kept"), "nothing started: {stderr}");
    drop(other);
    nothing_answers(&[http + 1, http + 2, etcd_port], &[workers]);
}

#[tokio::test]
async fn etcds_port_taken_by_something_else_stops_dev_naming_the_flag() {
    let (http, workers) = (three_free_ports(), three_free_ports());
    // Something that is not etcd: it accepts connections and says nothing.
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let etcd_port = other.local_addr().expect("addr").port();
    let stderr = dev_fails(etcd_port, "", http, workers).await;
    says(
        &stderr,
        &[
            &format!("127.0.0.1:{etcd_port} is taken by something that does not answer as etcd"),
            "--etcd http://127.0.0.1:<PORT>",
        ],
    );
    nothing_answers(&[], &[http, workers]);
}

#[tokio::test]
async fn a_missing_runner_stops_dev_before_it_starts_anything() {
    let (http, workers, etcd_port) = (three_free_ports(), three_free_ports(), free_port());
    let stderr = dev_fails(
        etcd_port,
        "worker:\n  runners:\n    default: [no-such-crawler-runner, \"{name}\"]\n",
        http,
        workers,
    )
    .await;
    says(
        &stderr,
        &[
            "worker.runners.default needs \"no-such-crawler-runner\", which is not on PATH",
            "change worker.runners in the file given to --config",
        ],
    );
    // Nothing started: not even etcd.
    nothing_answers(&[etcd_port], &[http, workers]);
}
