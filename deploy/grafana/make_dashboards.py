#!/usr/bin/env python3
"""Writes llmc's Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

    deploy/grafana/make_dashboards.py            # rewrite the JSON files
    deploy/grafana/make_dashboards.py --check    # exit 1 if a committed file differs from what this writes

Every panel reads the Prometheus data source chosen in the dashboard's `datasource` variable, says what it shows in
its description, and has a unit. The metrics are defined in docs/service.md ("Metrics"). The tests
(deploy/grafana/tests) type-check the files against @grafana/schema and evaluate every query against a real
Prometheus scraping a real `llmc serve`.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards")
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every query is limited to the coordinators chosen in the `instance` variable.
I = 'instance=~"$instance"'


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"refId": ref, "datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant}
    if fmt != "time_series":
        t["format"] = fmt
    return t


def field_config(unit, minimum=None, maximum=None, custom=None, decimals=None, thresholds=None):
    d = {"unit": unit, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        d["min"] = minimum
    if maximum is not None:
        d["max"] = maximum
    if decimals is not None:
        d["decimals"] = decimals
    if custom is not None:
        d["custom"] = custom
    if thresholds is not None:
        d["color"] = {"mode": "thresholds"}
        d["thresholds"] = {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in thresholds]}
    return {"defaults": d, "overrides": []}


def timeseries(title, desc, targets, unit, stack=False, minimum=0, maximum=None, bars=False):
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 20 if stack else 10,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": field_config(unit, minimum, maximum, custom),
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title, desc, targets, unit, thresholds=None, text_mode="auto", decimals=None):
    return {"type": "stat", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": field_config(unit, thresholds=thresholds, decimals=decimals),
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "orientation": "auto", "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                        "textMode": text_mode, "wideLayout": True, "showPercentChange": False,
                        "percentChangeColorMode": "standard"}}


def table(title, desc, targets, unit="short", exclude=()):
    p = {"type": "table", "title": title, "description": desc, "datasource": DS, "targets": targets,
         "fieldConfig": field_config(unit),
         "options": {"showHeader": True, "cellHeight": "sm", "frameIndex": 0},
         "transformations": [{"id": "organize", "options": {
             "excludeByName": {n: True for n in ("Time", "__name__", "job", "Value") + tuple(exclude)}}}]}
    return p


def layout(rows):
    """Places rows of panels (each row: [(panel, width), ...], 24 columns wide) and numbers them."""
    panels, y, pid = [], 0, 1
    for row in rows:
        if isinstance(row, str):  # a row header
            panels.append({"type": "row", "title": row, "id": pid, "collapsed": False, "panels": [],
                           "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
            pid, y = pid + 1, y + 1
            continue
        x = 0
        height = max((4 if p["type"] == "stat" else 8) for p, _ in row)
        for p, w in row:
            p = dict(p, id=pid, gridPos={"x": x, "y": y, "w": w, "h": height})
            panels.append(p)
            pid, x = pid + 1, x + w
        y += height
    return panels


def variables(extra=()):
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "description": "The Prometheus that scrapes the llmc coordinators", "hide": 0, "refresh": 1},
        {"name": "instance", "label": "Coordinator", "type": "query", "datasource": DS,
         "description": "The coordinators (scrape targets) to show",
         "query": "label_values(llmc_queue_depth, instance)",
         # No allValue: "All" is the alternation of the coordinators found, so up{} selects no other target.
         "refresh": 2, "includeAll": True, "multi": True, "sort": 1, "hide": 0,
         "current": {"text": "All", "value": "$__all"}},
        *extra]}


def dashboard(uid, title, desc, rows, extra_vars=(), time_from="now-6h"):
    return {"uid": uid, "title": title, "description": desc, "tags": ["llmc"], "editable": True,
            "graphTooltip": 1, "schemaVersion": 41, "version": 1, "refresh": "30s", "timezone": "browser",
            "time": {"from": time_from, "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
            "annotations": {"list": []},
            "links": [{"title": "llmc dashboards", "type": "dashboards", "tags": ["llmc"], "asDropdown": True,
                       "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "templating": variables(extra_vars), "panels": layout(rows)}


RATE = "$__rate_interval"

FLEET = dashboard("llmc-fleet", "llmc / Fleet overview",
                  "The llmc service at a glance: coordinator, workers, queue, throughput, failures and storage.", [
    [(stat("Coordinator up", "1 while Prometheus scrapes the coordinator's /metrics (up), 0 when the scrape fails.",
           [target(f'min(up{{{I}}})', "up")], "bool", thresholds=[(None, "red"), (1, "green")]), 4),
     (stat("Live workers", "Workers registered and not LOST (IDLE + BUSY).",
           [target(f'sum(llmc_workers{{{I},state!="LOST"}})', "workers")], "short",
           thresholds=[(None, "red"), (1, "green")]), 4),
     (stat("Busy workers", "Workers running a job (a rank of a gang job counts once per worker).",
           [target(f'sum(llmc_workers{{{I},state="BUSY"}})', "busy")], "short"), 4),
     (stat("Queue depth", "Jobs QUEUED or RETRYING (waiting for workers).",
           [target(f'sum(llmc_queue_depth{{{I}}})', "queued")], "short"), 4),
     (stat("Oldest queued job", "Age of the oldest job waiting for workers (0 when none waits).",
           [target(f'max(llmc_queue_oldest_job_age_seconds{{{I}}})', "age")], "s",
           thresholds=[(None, "green"), (600, "orange"), (3600, "red")]), 4),
     (stat("Job failure ratio (1h)", "FAILED jobs / jobs that ended, over the last hour (0 when none ended).",
           [target(f'sum(increase(llmc_jobs_finished_total{{{I},state="FAILED"}}[1h])) / '
                   f'clamp_min(sum(increase(llmc_jobs_finished_total{{{I}}}[1h])), 1)', "failed")],
           "percentunit", thresholds=[(None, "green"), (0.1, "orange"), (0.5, "red")]), 4)],
    "Jobs",
    [(timeseries("Jobs by state", "Jobs in the job store by state (llmc_jobs).",
                 [target(f'sum by (state) (llmc_jobs{{{I},state=~"QUEUED|RUNNING|RETRYING"}})', "{{state}}")],
                 "short", stack=True), 8),
     (timeseries("Jobs ended per hour, by final state", "Jobs that reached SUCCEEDED, FAILED or CANCELLED, as a "
                 "rate per hour.",
                 [target(f'sum by (state) (rate(llmc_jobs_finished_total{{{I}}}[{RATE}])) * 3600', "{{state}}")],
                 "short", stack=True), 8),
     (timeseries("Failures by reason (1h)", "FAILED jobs over the last hour by reason: the canonical code of the "
                 "worker's error (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...) or ATTEMPTS_EXHAUSTED (workers kept "
                 "being lost). See docs/runbooks.md.",
                 [target(f'sum by (reason) (increase(llmc_job_failures_total{{{I}}}[1h]))', "{{reason}}")],
                 "short", stack=True), 8)],
    "Throughput",
    [(timeseries("Model bytes read and checkpoint bytes written", "Tensor bytes read and safetensors bytes written "
                 "by jobs that succeeded (counted when each job ends), per second.",
                 [target(f'sum(rate(llmc_input_bytes_read_total{{{I}}}[{RATE}]))', "read", "A"),
                  target(f'sum(rate(llmc_output_bytes_written_total{{{I}}}[{RATE}]))', "written", "B")],
                 "Bps"), 8),
     (timeseries("Calibration tokens per second (1h)", "Calibration tokens of succeeded calibrated jobs divided by "
                 "the seconds their pipelines ran, over the last hour, by algorithm: the pipeline's throughput.",
                 [target(f'sum by (algorithm) (increase(llmc_calibration_tokens_total{{{I}}}[1h])) / '
                         f'sum by (algorithm) (increase(llmc_calibration_seconds_total{{{I}}}[1h]))',
                         "{{algorithm}}")], "short"), 8),
     (timeseries("Decoder blocks made durable", "BlockDone messages accepted from workers, per second.",
                 [target(f'sum(rate(llmc_blocks_finished_total{{{I}}}[{RATE}]))', "blocks/s")], "short"), 8)],
    "Storage and API",
    [(timeseries("Object storage traffic", "Bytes the workers uploaded to and downloaded from s3:// stores, per "
                 "second (from their heartbeats).",
                 [target(f'sum(rate(llmc_storage_uploaded_bytes_total{{{I}}}[{RATE}]))', "uploaded", "A"),
                  target(f'sum(rate(llmc_storage_downloaded_bytes_total{{{I}}}[{RATE}]))', "downloaded", "B")],
                 "Bps"), 8),
     (timeseries("Object storage retries and failures", "S3 requests the workers retried, and requests that failed "
                 "for good (NOT_FOUND answers aside), per second.",
                 [target(f'sum(rate(llmc_storage_retries_total{{{I}}}[{RATE}]))', "retries", "A"),
                  target(f'sum(rate(llmc_storage_request_failures_total{{{I}}}[{RATE}]))', "failures", "B")],
                 "reqps"), 8),
     (timeseries("API errors by method and code", "gRPC calls that ended with a status other than OK or CANCELLED, "
                 "per second.",
                 [target(f'sum by (method, code) (rate(llmc_rpc_requests_total{{{I},code!~"OK|CANCELLED"}}[{RATE}]))',
                         "{{method}} {{code}}")], "reqps"), 8)],
    [(timeseries("HTTP connections", "HTTP connections open on the coordinator (console pages and job streams, "
                 "scrapes, JSON API calls), and connections refused per second for being over "
                 "--http-max-connections-per-client or --http-max-connections.",
                 [target(f'sum(llmc_http_connections{{{I}}})', "open", "A"),
                  target(f'sum by (reason) (rate(llmc_http_connections_refused_total{{{I}}}[{RATE}]))',
                         "refused ({{reason}}) /s", "B")], "short"), 12),
     (timeseries("HTTP requests by route and status", "Requests the coordinator's HTTP side answered, per second.",
                 [target(f'sum by (route, status) (rate(llmc_http_requests_total{{{I}}}[{RATE}]))',
                         "{{route}} {{status}}")], "reqps"), 12)],
])

QUEUE = dashboard("llmc-queue", "llmc / Queue and jobs",
                  "What waits, how long jobs wait and run, by algorithm, scheme and tenant.", [
    [(timeseries("Queue depth", "Jobs QUEUED or RETRYING.",
                 [target(f'sum(llmc_queue_depth{{{I}}})', "queued")], "short"), 8),
     (timeseries("Oldest queued job", "Age of the oldest job waiting for workers (0 when none waits).",
                 [target(f'max(llmc_queue_oldest_job_age_seconds{{{I}}})', "oldest")], "s"), 8),
     (timeseries("Jobs created and retried per hour", "Jobs created (idempotent repeats not counted) and attempts "
                 "re-queued (a worker lost, a gang broken, a coordinator restart), as rates per hour.",
                 [target(f'sum(rate(llmc_jobs_created_total{{{I}}}[{RATE}])) * 3600', "created", "A"),
                  target(f'sum(rate(llmc_job_retries_total{{{I}}}[{RATE}])) * 3600', "retried", "B")],
                 "short"), 8)],
    "Wait and run times",
    [(timeseries("Queue wait p50 / p90 (1h)", "Seconds from creation to first start of the jobs that started in "
                 "the last hour, by algorithm and scheme (histogram quantiles: bucket resolution).",
                 [target('histogram_quantile(0.5, sum by (le, algorithm, scheme) '
                         f'(increase(llmc_job_queue_wait_seconds_bucket{{{I}}}[1h])))', "p50 {{algorithm}} {{scheme}}", "A"),
                  target('histogram_quantile(0.9, sum by (le, algorithm, scheme) '
                         f'(increase(llmc_job_queue_wait_seconds_bucket{{{I}}}[1h])))', "p90 {{algorithm}} {{scheme}}", "B")],
                 "s"), 12),
     (timeseries("Job duration p50 / p90 of succeeded jobs (1h)", "Seconds from first start to the end of jobs "
                 "that SUCCEEDED in the last hour, by algorithm and scheme (histogram quantiles).",
                 [target('histogram_quantile(0.5, sum by (le, algorithm, scheme) '
                         f'(increase(llmc_job_duration_seconds_bucket{{{I},state="SUCCEEDED"}}[1h])))',
                         "p50 {{algorithm}} {{scheme}}", "A"),
                  target('histogram_quantile(0.9, sum by (le, algorithm, scheme) '
                         f'(increase(llmc_job_duration_seconds_bucket{{{I},state="SUCCEEDED"}}[1h])))',
                         "p90 {{algorithm}} {{scheme}}", "B")], "s"), 12)],
    [(timeseries("Jobs started per hour by algorithm and scheme", "First starts per hour (the queue-wait "
                 "histogram's count).",
                 [target(f'sum by (algorithm, scheme) (rate(llmc_job_queue_wait_seconds_count{{{I}}}[{RATE}])) * 3600',
                         "{{algorithm}} {{scheme}}")], "short", stack=True), 12),
     (timeseries("Mean job duration by final state (1h)", "Mean seconds from first start to the end of the jobs "
                 "that ended in the last hour.",
                 [target(f'sum by (state) (increase(llmc_job_duration_seconds_sum{{{I}}}[1h])) / '
                         f'sum by (state) (increase(llmc_job_duration_seconds_count{{{I}}}[1h]))', "{{state}}")],
                 "s"), 12)],
    "Tenants",
    [(timeseries("Active jobs by tenant", "QUEUED, RUNNING and RETRYING jobs of each tenant.",
                 [target(f'sum by (tenant, state) (llmc_tenant_jobs{{{I},state=~"QUEUED|RUNNING|RETRYING"}})',
                         "{{tenant}} {{state}}")], "short", stack=True), 12),
     (table("Jobs by tenant and state", "Every job in the store, counted by tenant and state (now).",
            [target(f'sum by (tenant, state) (llmc_tenant_jobs{{{I}}})', "", instant=True, fmt="table")]), 12)],
    "Running jobs",
    [(table("Running jobs", "Jobs RUNNING or RETRYING now (queued jobs are counted above, not listed), with their "
            "progress (0 to 1). Open one in the llmc / Job dashboard.",
            [target(f'max by (job_id, tenant, state, algorithm, scheme) (llmc_job_info{{{I}}} * on (job_id, instance) '
                    f'group_left llmc_job_progress_ratio{{{I}}})', "", instant=True, fmt="table")],
            "percentunit"), 24)],
])

JOB = dashboard("llmc-job", "llmc / Job",
                "One job while it runs (RUNNING, or RETRYING after a lost attempt): state, progress, attempts and its workers. "
                "The per-job series exist only while the job is active; the finished job's record is in the API.", [
    [(stat("State", "The job's state (the llmc_job_info label) at the end of the time range.",
           [target(f'max by (state) (llmc_job_info{{{I},job_id="$job_id"}})', "{{state}}")], "short",
           text_mode="name"), 6),
     (stat("Method", "Algorithm and scheme of the job ('recipe' when it gave recipe text).",
           [target(f'max by (algorithm, scheme) (llmc_job_info{{{I},job_id="$job_id"}})', "{{algorithm}} {{scheme}}")],
           "short", text_mode="name"), 6),
     (stat("Attempts", "Attempts started so far (a lost worker or a broken gang starts another).",
           [target(f'max(llmc_job_attempts{{{I},job_id="$job_id"}})', "attempts")], "short",
           thresholds=[(None, "green"), (2, "orange")]), 6),
     (stat("Progress", "Share of the job done, as its rank 0 reports it.",
           [target(f'max(llmc_job_progress_ratio{{{I},job_id="$job_id"}})', "progress")], "percentunit"), 6)],
    [(timeseries("Progress", "Share of the job done over time.",
                 [target(f'max(llmc_job_progress_ratio{{{I},job_id="$job_id"}})', "progress")], "percentunit",
                 maximum=1), 12),
     (timeseries("Decoder blocks", "Blocks durable in the staging output (the resume point) and the model's blocks "
                 "(0 for data-free jobs).",
                 [target(f'max(llmc_job_blocks_done{{{I},job_id="$job_id"}})', "durable", "A"),
                  target(f'max(llmc_job_blocks_total{{{I},job_id="$job_id"}})', "total", "B")], "short"), 12)],
    "Workers of the job",
    [(table("Ranks", "The workers running the job and their ranks (rank 0 writes the output).",
            [target(f'max by (worker, rank) (llmc_worker_job{{{I},job_id="$job_id"}})', "", instant=True,
                    fmt="table")]), 8),
     (timeseries("Device memory used by the job's workers", "Memory in use on each rank's device (the GPU, or the "
                 "host for cpu workers), device-wide.",
                 [target(f'max by (worker, rank) (llmc_worker_device_memory_used_bytes{{{I}}} * on (worker, instance) '
                         f'group_left (rank) llmc_worker_job{{{I},job_id="$job_id"}})', "rank {{rank}} ({{worker}})")],
                 "bytes"), 8),
     (timeseries("Device utilization of the job's workers", "Busy share of each rank's device over its heartbeat "
                 "period.",
                 [target(f'max by (worker, rank) (llmc_worker_device_utilization_ratio{{{I}}} * on (worker, instance) '
                         f'group_left (rank) llmc_worker_job{{{I},job_id="$job_id"}})', "rank {{rank}} ({{worker}})")],
                 "percentunit", maximum=1), 8)],
], extra_vars=[{"name": "job_id", "label": "Job", "type": "query", "datasource": DS,
                "description": "A job that ran in the time range (its id, job-...)",
                "query": 'label_values(llmc_job_info{instance=~"$instance"}, job_id)',
                "refresh": 2, "includeAll": False, "multi": False, "sort": 2, "hide": 0}])

WORKERS = dashboard("llmc-workers", "llmc / Workers and GPUs",
                    "Every worker: state, device memory and utilization, gangs and their communication.", [
    [(timeseries("Workers by state", "Workers known to the coordinator by state (LOST ones are forgotten after 10 "
                 "minutes).",
                 [target(f'sum by (state) (llmc_workers{{{I}}})', "{{state}}")], "short", stack=True), 12),
     (table("Workers", "Every known worker with its host, device and state (now).",
            [target(f'max by (worker, host, device, state) (llmc_worker_info{{{I},worker=~"$worker"}})', "",
                    instant=True, fmt="table")]), 12)],
    "Devices",
    [(timeseries("Device memory used", "Memory in use on each worker's device: the GPU through NVML (cuda workers) "
                 "or the host (cpu workers), device-wide.",
                 [target(f'max by (worker) (llmc_worker_device_memory_used_bytes{{{I},worker=~"$worker"}})',
                         "{{worker}}")], "bytes"), 8),
     (timeseries("Device memory used (share)", "Memory in use / the device's memory, per worker.",
                 [target(f'max by (worker) (llmc_worker_device_memory_used_bytes{{{I},worker=~"$worker"}} / '
                         f'llmc_worker_device_memory_total_bytes{{{I},worker=~"$worker"}})', "{{worker}}")],
                 "percentunit", maximum=1), 8),
     (timeseries("Device utilization", "Busy share of each worker's device over its last heartbeat period (GPU: "
                 "time a kernel ran; cpu: all CPUs of the host).",
                 [target(f'max by (worker) (llmc_worker_device_utilization_ratio{{{I},worker=~"$worker"}})',
                         "{{worker}}")], "percentunit", maximum=1), 8)],
    "Gangs and communication",
    [(timeseries("Workers running gang ranks", "Busy workers running a rank of a job on several workers.",
                 [target(f'sum(llmc_gang_workers{{{I}}})', "gang workers")], "short"), 8),
     (timeseries("Time in collectives per hour", "Seconds the ranks of succeeded multi-worker jobs spent in "
                 "all-reduces and broadcasts (Gloo or NCCL), all ranks summed, as a rate per hour.",
                 [target(f'sum(rate(llmc_communication_seconds_total{{{I}}}[{RATE}])) * 3600', "seconds/h")],
                 "s"), 8),
     (timeseries("Bytes through collectives", "Bytes the ranks of succeeded multi-worker jobs passed to "
                 "collectives, per second.",
                 [target(f'sum(rate(llmc_communication_bytes_total{{{I}}}[{RATE}]))', "bytes/s")], "Bps"), 8)],
], extra_vars=[{"name": "worker", "label": "Worker", "type": "query", "datasource": DS,
                "description": "Workers to show",
                "query": 'label_values(llmc_worker_info{instance=~"$instance"}, worker)',
                "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1, "hide": 0,
                "current": {"text": "All", "value": "$__all"}}])

DASHBOARDS = {"llmc-fleet.json": FLEET, "llmc-queue.json": QUEUE, "llmc-job.json": JOB, "llmc-workers.json": WORKERS}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, d in DASHBOARDS.items():
        text = json.dumps(d, indent=2) + "\n"
        path = os.path.join(OUT, name)
        if check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(name)
        else:
            os.makedirs(OUT, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print(f"make_dashboards: {', '.join(stale)} differ from what deploy/grafana/make_dashboards.py writes; "
              "run it and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
