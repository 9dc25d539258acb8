#!/usr/bin/env python3
"""Submit a compression job to an llmc coordinator, print its progress, and exit 0 only if it SUCCEEDED.

    export LLMC_SERVER=127.0.0.1:7443 LLMC_TOKEN=$(cat llmc-data/admin.token)
    python3 client/python/examples/submit_and_watch.py ./model ./model-w4a16 --scheme W4A16
    python3 client/python/examples/submit_and_watch.py ./model ./out --scheme W4A16 --algorithm gptq \
        --dataset calib.txt --num-samples 64
    python3 client/python/examples/submit_and_watch.py ./model ./out --recipe recipe.yaml --label team=nlp

Exit status: 0 the job SUCCEEDED; 1 it ended FAILED or CANCELLED; 2 the request was refused or the coordinator
could not be reached (the message says why).
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import grpc  # noqa: E402

import llmc_client  # noqa: E402
from llmc_client import pb  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="Hugging Face model directory (path or file:// URI)")
    p.add_argument("output", help="where the compressed checkpoint goes (must not exist)")
    m = p.add_mutually_exclusive_group(required=True)
    m.add_argument("--scheme", help="preset scheme, e.g. W4A16, FP8_DYNAMIC, NVFP4 (`llmc schemes`)")
    m.add_argument("--recipe", help="llm-compressor recipe YAML file")
    p.add_argument("--algorithm", default="", help="with --scheme: rtn (default), gptq, awq, smoothquant+gptq, ...")
    p.add_argument("--ignore", action="append", default=[], help="module to leave unquantized (repeatable)")
    p.add_argument("--dataset", help="calibration text or JSONL file (calibrated algorithms)")
    p.add_argument("--num-samples", type=int, default=0)
    p.add_argument("--seq-len", type=int, default=0)
    p.add_argument("--eval-text", help="text file for a perplexity report")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--request-id", help="idempotency key (default: a random UUID)")
    p.add_argument("--server", help="coordinator address (default $LLMC_SERVER, else 127.0.0.1:7443)")
    p.add_argument("--token", help="bearer token (default $LLMC_TOKEN)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    a = p.parse_args(argv)
    if a.algorithm and not a.scheme:
        p.error("--algorithm goes with --scheme (a recipe names its own algorithm)")
    labels = {}
    for l in a.label:
        k, eq, v = l.partition("=")
        if not eq or not k:
            p.error(f"--label {l}: give KEY=VALUE")
        labels[k] = v
    a.labels = labels
    return a


def progress_line(e):
    pr = e.progress
    s = f"{pr.fraction * 100:5.1f}%  {pr.stage}"
    if pr.blocks_total:
        s += f"  blocks {pr.blocks_done}/{pr.blocks_total}"
    if pr.modules_total:
        s += f"  modules {pr.modules_done}/{pr.modules_total}"
    return s


def main(argv=None):
    a = parse_args(argv)
    recipe = None
    if a.recipe:
        try:
            with open(a.recipe) as f:
                recipe = f.read()
        except OSError as e:
            print(f"error: --recipe {a.recipe}: {e.strerror}", file=sys.stderr)
            return 2
    tty = sys.stderr.isatty()
    try:
        with llmc_client.Client(server=a.server, token=a.token) as c:
            job = c.submit(a.model, a.output, request_id=a.request_id, scheme=a.scheme, algorithm=a.algorithm,
                           recipe_yaml=recipe, ignore=a.ignore, dataset=a.dataset, num_samples=a.num_samples,
                           seq_len=a.seq_len, eval_text=a.eval_text, gpus=a.gpus, priority=a.priority,
                           labels=a.labels)
            print(f"job {job.id} {llmc_client.state_name(job.state)} on {c.server}", file=sys.stderr)

            def on_event(e):
                t = datetime.datetime.fromtimestamp(e.time_ms / 1000).strftime("%H:%M:%S")
                if e.type in ("progress", "block"):
                    if tty:
                        print(f"\r{t}  {progress_line(e)}", end="", file=sys.stderr, flush=True)
                    elif e.type == "block":
                        print(f"{t}  {progress_line(e)}  ({e.message})", file=sys.stderr)
                    return
                if tty:
                    print(file=sys.stderr)
                print(f"{t}  {llmc_client.state_name(e.state):<9}  {e.message}", file=sys.stderr)

            job = c.wait(job.id, on_event=on_event, timeout=a.timeout)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    state = llmc_client.state_name(job.state)
    print(json.dumps({"id": job.id, "state": state, "output": job.spec.output_uri, "error": job.error,
                      "summary": json.loads(job.summary_json) if job.summary_json else None}))
    if job.state != pb.SUCCEEDED:
        print(f"job {job.id} {state}: {job.error or job.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
