//! The browser console end to end: `web/tests/console.test.mjs` drives Debian's Chromium
//! (through playwright-core) against two real `quarry up` processes, one open with demo
//! data and one with logins on. `.ci/run` installs Chromium and `web/`'s npm packages.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::QuarryProcess;

fn web() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web")
}

fn url(http: &str) -> String {
    if http.contains("://") {
        http.to_string()
    } else {
        format!("http://{http}")
    }
}

#[test]
fn console_in_a_real_browser() {
    let web = web();
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "web/node_modules is missing: run `npm ci` in web/ (.ci/run does)"
    );
    let chromium = std::env::var("QUARRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (.ci/run does)"
    );
    let open_dir = tempfile::tempdir().expect("tempdir");
    let open = QuarryProcess::up(open_dir.path(), &["--demo-rows", "200000"]);
    let secure_dir = tempfile::tempdir().expect("tempdir");
    let secure = QuarryProcess::up(
        secure_dir.path(),
        &["--demo-rows", "1000", "--auth", "--admin-password", "pw"],
    );
    let output = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "tests/",
        ])
        .current_dir(&web)
        .env("QUARRY_URL", url(&open.http))
        .env("QUARRY_SECURE_URL", url(&secure.http))
        .env("QUARRY_CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(
        output.status.success(),
        "the console's tests failed:\n{text}"
    );
    assert!(text.contains("ℹ fail 0"), "{text}");
}
