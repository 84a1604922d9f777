//! A master and a worker against an etcd that requires TLS with client certificates and a
//! user and password, configured the way the README says.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::support::*;
use crawler::config::{Config, EtcdTls};
use crawler::tools::member::EtcdMember;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_pem, client_key) =
        leaf(vec!["crawler".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        path
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_pem),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_pem),
        client_key: write("client-key.pem", &client_key),
    }
}

struct SecureEtcd {
    child: Child,
    url: String,
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_secure_etcd(dir: &Path, pki: &Pki) -> SecureEtcd {
    let client_port = free_port();
    let peer_port = free_port();
    let url = format!("https://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log");
    let data_dir = dir.join("data");
    let child = EtcdMember {
        name: "secure",
        data_dir: &data_dir,
        client_url: &url,
        peer_url: &peer,
        initial_cluster: &format!("secure={peer}"),
        new_cluster: true,
    }
    .command()
    .arg(format!("--cert-file={}", pki.server_cert.display()))
    .arg(format!("--key-file={}", pki.server_key.display()))
    .arg(format!("--trusted-ca-file={}", pki.ca.display()))
    .arg("--client-cert-auth")
    .stdout(log.try_clone().expect("log"))
    .stderr(log)
    .spawn()
    .unwrap_or_else(|e| panic!("etcd could not start ({e}); install etcd-server"));
    SecureEtcd { child, url }
}

fn tls(pki: &Pki) -> TlsOptions {
    TlsOptions::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).expect("ca")))
        .identity(Identity::from_pem(
            std::fs::read(&pki.client_cert).expect("cert"),
            std::fs::read(&pki.client_key).expect("key"),
        ))
}

#[tokio::test]
async fn master_and_worker_run_against_etcd_with_tls_and_a_password() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = pki(dir.path());
    let etcd = start_secure_etcd(dir.path(), &pki);
    // Wait for it over TLS, then turn authentication on with a root user.
    let mut admin = eventually("secure etcd answers", Duration::from_secs(20), || async {
        let options = ConnectOptions::new().with_tls(tls(&pki));
        let mut client = Client::connect([etcd.url.as_str()], Some(options))
            .await
            .ok()?;
        client.status().await.ok()?;
        Some(client)
    })
    .await;
    admin
        .user_add("root", "root-password", None)
        .await
        .expect("user");
    admin.user_grant_role("root", "root").await.expect("role");
    admin.auth_enable().await.expect("auth enable");

    let mut config: Config = test_config(std::slice::from_ref(&etcd.url));
    config.etcd.username = Some("root".into());
    config.etcd.password = Some("root-password".into());
    config.etcd.tls = Some(EtcdTls {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        domain: None,
    });
    let master = start_master(config.clone(), 1).await;
    let _worker = start_worker(config.clone(), 1, 10).await;
    ready_leader(&[&master.url], Duration::from_secs(20)).await;
    wait_workers(&master.url, 1).await;
    let (status, body) = create(&master.url, "over-tls").await.expect("create");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["assigned_node"]["id"], "go.micro.server.worker-1");

    // A wrong password is refused at once rather than retried forever.
    let mut wrong = config.clone();
    wrong.etcd.password = Some("nope".into());
    let refused =
        tokio::time::timeout(Duration::from_secs(10), crawler::etcd::connect(&wrong.etcd))
            .await
            .expect("refused in time");
    assert!(refused.is_err());
    // Without a client certificate etcd refuses the connection.
    let mut no_cert = config.clone();
    no_cert.etcd.tls = Some(EtcdTls {
        ca_file: Some(pki.ca.clone()),
        ..EtcdTls::default()
    });
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        crawler::etcd::connect(&no_cert.etcd),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a client without a certificate got in"
    );
    master.stop().await;
}
