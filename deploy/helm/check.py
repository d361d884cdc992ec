#!/usr/bin/env python3
"""Render the Helm chart in deploy/helm/quarry with several value sets and check every
manifest offline: Kubernetes' own schemas, strictly (kubernetes-validate), and what those
schemas cannot know — the ServiceMonitor's shape, probes and Service targets naming ports
the containers have, and the config files the chart writes being ones `quarry` accepts.

    python deploy/helm/check.py --quarry target/debug/quarry

Needs the PyPI packages helm-python-sdk (Helm 4's SDK, no cluster and no helm binary) and
kubernetes-validate. Exits non-zero on the first value set that fails, saying why.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quarry")

VALUE_SETS = {
    "defaults": {},
    "hpa+servicemonitor+tls": {
        "executors": {"autoscaling": {"enabled": True}},
        "serviceMonitor": {
            "enabled": True,
            "tokenSecret": {"name": "quarry-scrape"},
            "executorTokenSecret": {"name": "quarry-executor-scrape"},
        },
        "tls": {"enabled": True, "secretName": "quarry-tls"},
        "otlpEndpoint": "http://otel-collector.monitoring:4317",
    },
    "auth-off": {"auth": {"enabled": False}, "existingSecret": "quarry-secrets"},
    "tuned": {
        "coordinator": {"settings": {"max-running-queries": 16, "queue-timeout": "2 min"}},
        "executors": {"slots": 8, "memoryLimit": "6GB", "replicas": 4},
        "service": {"type": "LoadBalancer"},
    },
}


def fail(name, why):
    sys.exit(f"chart check failed for value set '{name}': {why}")


def documents(manifests):
    for path, text in manifests.items():
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def containers(doc):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def check_references(name, docs):
    """Probes name container ports; Services target ports their pods have; the
    ServiceMonitor scrapes ports of Services it selects."""
    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    services = [d for d in docs if d["kind"] == "Service"]
    ports_of = {}
    for w in workloads:
        component = w["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        names = {p["name"] for c in containers(w) for p in c.get("ports", [])}
        ports_of[component] = names
        for c in containers(w):
            for probe in ("readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port not in names:
                    fail(name, f"{w['metadata']['name']} {probe} names port {port!r}, not one of {names}")
    for s in services:
        component = s["spec"]["selector"]["app.kubernetes.io/component"]
        for p in s["spec"]["ports"]:
            if p["targetPort"] not in ports_of.get(component, set()):
                fail(name, f"Service {s['metadata']['name']} targets {p['targetPort']!r}, which {component} pods lack")
    for m in (d for d in docs if d["kind"] == "ServiceMonitor"):
        spec = m["spec"]
        wanted = spec["selector"]["matchLabels"]
        selected = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        if not selected:
            fail(name, "the ServiceMonitor selects no Service")
        served = {p["name"] for s in selected for p in s["spec"]["ports"]}
        for e in spec["endpoints"]:
            if e.get("port") not in served or not e.get("path", "").startswith("/"):
                fail(name, f"ServiceMonitor endpoint {e} is not a port of {served}")
            auth = e.get("authorization")
            if auth and not {"name", "key"} <= auth.get("credentials", {}).keys():
                fail(name, "ServiceMonitor authorization without a Secret name and key")


def check_config_files(name, docs, quarry, workdir):
    """The config files the chart writes: every key one `quarry` takes."""
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    for role in ("coordinator", "executor"):
        path = os.path.join(workdir, f"{name}-{role}.toml")
        with open(path, "w") as f:
            f.write(config["data"][f"{role}.toml"])
        out = subprocess.run(
            [quarry, "config", "--print", role, "--config", path],
            capture_output=True, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")},
        )
        if out.returncode != 0:
            fail(name, f"quarry refuses the chart's {role}.toml: {out.stderr.strip()}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarry", help="a quarry binary, to check the config files the chart writes")
    parser.add_argument("--kubernetes-version", default="1.37.0")
    args = parser.parse_args()
    chart = helm.Chart.load(CHART)
    lint = helm.lint(CHART, strict=True)
    errors = [m for m in lint.get("messages") or [] if m.get("severity", 0) >= 2]
    if errors or lint.get("errors"):
        sys.exit(f"helm lint --strict: {errors or lint['errors']}")
    workdir = tempfile.mkdtemp(prefix="quarry-chart-")
    for name, values in VALUE_SETS.items():
        manifests = chart.render(values=values, name="quarry", namespace="data", is_install=True)
        docs = [doc for _, doc in documents(manifests)]
        kinds = sorted(d["kind"] for d in docs)
        files = []
        for i, doc in enumerate(docs):
            if doc["kind"] == "ServiceMonitor":
                continue  # a CRD: Kubernetes' schemas do not have it; checked below
            path = os.path.join(workdir, f"{name}-{i}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(doc, f)
            files.append(path)
        out = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"),
             "--strict", "--quiet", "-k", args.kubernetes_version] + files,
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            fail(name, out.stdout + out.stderr)
        check_references(name, docs)
        if args.quarry:
            check_config_files(name, docs, args.quarry, workdir)
        print(f"{name}: {len(docs)} manifests valid ({', '.join(kinds)})")


if __name__ == "__main__":
    main()
