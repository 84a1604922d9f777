//! What `crawler dev` checks so that it never calls a cluster ready that is not: the ports it
//! will use are free before it starts anything, etcd's port holds etcd or nothing, and a child
//! that exits during start-up stops dev with its cause and the flag that changes it.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::tools::procs::{Proc, ToolError};

/// Processes of one kind dev starts on consecutive ports.
pub struct Ports {
    /// `master`, `worker`.
    pub role: &'static str,
    /// The first port.
    pub first: u16,
    /// How many.
    pub count: u16,
    /// The flag that moves them.
    pub flag: &'static str,
}

impl Ports {
    /// The ports, or why the range does not fit.
    fn all(&self) -> Result<Vec<u16>, ToolError> {
        (0..self.count)
            .map(|i| {
                self.first.checked_add(i).ok_or_else(|| {
                    ToolError::Setup(format!(
                        "{} {} leaves no room for {} {}s on consecutive ports: choose a lower one",
                        self.flag, self.first, self.count, self.role
                    ))
                })
            })
            .collect()
    }
}

/// Checks that every port of `ranges` is free and that no two ranges overlap.
pub fn ports_free(ranges: &[Ports]) -> Result<(), ToolError> {
    let mut seen: Vec<(u16, &Ports)> = Vec::new();
    for range in ranges {
        for (i, port) in range.all()?.into_iter().enumerate() {
            if let Some((_, other)) = seen.iter().find(|(p, _)| *p == port) {
                return Err(ToolError::Setup(format!(
                    "{} and {} would both use port {port}: move one of them",
                    other.flag, range.flag
                )));
            }
            seen.push((port, range));
            if let Err(error) = TcpListener::bind(("127.0.0.1", port)) {
                return Err(ToolError::Setup(format!(
                    "127.0.0.1:{port} is taken ({error}), so {}-{} could not listen on it: \
                     choose other {} ports with {} <PORT> ({}s use it and the next {})",
                    range.role,
                    i + 1,
                    range.role,
                    range.flag,
                    range.role,
                    range.count - 1
                )));
            }
        }
    }
    Ok(())
}

/// Why dev cannot start its own etcd at `endpoint`, which did not answer as etcd: it is not a
/// loopback address, or something else listens on its port.
pub fn etcd_port_usable(endpoint: &str, port: u16) -> Result<(), ToolError> {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .rsplit_once(':')
        .map_or("", |(host, _)| host);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(ToolError::Setup(format!(
            "etcd at {endpoint} does not answer, and dev starts an etcd only on this machine: \
             start that etcd, or use a local one with --etcd http://127.0.0.1:<PORT>"
        )));
    }
    let taken = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
        || TcpListener::bind(("127.0.0.1", port)).is_err();
    if taken {
        return Err(ToolError::Setup(format!(
            "127.0.0.1:{port} is taken by something that does not answer as etcd, so dev cannot \
             start its etcd there: stop that program, or choose another port with \
             --etcd http://127.0.0.1:<PORT>"
        )));
    }
    Ok(())
}

/// The first of `procs` that has exited, as an error naming its cause (the last line of its
/// log in `logs`, when there is one) and what to change.
pub async fn first_exit(procs: &mut [&mut Proc], logs: Option<&Path>) -> Result<(), ToolError> {
    for proc in procs.iter_mut() {
        if proc.wait_exit(Duration::ZERO).await {
            let cause = logs
                .and_then(|dir| {
                    std::fs::read_to_string(dir.join(format!("{}.log", proc.name))).ok()
                })
                .and_then(|log| last_error(&log))
                .unwrap_or_else(|| "no cause logged".to_owned());
            return Err(ToolError::Setup(format!(
                "{} exited during start-up: {cause}{}",
                proc.name,
                hint(&proc.name, &cause)
            )));
        }
    }
    Ok(())
}

/// The line of a child's log that says why it stopped: its last `crawler:` line (what `main`
/// prints on an error), else its last line.
fn last_error(log: &str) -> Option<String> {
    let lines = || log.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .rev()
        .find_map(|l| l.strip_prefix("crawler: "))
        .or_else(|| lines().next_back())
        .map(str::to_owned)
}

/// What to change, for a child named `name` that stopped with `cause`.
fn hint(name: &str, cause: &str) -> &'static str {
    let master = name.starts_with("master");
    if cause.contains("cannot listen") {
        if master {
            "; choose other master ports with --http-port <PORT>"
        } else {
            "; choose other worker ports with --worker-port <PORT>"
        }
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_the_process_and_the_flag() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let masters = Ports {
            role: "master",
            first: port - 1,
            count: 3,
            flag: "--http-port",
        };
        // `port - 1` may be taken too, by chance: then the message names that one.
        let error = ports_free(&[masters]).expect_err("taken").to_string();
        assert!(error.contains("--http-port <PORT>"), "{error}");
        assert!(error.contains("is taken"), "{error}");
    }

    #[test]
    fn ranges_that_overlap_or_overflow_are_refused() {
        let masters = Ports {
            role: "master",
            first: 65_534,
            count: 3,
            flag: "--http-port",
        };
        let error = ports_free(&[masters]).expect_err("overflow").to_string();
        assert!(error.contains("no room"), "{error}");
        let free = crate::tools::procs::free_port().expect("port");
        let a = Ports {
            role: "master",
            first: free,
            count: 1,
            flag: "--http-port",
        };
        let b = Ports {
            role: "worker",
            first: free,
            count: 1,
            flag: "--worker-port",
        };
        let error = ports_free(&[a, b]).expect_err("overlap").to_string();
        assert!(
            error.contains("--http-port and --worker-port would both use port"),
            "{error}"
        );
    }

    #[test]
    fn a_childs_cause_is_its_last_error_line_with_the_flag_to_change() {
        let log = "2026-12-03 INFO starting\ncrawler: cannot listen on 127.0.0.1:8081: Address already in use\n\n";
        let cause = last_error(log).expect("cause");
        assert_eq!(
            cause,
            "cannot listen on 127.0.0.1:8081: Address already in use"
        );
        assert!(hint("master-1", &cause).contains("--http-port"));
        assert!(hint("worker-2", &cause).contains("--worker-port"));
        assert_eq!(
            last_error("just one line\n").as_deref(),
            Some("just one line")
        );
        assert_eq!(last_error(""), None);
    }

    #[test]
    fn a_remote_etcd_that_does_not_answer_is_not_started_here() {
        let error = etcd_port_usable("http://10.1.2.3:2379", 2379)
            .expect_err("remote")
            .to_string();
        assert!(error.contains("--etcd"), "{error}");
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let error = etcd_port_usable(&format!("http://127.0.0.1:{port}"), port)
            .expect_err("taken")
            .to_string();
        assert!(error.contains("does not answer as etcd"), "{error}");
    }

    #[tokio::test]
    async fn a_child_that_exited_stops_dev_with_the_cause_from_its_log() {
        let dir = tempfile::tempdir().expect("dir");
        let log = std::fs::File::create(dir.path().join("worker-1.log")).expect("log");
        let child = std::process::Command::new("sh")
            .args([
                "-c",
                "echo starting >&2; echo 'crawler: cannot listen on 127.0.0.1:9091: Address already in use' >&2; exit 1",
            ])
            .stderr(log)
            .spawn()
            .expect("sh");
        let mut worker = Proc::new(child, "worker-1".into(), "127.0.0.1:9091".into());
        let mut running = Proc::new(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep"),
            "master-1".into(),
            String::new(),
        );
        // Only a child that has exited counts.
        assert!(
            first_exit(&mut [&mut running], Some(dir.path()))
                .await
                .is_ok()
        );
        let error = loop {
            match first_exit(&mut [&mut running, &mut worker], Some(dir.path())).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(error) => break error.to_string(),
            }
        };
        assert!(
            error.contains(
                "worker-1 exited during start-up: cannot listen on 127.0.0.1:9091: Address \
                 already in use; choose other worker ports with --worker-port <PORT>"
            ),
            "{error}"
        );
    }
}
