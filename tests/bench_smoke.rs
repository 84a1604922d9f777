//! The benchmark command keeps working: `crawler bench --quick` runs every scenario with tiny
//! counts against its own etcd and masters, and writes its report.

use std::process::Command;

#[test]
fn bench_quick_runs_every_scenario() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("BENCHMARKS.md");
    let output = Command::new(env!("CARGO_BIN_EXE_crawler"))
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .output()
        .expect("run crawler bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read_to_string(&out).expect("report written");
    for scenario in [
        "1 cached read",
        "2 create on leader c=1",
        "2 create on leader c=64",
        "3 create via follower",
        "4 propagation",
        "5 failover",
        "6 scale",
        "7 IDs",
        "11 real load",
        "12 soak",
        "14 placement",
    ] {
        assert!(
            report.contains(scenario),
            "{scenario} missing from the report"
        );
    }
    assert!(report.contains("Machine:"));
    println!("{stdout}");
}
