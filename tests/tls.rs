//! The API over TLS, as its clients see it. curl, Python's ssl module and `crawler ctl` accept
//! the cluster's CA and refuse another CA, an expired certificate and a wrong host name. A
//! master that asks for client certificates refuses clients without one, while its followers
//! forward writes with theirs and refuse a leader whose certificate their CA did not issue.
//! And a certificate renewed under load takes over new handshakes without one request failing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;
use crawler::config::{Config, TlsConfig};
use crawler::tls::authority::Authority;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

/// The cluster's CA, and another that nobody here trusts, with their files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ours: Authority,
    ca: PathBuf,
    stranger: Authority,
    other_ca: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = Authority::new("crawler test CA").expect("CA");
        let stranger = Authority::new("some other CA").expect("CA");
        let ca = dir.path().join("ca.pem");
        let other_ca = dir.path().join("other-ca.pem");
        std::fs::write(&ca, ours.pem()).expect("write");
        std::fs::write(&other_ca, stranger.pem()).expect("write");
        Self {
            dir,
            ours,
            ca,
            stranger,
            other_ca,
        }
    }

    /// A certificate of ours for 127.0.0.1 only (so `localhost` is a wrong host name), as
    /// `<stem>.pem` and `<stem>-key.pem`.
    fn issue(&self, stem: &str) -> (PathBuf, PathBuf) {
        self.ours
            .issue(&["127.0.0.1"])
            .expect("issue")
            .write(self.dir.path(), stem)
            .expect("write")
    }
}

fn tls_config(endpoints: &[String], pki: &Pki, files: &(PathBuf, PathBuf)) -> Config {
    let mut config = test_config(endpoints);
    config.http.tls = Some(TlsConfig {
        cert: files.0.clone(),
        key: files.1.clone(),
        client_ca: None,
        ca: Some(pki.ca.clone()),
        reload_interval: Duration::from_millis(100),
        handshake_timeout: Duration::from_secs(5),
    });
    config
}

/// A client trusting `ca`, presenting `identity` when asked; `keep_alive: false` makes every
/// request a new connection, and so a new handshake.
fn client(ca: &Path, identity: Option<&(PathBuf, PathBuf)>, keep_alive: bool) -> reqwest::Client {
    let identity =
        identity.map(|(cert, key)| crawler::tls::client::identity(cert, key).expect("identity"));
    let tls = crawler::tls::client::trusting(ca, identity).expect("client TLS");
    let mut builder = crawler::tls::client::builder()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(tls);
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().expect("client")
}

/// A command's exit code and everything it printed.
async fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env_remove("CRAWLER_SERVER")
        .env_remove("CRAWLER_TOKEN")
        .env_remove("CRAWLER_CA")
        .env_remove("SSL_CERT_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// curl, printing the status code; its exit code and output.
async fn curl(args: &[&str]) -> (i32, String) {
    let mut all = vec![
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ];
    all.extend_from_slice(args);
    run("curl", &all).await
}

/// `crawler ctl <args>`.
async fn ctl(args: &[&str]) -> (i32, String) {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    run(env!("CARGO_BIN_EXE_crawler"), &all).await
}

/// Python's ssl module connecting to 127.0.0.1:`port` as `host_name`, trusting `ca`, with a
/// client certificate when given: `ok <status> <sha256 of the server's certificate>`,
/// `refused <why the certificate was refused>`, or `failed <error>`.
const PYTHON: &str = r#"
import hashlib, socket, ssl, sys
port, name, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if len(sys.argv) > 5:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /api/v1/cluster HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = tls.recv(64).decode(errors="replace").split("\r\n")[0]
            print("ok", head.split(" ")[1], hashlib.sha256(der).hexdigest())
except ssl.SSLCertVerificationError as e:
    print("refused", e.verify_message)
except (ssl.SSLError, OSError) as e:
    print("failed", type(e).__name__, e)
"#;

async fn python(
    port: u16,
    host_name: &str,
    ca: &Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> String {
    let port = port.to_string();
    let ca = ca.display().to_string();
    let mut args = vec!["-c", PYTHON, &port, host_name, &ca];
    let files = identity.map(|(c, k)| (c.display().to_string(), k.display().to_string()));
    if let Some((cert, key)) = &files {
        args.push(cert);
        args.push(key);
    }
    let (_, out) = run("python3", &args).await;
    out.trim().to_owned()
}

/// The SHA-256 of the certificate in the PEM file at `path`, in hex.
fn fingerprint(path: &Path) -> String {
    let der = CertificateDer::from_pem_file(path).expect("a PEM certificate");
    ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn port_of(master: &Running) -> u16 {
    master
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// A sample of `/metrics` whose line starts with `series`, or 0.
async fn metric(client: &reqwest::Client, master: &str, series: &str) -> f64 {
    let Ok(resp) = client.get(format!("{master}/metrics")).send().await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_answers(client: &reqwest::Client, master: &str) {
    eventually(
        "the master answers over TLS",
        Duration::from_secs(20),
        || async {
            let resp = client.get(format!("{master}/readyz")).send().await.ok()?;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
}

/// A master serving a certificate of ours (its files returned), once it answers; a client
/// trusting our CA, and the master's port.
async fn one_master(etcd: &Etcd, pki: &Pki) -> ((PathBuf, PathBuf), Running, reqwest::Client, u16) {
    let files = pki.issue("master");
    let config = tls_config(std::slice::from_ref(&etcd.url), pki, &files);
    let master = start_master(config, 1).await;
    let trusting = client(&pki.ca, None, true);
    wait_answers(&trusting, &master.url).await;
    let port = port_of(&master);
    (files, master, trusting, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_accept_the_cluster_ca_and_refuse_a_wrong_ca_host_or_expired_certificate() {
    let etcd = Etcd::start().await;
    let pki = Pki::new();
    let (files, master, trusting, port) = one_master(&etcd, &pki).await;
    let url = format!("{}/api/v1/cluster", master.url);
    let wrong_host = format!("https://localhost:{port}/api/v1/cluster");
    let ca = pki.ca.display().to_string();
    let other_ca = pki.other_ca.display().to_string();
    let served = fingerprint(&files.0);

    // curl: exit 60 is "the peer's certificate cannot be authenticated".
    assert_eq!(curl(&["--cacert", &ca, &url]).await, (0, "200".into()));
    let (code, out) = curl(&["--cacert", &other_ca, &url]).await;
    assert_eq!(code, 60, "another CA: {out}");
    let (code, out) = curl(&[&url]).await;
    assert_eq!(code, 60, "the system's trust store: {out}");
    let (code, out) = curl(&["--cacert", &ca, &wrong_host]).await;
    assert_eq!(code, 60, "a wrong host name: {out}");
    // Plain HTTP to the HTTPS port gets no answer, and the master goes on serving.
    let (code, out) = curl(&[&format!("http://127.0.0.1:{port}/readyz")]).await;
    assert_ne!(code, 0, "plain HTTP answered: {out}");
    assert_eq!(curl(&["--cacert", &ca, &url]).await, (0, "200".into()));

    // Python's ssl module.
    assert_eq!(
        python(port, "127.0.0.1", &pki.ca, None).await,
        format!("ok 200 {served}")
    );
    let out = python(port, "127.0.0.1", &pki.other_ca, None).await;
    assert!(
        out.starts_with("refused unable to get local issuer"),
        "another CA: {out}"
    );
    let out = python(port, "localhost", &pki.ca, None).await;
    assert!(
        out.starts_with("refused Hostname mismatch"),
        "a wrong host name: {out}"
    );

    // crawler ctl.
    let (code, out) = ctl(&["--server", &master.url, "--ca", &ca, "get", "workers"]).await;
    assert_eq!(code, 0, "ctl with the CA: {out}");
    let (code, out) = ctl(&["--server", &master.url, "--ca", &other_ca, "get", "workers"]).await;
    assert_eq!(code, 1, "ctl with another CA: {out}");
    assert!(out.contains("UnknownIssuer"), "ctl says why: {out}");
    let (code, out) = ctl(&["--server", &master.url, "get", "workers"]).await;
    assert_eq!(code, 1, "ctl with the system's trust store: {out}");
    let (code, out) = ctl(&[
        "--server",
        &format!("https://localhost:{port}"),
        "--ca",
        &ca,
        "get",
        "workers",
    ])
    .await;
    assert_eq!(code, 1, "ctl to a wrong host name: {out}");
    assert!(out.contains("not valid for name"), "ctl says why: {out}");

    // Each refusal was a failed handshake at the master, counted.
    let failures = metric(
        &trusting,
        &master.url,
        "crawler_tls_handshake_failures_total",
    )
    .await;
    assert!(failures >= 6.0, "handshake failures counted: {failures}");

    // The master's certificate expires (it is replaced by an expired one, which it serves:
    // the files are the operator's); every client refuses it.
    let expired = pki.ours.issue_expired(&["127.0.0.1"]).expect("issue");
    std::fs::write(&files.1, &expired.key).expect("write key");
    std::fs::write(&files.0, &expired.cert).expect("write cert");
    eventually(
        "the expired certificate is served",
        Duration::from_secs(10),
        || async {
            let out = python(port, "127.0.0.1", &pki.ca, None).await;
            out.starts_with("refused certificate has expired")
                .then_some(())
        },
    )
    .await;
    let (code, out) = curl(&["--cacert", &ca, &url]).await;
    assert_eq!(code, 60, "an expired certificate: {out}");
    let (code, out) = ctl(&["--server", &master.url, "--ca", &ca, "get", "workers"]).await;
    assert_eq!(code, 1, "ctl to an expired certificate: {out}");
    assert!(out.contains("certificate expired"), "ctl says why: {out}");

    // A renewed one is served again, without a restart.
    let renewed = pki.issue("master");
    eventually(
        "the renewed certificate is served",
        Duration::from_secs(10),
        || async {
            let out = python(port, "127.0.0.1", &pki.ca, None).await;
            (out == format!("ok 200 {}", fingerprint(&renewed.0))).then_some(())
        },
    )
    .await;
    assert_eq!(curl(&["--cacert", &ca, &url]).await, (0, "200".into()));
    master.stop().await;
}

/// Masters requiring client certificates from our CA, trusting it for the leader's.
fn mutual_config(
    endpoints: &[String],
    pki: &Pki,
    files: &(PathBuf, PathBuf),
    leader_ca: &Path,
) -> Config {
    let mut config = tls_config(endpoints, pki, files);
    if let Some(tls) = config.http.tls.as_mut() {
        tls.client_ca = Some(pki.ca.clone());
        tls.ca = Some(leader_ca.to_path_buf());
    }
    config
}

/// The leader `master` names in its cluster view, once it names one.
async fn leader_known(client: &reqwest::Client, master: &str) -> String {
    eventually(
        "the master knows the leader",
        Duration::from_secs(20),
        || async {
            let view: Value = client
                .get(format!("{master}/api/v1/cluster"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            view["leader"]["url"].as_str().map(str::to_owned)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_followers_forward_with_theirs() {
    let etcd = Etcd::start().await;
    let pki = Pki::new();
    let endpoints = [etcd.url.clone()];
    let leader_files = pki.issue("leader");
    let follower_files = pki.issue("follower");
    let me = pki.issue("client");
    let leader = start_master(mutual_config(&endpoints, &pki, &leader_files, &pki.ca), 1).await;
    let with_cert = client(&pki.ca, Some(&me), true);
    wait_answers(&with_cert, &leader.url).await;
    assert_eq!(leader_known(&with_cert, &leader.url).await, leader.url);
    let follower = start_master(mutual_config(&endpoints, &pki, &follower_files, &pki.ca), 2).await;
    assert_eq!(leader_known(&with_cert, &follower.url).await, leader.url);

    let url = format!("{}/api/v1/cluster", follower.url);
    let ca = pki.ca.display().to_string();
    let (cert, key) = (me.0.display().to_string(), me.1.display().to_string());
    assert_eq!(
        curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]).await,
        (0, "200".into())
    );
    let (code, out) = curl(&["--cacert", &ca, &url]).await;
    assert!(
        code != 0 && !out.starts_with("200"),
        "no client certificate: {code} {out}"
    );
    let strangers = pki
        .stranger
        .issue(&["client"])
        .expect("issue")
        .write(pki.dir.path(), "stranger")
        .expect("write");
    let (s_cert, s_key) = (
        strangers.0.display().to_string(),
        strangers.1.display().to_string(),
    );
    let (code, out) = curl(&["--cacert", &ca, "--cert", &s_cert, "--key", &s_key, &url]).await;
    assert!(
        code != 0 && !out.starts_with("200"),
        "a stranger's certificate: {code} {out}"
    );
    let port = port_of(&follower);
    let out = python(port, "127.0.0.1", &pki.ca, Some(&me)).await;
    assert!(
        out.starts_with("ok 200 "),
        "python with a certificate: {out}"
    );
    let out = python(port, "127.0.0.1", &pki.ca, None).await;
    assert!(out.starts_with("failed"), "python without one: {out}");

    // A write through the follower: forwarded to the leader, the follower presenting its
    // own certificate and checking the leader's.
    let resp = with_cert
        .post(format!("{}/api/v1/resources", follower.url))
        .json(&json!({"name": "through-the-follower"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let (code, out) = ctl(&[
        "--server",
        &follower.url,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "create",
        "by-ctl",
    ])
    .await;
    assert_eq!(code, 0, "ctl with a client certificate: {out}");
    let (code, out) = ctl(&["--server", &follower.url, "--ca", &ca, "create", "refused"]).await;
    assert_eq!(code, 1, "ctl without one: {out}");
    for name in ["through-the-follower", "by-ctl"] {
        let resp = with_cert
            .get(format!("{}/api/v1/resources/{name}", leader.url))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200, "{name} was created");
    }

    // A follower told to trust another CA for the leader refuses the leader's certificate:
    // its forwarded write is answered 503, and nothing is written.
    let doubting_files = pki.issue("doubting");
    let doubting = start_master(
        mutual_config(&endpoints, &pki, &doubting_files, &pki.other_ca),
        3,
    )
    .await;
    assert_eq!(leader_known(&with_cert, &doubting.url).await, leader.url);
    let resp = with_cert
        .post(format!("{}/api/v1/resources", doubting.url))
        .json(&json!({"name": "never-written"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 503);
    let problem: Value = resp.json().await.expect("problem");
    assert_eq!(problem["status"], 503, "{problem}");
    let resp = with_cert
        .get(format!("{}/api/v1/resources/never-written", leader.url))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    for m in [doubting, follower, leader] {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_under_load_fails_no_request() {
    let etcd = Etcd::start().await;
    let pki = Pki::new();
    let (files, master, observer, port) = one_master(&etcd, &pki).await;

    // Readers on kept-alive connections and on a new connection (a new handshake) per request,
    // and a writer creating tasks, each on a new connection.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let handshakes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for i in 0..5 {
        let keep_alive = i < 2;
        let writes = i == 4;
        let http = client(&pki.ca, None, keep_alive);
        let (stop, ok, handshakes, failures) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&handshakes),
            Arc::clone(&failures),
        );
        let base = master.url.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request = if writes {
                    http.post(format!("{base}/api/v1/resources"))
                        .json(&json!({"name": format!("renewal-{n}")}))
                } else {
                    http.get(format!("{base}/api/v1/cluster"))
                };
                let expected = if writes { 201 } else { 200 };
                match request.send().await {
                    Ok(resp) if resp.status() == expected => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if !keep_alive {
                            handshakes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(resp) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("{}", resp.status())),
                    Err(e) => failures
                        .lock()
                        .expect("lock")
                        .push(crawler::tls::client::cause(&e)),
                }
            }
        }));
    }

    let applied = "crawler_tls_reloads_total{outcome=\"applied\"}";
    let refused = "crawler_tls_reloads_total{outcome=\"refused\"}";
    let mut previous = fingerprint(&files.0);
    for round in 1..=4 {
        // The certificate is replaced first and its key a moment later, as a careless renewal
        // would: in between the files do not match, and the old certificate stays.
        let renewed = pki.ours.issue(&["127.0.0.1"]).expect("issue");
        let refused_before = metric(&observer, &master.url, refused).await;
        std::fs::write(&files.0, &renewed.cert).expect("write cert");
        eventually(
            "the mismatch is refused",
            Duration::from_secs(10),
            || async {
                (metric(&observer, &master.url, refused).await > refused_before).then_some(())
            },
        )
        .await;
        let out = python(port, "127.0.0.1", &pki.ca, None).await;
        assert_eq!(
            out,
            format!("ok 200 {previous}"),
            "round {round}: the old one stays"
        );
        std::fs::write(&files.1, &renewed.key).expect("write key");
        let now = fingerprint(&files.0);
        eventually(
            "the renewed certificate is served",
            Duration::from_secs(10),
            || async {
                let out = python(port, "127.0.0.1", &pki.ca, None).await;
                (out == format!("ok 200 {now}")).then_some(())
            },
        )
        .await;
        assert!(metric(&observer, &master.url, applied).await >= f64::from(round));
        previous = now;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let failures = failures.lock().expect("lock").clone();
    let (ok, handshakes) = (
        ok.load(Ordering::Relaxed),
        handshakes.load(Ordering::Relaxed),
    );
    eprintln!(
        "renewal under load: {ok} requests answered ({handshakes} on new connections), {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during the renewals: {failures:?}"
    );
    assert!(
        handshakes >= 100,
        "new connections kept coming: {handshakes}"
    );
    master.stop().await;
}
