//! TLS on the user-facing listeners, with real clients: ADBC over `grpc+tls://` and curl
//! over https trusting the test CA, and plaintext/TLS mismatches failing cleanly.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{QuarryProcess, TestCluster, run_python, test_cert};

const TLS_CLIENT: &str = r#"
import sys
import time
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager

flight, ca = sys.argv[1], open(sys.argv[2]).read()
conn = flightsql.connect(
    "grpc+tls://" + flight,
    db_kwargs={
        "adbc.flight.sql.client_option.tls_root_certs": ca,
        "username": "admin",
        "password": "pw",
    },
    autocommit=True,
)
cur = conn.cursor()
cur.execute("SELECT count(*) AS n FROM demo.orders")
assert cur.fetch_arrow_table().column("n")[0].as_py() == 1000
print("TLS query OK")

# A plaintext client on the TLS port fails, and does not hang.
started = time.time()
try:
    plain = flightsql.connect(
        "grpc://" + flight,
        db_kwargs={"username": "admin", "password": "pw", "adbc.flight.sql.rpc.timeout_seconds.query": "10"},
        autocommit=True,
    )
    plain.cursor().execute("SELECT 1")
    raise SystemExit("plaintext was accepted on the TLS port")
except adbc_driver_manager.Error as e:
    assert time.time() - started < 15, time.time() - started
    print("plaintext refused in %.1f s: %s" % (time.time() - started, str(e)[:80]))
print("TLS OK")
"#;

fn curl(args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        started.elapsed(),
    )
}

#[test]
fn adbc_and_curl_over_tls_and_mismatches_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = test_cert("ca.pem");
    let quarry = QuarryProcess::up_secured(dir.path());
    assert!(quarry.http.starts_with("https://"), "{}", quarry.http);
    let out = run_python(TLS_CLIENT, &[&quarry.flight, &ca]);
    assert!(out.contains("TLS OK"), "{out}");
    eprintln!("{out}");

    let url = format!("{}/api/v1/sql", quarry.http);
    let (code, body, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "admin:pw",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"sql": "SELECT 40 + 2 AS x"}"#,
        &url,
    ]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains(r#""x":42"#), "{body}");
    // Without the CA the certificate is not trusted.
    let (code, body, _) = curl(&["-u", "admin:pw", &url]);
    assert_ne!(code, 0, "{body}");
    // Plaintext HTTP on the TLS port: an error, quickly.
    let plain = url.replacen("https://", "http://", 1);
    let (code, body, took) = curl(&["-u", "admin:pw", &plain]);
    assert_ne!(code, 0, "{body}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // The server still serves TLS clients after those.
    let (code, body, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "admin:pw",
        &format!("{}/healthz", quarry.http),
    ]);
    assert_eq!(code, 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_on_a_plaintext_port_fails_quickly() {
    let cluster = TestCluster::start(1).await;
    let https = cluster.http().replacen("http://", "https://", 1);
    let ca = test_cert("ca.pem");
    let (code, body, took) =
        tokio::task::spawn_blocking(move || curl(&["--cacert", &ca, &format!("{https}/healthz")]))
            .await
            .expect("curl");
    assert_ne!(code, 0, "{body}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // And the server is unharmed.
    let health = reqwest::get(format!("{}/healthz", cluster.http()))
        .await
        .expect("plaintext request");
    assert!(health.status().is_success());
    cluster.cluster.shutdown().await;
}
