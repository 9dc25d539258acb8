#!/usr/bin/env python3
"""A real Prometheus scrapes a real `llmc serve` (ctest: PrometheusScrapeTest, label integration).

Starts `llmc serve --workers 1 --metrics-auth` on free ports with a temporary data directory and a `prometheus`
process (temporary config scraping the coordinator's /metrics every second with a viewer token of its own, sent
from a file as docs/service.md shows: `authorization: {credentials_file: ...}`; temporary TSDB, its own free port).
/metrics must answer 401 without a token or with an unknown one, 403 to the worker token and 200 to the viewer
token. Runs a data-free job with `llmc submit --watch`, then asks Prometheus's HTTP API until the target is up
(up == 1) and llmc_jobs{state="SUCCEEDED"} is 1, evaluates the PromQL queries docs/service.md suggests for
Grafana, and runs `promtool check metrics` on the scraped text. (DeployDashboardQueriesTest scrapes without
--metrics-auth.)

Binaries: $LLMC_BIN (llmc; llmc-server and llmc-worker beside it) and $LLMC_MAKE_MODEL, else <repo>/build/bin.
Exits 77 (ctest: skipped) when prometheus or promtool is not installed. $LLMC_TEST_SHOW_LOGS=1 prints the logs.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir))
LLMC = os.environ.get("LLMC_BIN") or os.path.join(REPO, "build", "bin", "llmc")
MAKE_MODEL = os.environ.get("LLMC_MAKE_MODEL") or os.path.join(REPO, "build", "bin", "llmc-make-model")

# The Grafana panel and alert queries of docs/service.md ("Monitoring with Prometheus and Grafana"): each must
# evaluate.
PANEL_QUERIES = [
    'sum by (state) (llmc_jobs)',
    'llmc_queue_depth',
    'sum by (state) (llmc_workers)',
    'sum by (state) (rate(llmc_jobs_finished_total[5m]))',
    'histogram_quantile(0.99, sum by (le, method) '
    '(rate(llmc_rpc_duration_seconds_bucket{method!~"WatchJob|WorkerConnect"}[5m])))',
    'sum by (method, code) (rate(llmc_rpc_requests_total{code!~"OK|CANCELLED"}[5m]))',
    'histogram_quantile(0.5, sum by (le) (rate(llmc_job_duration_seconds_bucket{state="SUCCEEDED"}[1h])))',
    'up{job="llmc"} == 0',
    'llmc_queue_depth > 0 and on() sum(llmc_workers{state="IDLE"}) > 0',
    'increase(llmc_job_retries_total[1h]) > 3',
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def http_status(url, token=None):
    """The HTTP status of a GET (an error status too)."""
    try:
        http_get(url, token=token)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


def query(prom_port, q):
    """Prometheus's instant query API: the `data.result` list (raises on an error status)."""
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    body = json.loads(http_get(url))
    if body.get("status") != "success":
        raise AssertionError(f"query {q}: {body}")
    return body["data"]["result"]


def wait_for(what, fn, timeout):
    """Calls fn() until it returns a true value or `timeout` seconds pass; returns the value or raises."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            v = fn()
            if v:
                return v
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def stop(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        print("SKIPPED: prometheus and promtool are not installed (apt-get install prometheus)")
        return 77
    for b in (LLMC, MAKE_MODEL):
        if not os.access(b, os.X_OK):
            print(f"FAILED: {b} is not built (set LLMC_BIN and LLMC_MAKE_MODEL)")
            return 1
    tmp = tempfile.mkdtemp(prefix="llmc-prom-")
    serve = prom = None
    serve_log = open(os.path.join(tmp, "serve.log"), "wb")
    prom_log = open(os.path.join(tmp, "prometheus.log"), "wb")
    ok = False
    try:
        t0 = time.monotonic()
        model = os.path.join(tmp, "model")
        subprocess.run([MAKE_MODEL, model, "--shape", "tiny"], check=True)
        data = os.path.join(tmp, "data")
        serve = subprocess.Popen([LLMC, "serve", "--data-dir", data, "--port", "0", "--http-port", "0", "--workers",
                                  "1", "--threads", "2", "--no-cwd-root", "--allowed-root", tmp, "--metrics-auth"],
                                 stdout=serve_log, stderr=subprocess.STDOUT, cwd=tmp)
        ready = os.path.join(data, "serve.ready")
        grpc_port, http_port = wait_for("llmc serve's ready file",
                                        lambda: os.path.exists(ready) and len(open(ready).read().split()) == 2 and
                                        open(ready).read().split(), 30)
        print(f"llmc serve: gRPC {grpc_port}, HTTP {http_port}")

        # --metrics-auth: Prometheus gets a viewer token of its own tenant, in a file; other callers are refused.
        server = os.path.join(os.path.dirname(LLMC), "llmc-server")
        scrape_token = subprocess.run([server, "token", "create", "--data-dir", data, "--tenant", "monitoring",
                                       "--role", "viewer"], check=True, capture_output=True, text=True).stdout.strip()
        token_file = os.path.join(tmp, "llmc.token")
        with open(token_file, "w") as f:
            f.write(scrape_token + "\n")
        with open(os.path.join(data, "worker.token")) as f:
            worker_token = f.read().strip()
        metrics_url = f"http://127.0.0.1:{http_port}/metrics"
        statuses = {"no token": http_status(metrics_url), "an unknown token": http_status(metrics_url, "llmc_" + "0" * 64),
                    "the worker token": http_status(metrics_url, worker_token),
                    "a viewer token": http_status(metrics_url, scrape_token),
                    "/healthz without a token": http_status(f"http://127.0.0.1:{http_port}/healthz")}
        want = {"no token": 401, "an unknown token": 401, "the worker token": 403, "a viewer token": 200,
                "/healthz without a token": 200}
        assert statuses == want, f"/metrics with --metrics-auth answered {statuses}, expected {want}"
        print("--metrics-auth: /metrics 401 without a token or with an unknown one, 403 to a worker token, "
              "200 to a viewer token")

        prom_port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: llmc
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:{http_port}']
    authorization:
      type: Bearer
      credentials_file: {token_file}
""")
        subprocess.run([promtool, "check", "config", config], check=True, stdout=subprocess.DEVNULL)
        prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/tsdb",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                stdout=prom_log, stderr=subprocess.STDOUT)
        print(f"prometheus on 127.0.0.1:{prom_port}")

        # A job runs to SUCCEEDED.
        with open(os.path.join(data, "admin.token")) as f:
            token = f.read().strip()
        env = dict(os.environ, LLMC_TOKEN=token)
        r = subprocess.run([LLMC, "submit", model, os.path.join(tmp, "out"), "--scheme", "W4A16", "--server",
                            f"127.0.0.1:{grpc_port}", "--watch", "--no-progress"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"llmc submit --watch failed ({r.returncode}): {r.stdout}{r.stderr}"
        print("job SUCCEEDED")

        # Prometheus scrapes the target and stores the metrics.
        wait_for("up{job=\"llmc\"} == 1", lambda: any(s["value"][1] == "1" for s in query(prom_port, 'up{job="llmc"}')),
                 45)
        targets = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/targets"))["data"]["activeTargets"]
        assert len(targets) == 1 and targets[0]["health"] == "up" and not targets[0]["lastError"], targets
        print("target up")
        res = wait_for('llmc_jobs{state="SUCCEEDED"} == 1',
                       lambda: [s for s in query(prom_port, 'llmc_jobs{state="SUCCEEDED"}') if s["value"][1] == "1"],
                       30)
        assert res[0]["metric"]["job"] == "llmc", res
        finished = query(prom_port, 'llmc_jobs_finished_total{state="SUCCEEDED"}')
        assert finished and finished[0]["value"][1] == "1", finished
        creates = query(prom_port, 'llmc_rpc_requests_total{method="CreateJob",code="OK"}')
        assert creates and creates[0]["value"][1] == "1", creates
        print('llmc_jobs{state="SUCCEEDED"} = 1 in Prometheus')
        for q in PANEL_QUERIES:
            query(prom_port, q)  # raises unless the query evaluates
        print(f"{len(PANEL_QUERIES)} panel and alert queries evaluate")
        # The latency panel has a value once two scrapes saw CreateJob (rate needs two samples).
        wait_for("the p99 latency panel", lambda: query(prom_port, PANEL_QUERIES[4]), 15)

        # The scraped text passes promtool's linter.
        text = http_get(metrics_url, token=scrape_token)
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, f"promtool check metrics: {lint.stdout}{lint.stderr}"
        print(f"promtool check metrics: ok ({len(text.splitlines())} lines)")
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
                    print(f"--- {name}\n{f.read().decode(errors='replace')}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
