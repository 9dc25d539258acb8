#!/usr/bin/env python3
"""Checks llmc's Prometheus files (ctest DeployPrometheusRulesTest):

  1. `promtool check rules` of llmc-alerts.yml and `promtool check config` of the example prometheus.yml, as it
     is and with its commented `authorization` block (for --metrics-auth) uncommented;
  2. `promtool test rules` of llmc-alerts_test.yml;
  3. every alert is tested both firing and not firing there, and has severity, summary, description and a
     runbook_url whose anchor is a section of docs/runbooks.md.

    deploy/prometheus/tests/rules_test.py
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
PROM = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PROM))


def anchors(markdown_path):
    """GitHub-style anchors of the markdown headings (lower case, spaces to '-', punctuation dropped)."""
    out = set()
    with open(markdown_path) as f:
        for line in f:
            m = re.match(r"^#+\s+(.*)$", line)
            if m:
                out.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def main():
    promtool = shutil.which("promtool")
    if not promtool:
        print("FAILED: promtool is not installed (scripts/setup.sh installs Debian's prometheus)")
        return 1
    problems = []
    for args in (["check", "rules", "llmc-alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "tests/llmc-alerts_test.yml"]):
        r = subprocess.run([promtool, *args], cwd=PROM, capture_output=True, text=True)
        print(f"promtool {' '.join(args)}: {'ok' if r.returncode == 0 else 'FAILED'}")
        if r.returncode != 0:
            problems.append(f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}")

    # The example's --metrics-auth block, uncommented, is valid too (promtool wants its credentials file to exist).
    with open(os.path.join(PROM, "prometheus.yml")) as f:
        example = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        token = os.path.join(tmp, "llmc.token")
        with open(token, "w") as f:
            f.write("llmc_" + "0" * 64 + "\n")
        auth, n = re.subn(r"^    # (authorization:)\n    #   (type: Bearer)\n    #   credentials_file: \S+$",
                          f"    \\1\n      \\2\n      credentials_file: {token}", example, flags=re.M)
        auth = auth.replace("  - llmc-alerts.yml", f"  - {os.path.join(PROM, 'llmc-alerts.yml')}")
        if n != 1:
            problems.append("prometheus.yml: no commented `authorization:` block (type: Bearer, credentials_file) "
                            "for --metrics-auth after the llmc scrape target")
        else:
            path = os.path.join(tmp, "prometheus.yml")
            with open(path, "w") as f:
                f.write(auth)
            r = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True)
            print(f"promtool check config prometheus.yml with authorization: {'ok' if r.returncode == 0 else 'FAILED'}")
            if r.returncode != 0:
                problems.append(f"prometheus.yml with its authorization block uncommented:\n{r.stdout}{r.stderr}")

    with open(os.path.join(PROM, "llmc-alerts.yml")) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
    with open(os.path.join(HERE, "llmc-alerts_test.yml")) as f:
        tests = yaml.safe_load(f)["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
    runbook = anchors(os.path.join(REPO, "docs", "runbooks.md"))
    for r in rules:
        name = r["alert"]
        if name not in firing:
            problems.append(f"{name}: no test where it fires")
        if name not in quiet:
            problems.append(f"{name}: no test where it does not fire")
        if r.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append(f"{name}: severity must be critical or warning")
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no {key} annotation")
        url = ann.get("runbook_url", "")
        if not url.startswith("docs/runbooks.md#") or url.split("#", 1)[1] not in runbook:
            problems.append(f"{name}: runbook_url {url!r} is not a section of docs/runbooks.md")
    print(f"{len(rules)} alerts: each tested firing and not firing, annotated, with a runbook section")
    if problems:
        print("FAILED:\n" + "\n".join(problems))
        return 1
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
