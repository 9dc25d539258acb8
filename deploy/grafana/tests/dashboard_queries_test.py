#!/usr/bin/env python3
"""Every query of llmc's Grafana dashboards against a real Prometheus scraping a real `llmc serve` that ran real jobs
(ctest DeployDashboardQueriesTest).

Starts `llmc serve --workers 2 --threads 1` on free ports with a temporary data directory, and a `prometheus` that
scrapes its /metrics every second and loads deploy/prometheus/llmc-alerts.yml. Runs three jobs on the fixture model
(../shared/models/llmc-fixture-llama): GPTQ W4A16 on both workers (`--gpus 2`: calibration tokens, the ranks'
collectives), RTN W4A16 (data-free), and one that fails (a model directory without weights). Then, for every
dashboard in deploy/grafana/dashboards:

  * each template variable's label_values() query must list what the run made (the coordinator's instance, the
    gang job's id, both workers);
  * each panel query, with the variables substituted ($instance: the coordinator, $job_id: the gang job, $worker:
    all, $__rate_interval: 10s), must parse and evaluate as a range query over the run, and return data;
    instant (table) queries must also evaluate at the end.

It also checks that every alert rule evaluates without error against the real series. Fails on any PromQL error
or empty panel. Binaries: $LLMC_BIN (llmc; llmc-server and llmc-worker beside it), else <repo>/build/bin/llmc.
The fixture model and calibration text come from $LLMC_SHARED_DIR, else ../shared beside the checkout: without
them the test fails when $CI is set (CI=true: a CI run must not pass without the test; CI=false or 0 count as unset)
and is skipped (exit 77) otherwise. $LLMC_TEST_SHOW_LOGS=1 prints the service and Prometheus logs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir, os.pardir))
sys.path.insert(0, os.path.join(REPO, "tests", "service"))
from prometheus_scrape_test import free_port, http_get, query, stop, wait_for  # noqa: E402

LLMC = os.environ.get("LLMC_BIN") or os.path.join(REPO, "build", "bin", "llmc")
SHARED = os.path.abspath(os.environ.get("LLMC_SHARED_DIR") or os.path.join(REPO, os.pardir, "shared"))
FIXTURE = os.path.join(SHARED, "models", "llmc-fixture-llama")
CALIBRATION = os.path.join(SHARED, "data", "calibration.txt")
DASHBOARDS = os.path.join(REPO, "deploy", "grafana", "dashboards")
ALERTS = os.path.join(REPO, "deploy", "prometheus", "llmc-alerts.yml")
RATE_INTERVAL = "10s"


def prom_api(port, path, params):
    body = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)))
    if body.get("status") != "success":
        raise AssertionError(f"{path} {params}: {body}")
    return body["data"]


def substitute(expr, values):
    """Grafana's variables in a query: $name and ${name} (the dashboards use no other forms)."""
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise AssertionError(f"unknown variables {left} in {expr}")
    return expr


def label_values(port, q, start, end, values):
    """Grafana's label_values(metric{...}, label) or label_values(label) for a Prometheus data source."""
    m = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", q.strip())
    if not m:
        raise AssertionError(f"variable query {q!r} is not label_values(...)")
    params = {"start": start, "end": end}
    if m.group(1):
        params["match[]"] = substitute(m.group(1), values)
    return prom_api(port, f"label/{m.group(2)}/values", params)


def submit(env, grpc_port, *args):
    r = subprocess.run([LLMC, "submit", *args, "--server", f"127.0.0.1:{grpc_port}", "--json"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"llmc submit {' '.join(args)}: {r.stdout}{r.stderr}"
    return json.loads(r.stdout)["id"]


def job_state(env, grpc_port, job_id):
    r = subprocess.run([LLMC, "get", job_id, "--server", f"127.0.0.1:{grpc_port}", "--json"], env=env,
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)["state"] if r.returncode == 0 else None


def under_ci():
    """As client/web/tests/run_browser_test.sh reads it: CI set to anything but "", "false" or "0"."""
    return os.environ.get("CI", "") not in ("", "false", "0")


def main():
    prometheus = shutil.which("prometheus")
    if not prometheus:
        print("FAILED: prometheus is not installed (scripts/setup.sh installs Debian's prometheus)")
        return 1
    if not os.access(LLMC, os.X_OK):
        print(f"FAILED: {LLMC} is not built (set LLMC_BIN)")
        return 1
    missing = [what for what, ok in ((f"the fixture model {FIXTURE}", os.path.isdir(FIXTURE)),
                                     (f"the calibration text {CALIBRATION}", os.path.isfile(CALIBRATION))) if not ok]
    if missing:
        where = "they come with ../shared beside the checkout, or set LLMC_SHARED_DIR"
        if under_ci():
            print(f"FAILED: missing {' and '.join(missing)} ({where}); CI is set, so this is an error, not a skip")
            return 1
        print(f"SKIPPED: missing {' and '.join(missing)} ({where})")
        return 77
    tmp = tempfile.mkdtemp(prefix="llmc-dash-")
    serve = prom = None
    serve_log = open(os.path.join(tmp, "serve.log"), "wb")
    prom_log = open(os.path.join(tmp, "prometheus.log"), "wb")
    ok = False
    try:
        t0 = time.monotonic()
        start = time.time() - 5
        data = os.path.join(tmp, "data")
        serve = subprocess.Popen([LLMC, "serve", "--data-dir", data, "--port", "0", "--http-port", "0", "--workers",
                                  "2", "--threads", "1", "--no-cwd-root", "--allowed-root", tmp,
                                  "--allowed-input-root", SHARED],
                                 stdout=serve_log, stderr=subprocess.STDOUT, cwd=tmp)
        ready = os.path.join(data, "serve.ready")
        grpc_port, http_port = wait_for("llmc serve's ready file",
                                        lambda: os.path.exists(ready) and len(open(ready).read().split()) == 2 and
                                        open(ready).read().split(), 30)
        instance = f"127.0.0.1:{http_port}"
        prom_port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: llmc
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ['{instance}']
""")
        prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/tsdb",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                stdout=prom_log, stderr=subprocess.STDOUT)
        with open(os.path.join(data, "admin.token")) as f:
            env = dict(os.environ, LLMC_TOKEN=f.read().strip())
        # Both workers registered (the gang needs two).
        wait_for("two idle workers", lambda: 'llmc_workers{state="IDLE"} 2\n' in http_get(f"http://{instance}/metrics"),
                 30)
        # Prometheus scrapes the coordinator before the first job (the running jobs' series must be scraped).
        wait_for("up == 1 in Prometheus",
                 lambda: any(s["value"][1] == "1" for s in query(prom_port, f'up{{instance="{instance}"}}')), 45)
        print(f"llmc serve: gRPC {grpc_port}, HTTP {http_port}, 2 workers; prometheus on 127.0.0.1:{prom_port}")

        # A job that fails first (its failure counters then have several scrapes), then the gang job, then RTN.
        broken = os.path.join(tmp, "no-weights")
        os.makedirs(broken)
        shutil.copy(os.path.join(FIXTURE, "config.json"), broken)
        bad = submit(env, grpc_port, broken, os.path.join(tmp, "out-bad"), "--scheme", "W4A16")
        gang = submit(env, grpc_port, FIXTURE, os.path.join(tmp, "out-gptq"), "--scheme", "W4A16", "--algorithm",
                      "gptq", "--dataset", CALIBRATION, "--num-samples", "4", "--seq-len", "64", "--gpus", "2")
        wait_for(f"{bad} to fail", lambda: job_state(env, grpc_port, bad) == "FAILED", 60)
        wait_for(f"{gang} to succeed", lambda: job_state(env, grpc_port, gang) == "SUCCEEDED", 120)
        rtn = submit(env, grpc_port, FIXTURE, os.path.join(tmp, "out-rtn"), "--scheme", "W4A16")
        wait_for(f"{rtn} to succeed", lambda: job_state(env, grpc_port, rtn) == "SUCCEEDED", 60)
        # An API error (NOT_FOUND) for the errors panel.
        r = subprocess.run([LLMC, "get", "job-0000000000000000", "--server", f"127.0.0.1:{grpc_port}"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, "llmc get of an unknown job succeeded"
        print(f"jobs: {gang} (GPTQ, 2 ranks) and {rtn} SUCCEEDED, {bad} FAILED after {time.monotonic() - t0:.1f} s")
        # Prometheus has the end of the run (two scrapes after the last job) before the queries.
        wait_for("the last job in Prometheus", lambda: query(
            prom_port, f'count_over_time(llmc_jobs{{instance="{instance}",state="SUCCEEDED"}}[1m]) and '
                       f'llmc_jobs{{instance="{instance}",state="SUCCEEDED"}} == 2'), 20)
        # ... and the API error in two scrapes at least (a rate over $__rate_interval needs two samples).
        wait_for("the API error in Prometheus", lambda: query(
            prom_port, f'count_over_time(llmc_rpc_requests_total{{instance="{instance}",code="NOT_FOUND"}}[1m]) >= 2'),
            30)
        time.sleep(2.5)
        end = time.time()

        problems = []
        # As Grafana writes them: a multi-value variable as a regex alternation of escaped values ("All" of
        # `instance` is every coordinator found; `worker` has allValue .*), a single value as it is.
        values = {"instance": "(" + re.escape(instance).replace("\\", "\\\\") + ")", "job_id": gang, "worker": ".*",
                  "__rate_interval": RATE_INTERVAL}
        names = sorted(f for f in os.listdir(DASHBOARDS) if f.endswith(".json"))
        panels = 0
        for name in names:
            with open(os.path.join(DASHBOARDS, name)) as f:
                d = json.load(f)
            expect = {"instance": instance, "job_id": gang, "worker": None}
            for v in d["templating"]["list"]:
                if v["type"] != "query":
                    continue
                got = label_values(prom_port, v["query"], start, end, values)
                want = expect.get(v["name"])
                if not got or (want and want not in got):
                    problems.append(f"{name}: variable {v['name']} ({v['query']}) lists {got}, not {want}")
            for p in d["panels"]:
                if p["type"] == "row":
                    continue
                panels += 1
                for t in p["targets"]:
                    expr = substitute(t["expr"], values)
                    where = f"{name}: panel \"{p['title']}\" {t['refId']}"
                    try:
                        result = prom_api(prom_port, "query_range",
                                          {"query": expr, "start": start, "end": end, "step": "1"})["result"]
                        if t.get("instant"):
                            prom_api(prom_port, "query", {"query": expr, "time": end})
                    except Exception as e:  # an error status (a parse error names the position)
                        problems.append(f"{where}: {e}")
                        continue
                    if not result:
                        problems.append(f"{where}: no data for {expr}")
        print(f"{panels} panels of {len(names)} dashboards: every query evaluated")

        # The alert rules evaluate against the real series.
        def alert_rules():
            return [r for g in prom_api(prom_port, "rules", {"type": "alert"})["groups"] for r in g["rules"]]
        wait_for("the alert rules to be evaluated",
                 lambda: all(not r.get("lastEvaluation", "0001").startswith("0001") for r in alert_rules()), 10)
        rules = alert_rules()
        for r in rules:
            if r.get("health") != "ok":
                problems.append(f"alert {r['name']}: {r.get('health')} {r.get('lastError')}")
        print(f"{len(rules)} alert rules evaluate")
        if problems:
            raise AssertionError("\n  " + "\n  ".join(problems))
        print(f"PASSED in {time.monotonic() - t0:.1f} s")
        ok = True
    except AssertionError as e:
        print(f"FAILED: {e}")
    finally:
        stop(prom)
        stop(serve)
        serve_log.close()
        prom_log.close()
        if not ok or os.environ.get("LLMC_TEST_SHOW_LOGS"):
            for name in ("serve.log", "prometheus.log"):
                with open(os.path.join(tmp, name), "rb") as f:
                    print(f"--- {name}\n{f.read().decode(errors='replace')[-20000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
