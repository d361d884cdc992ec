//! The Helm chart in `deploy/helm/quarry`: rendered with several value sets (defaults; HPA,
//! ServiceMonitor and TLS on; logins off; tuned) by Helm 4's SDK, every manifest validated
//! strictly against Kubernetes' schemas offline, probes and Services checked against the
//! containers' ports, and the config files it writes accepted by this build's `quarry`.

use std::process::Command;

use crate::harness::{python, quarry_bin, workspace};

#[test]
fn the_chart_renders_and_validates_with_every_value_set() {
    let out = Command::new(python())
        .arg(workspace().join("deploy/helm/check.py"))
        .arg("--quarry")
        .arg(quarry_bin())
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for set in ["defaults", "hpa+servicemonitor+tls", "auth-off", "tuned"] {
        assert!(text.contains(&format!("{set}: ")), "{set} missing:\n{text}");
    }
    assert!(text.contains("HorizontalPodAutoscaler") && text.contains("ServiceMonitor"));
    eprintln!("{text}");
}
