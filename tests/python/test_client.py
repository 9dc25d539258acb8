#!/usr/bin/env python3
"""The Python client against a real `llmc serve` over loopback (ctest: PythonClientTest, label integration).

Binaries: $LLMC_BIN (the `llmc` binary; llmc-server and llmc-worker beside it) and $LLMC_MAKE_MODEL
(llmc-make-model), else <repo>/build/bin. Exits 77 (ctest: skipped) when python3-grpcio or python3-grpc-tools is
missing. $LLMC_TEST_SHOW_LOGS=1 prints the service log.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir))
CLIENT_DIR = os.path.join(REPO, "client", "python")  # the client under test and its examples

try:
    import grpc
    import grpc_tools  # noqa: F401
except ImportError as e:
    print(f"SKIPPED: {e} (install python3-grpcio and python3-grpc-tools; run with Debian's /usr/bin/python3)")
    sys.exit(77)

sys.path.insert(0, CLIENT_DIR)
import llmc_client  # noqa: E402
from llmc_client import pb  # noqa: E402


def _bin(env, name):
    p = os.environ.get(env)
    if p:
        return p
    return os.path.join(REPO, "build", "bin", name)


LLMC = _bin("LLMC_BIN", "llmc")
MAKE_MODEL = _bin("LLMC_MAKE_MODEL", "llmc-make-model")


def _children(pid):
    """Direct child pids of `pid` (Linux /proc)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for b in (LLMC, MAKE_MODEL, os.path.join(os.path.dirname(LLMC), "llmc-server"),
                  os.path.join(os.path.dirname(LLMC), "llmc-worker")):
            if not os.access(b, os.X_OK):
                raise unittest.SkipTest(f"{b} is not built (set LLMC_BIN and LLMC_MAKE_MODEL)")
        cls.tmp = tempfile.mkdtemp(prefix="llmc-pyclient-")
        cls.model = os.path.join(cls.tmp, "model")
        subprocess.run([MAKE_MODEL, cls.model, "--shape", "tiny", "--max-shard-size", "1MB"], check=True)
        cls.data = os.path.join(cls.tmp, "data")
        cls.log_path = os.path.join(cls.tmp, "serve.log")
        cls.log = open(cls.log_path, "wb")
        # One worker: data-free jobs run; a job asking for 2 GPUs waits ("needs 2 workers; 1 registered").
        cls.serve = subprocess.Popen(
            [LLMC, "serve", "--data-dir", cls.data, "--port", "0", "--http-port", "0", "--workers", "1",
             "--threads", "2", "--no-cwd-root", "--allowed-root", cls.tmp],
            stdout=cls.log, stderr=subprocess.STDOUT, cwd=cls.tmp)
        ready = os.path.join(cls.data, "serve.ready")
        for _ in range(300):
            if os.path.exists(ready) or cls.serve.poll() is not None:
                break
            time.sleep(0.1)
        try:
            with open(ready) as f:
                grpc_port, _http_port = f.read().split()
        except (OSError, ValueError):
            cls.tearDownClass()
            raise AssertionError(f"llmc serve did not start; its log:\n{cls.read_log()}")
        with open(os.path.join(cls.data, "admin.token")) as f:
            cls.token = f.read().strip()
        cls.server = f"127.0.0.1:{grpc_port}"
        cls.client = llmc_client.Client(server=cls.server, token=cls.token)

    @classmethod
    def read_log(cls):
        with open(cls.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "client", None):
            cls.client.close()
        if cls.serve.poll() is None:
            cls.serve.send_signal(signal.SIGTERM)
            try:
                cls.serve.wait(20)
            except subprocess.TimeoutExpired:
                cls.serve.kill()
                cls.serve.wait()
        cls.log.close()
        if os.environ.get("LLMC_TEST_SHOW_LOGS"):
            print(cls.read_log(), file=sys.stderr)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def out(self, name):
        return os.path.join(self.tmp, name)

    def test_submit_watch_wait(self):
        job = self.client.submit(self.model, self.out("w4a16"), scheme="W4A16", labels={"suite": "python"},
                                 request_id="py-submit-1")
        self.assertTrue(job.id.startswith("job-"))
        self.assertIn(job.state, (pb.QUEUED, pb.RUNNING))
        events = list(self.client.watch(job.id))
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)), "seqs 1, 2, ... without gaps")
        self.assertEqual(events[0].state, pb.QUEUED)
        self.assertEqual((events[-1].type, events[-1].state), ("state", pb.SUCCEEDED))
        final = self.client.wait(job.id, timeout=60)
        self.assertEqual(llmc_client.state_name(final.state), "SUCCEEDED", final.error)
        self.assertEqual(final.progress.fraction, 1.0)
        self.assertGreater(json.loads(final.summary_json)["output_bytes"], 0)
        with open(os.path.join(self.out("w4a16"), "config.json")) as f:
            qc = json.load(f)["quantization_config"]
        self.assertEqual(qc["quant_method"], "compressed-tensors")
        # Idempotent: the same request_id and spec is the same job; listing by label finds it.
        again = self.client.submit(self.model, self.out("w4a16"), scheme="W4A16", labels={"suite": "python"},
                                   request_id="py-submit-1")
        self.assertEqual(again.id, job.id)
        self.assertEqual([j.id for j in self.client.list(labels={"suite": "python"}, page_size=1)], [job.id])
        self.assertIn(job.id, [j.id for j in self.client.list(state="SUCCEEDED")])
        # Resuming from a seq replays only what follows it.
        tail = list(self.client.watch(job.id, from_seq=len(events) - 1))
        self.assertEqual([e.seq for e in tail], [len(events)])

    def test_example_script_exit_status(self):
        script = os.path.join(CLIENT_DIR, "examples", "submit_and_watch.py")
        env = dict(os.environ, LLMC_SERVER=self.server, LLMC_TOKEN=self.token)
        r = subprocess.run([sys.executable, script, self.model, self.out("example"), "--scheme", "W8A16"],
                           env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout.splitlines()[-1])["state"], "SUCCEEDED")
        self.assertIn("SUCCEEDED", r.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.out("example"), "config.json")))
        # A refused request: exit 2 with the server's message.
        r = subprocess.run([sys.executable, script, self.model, self.out("bad"), "--scheme", "W5A16"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("INVALID_ARGUMENT", r.stderr)

    def test_errors(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.submit(self.model, self.out("bad-scheme"), scheme="W5A16")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("W5A16", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            self.client.get("job-00000000000000ff")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        with llmc_client.Client(server=self.server, token="not-a-token") as bad:
            with self.assertRaises(grpc.RpcError) as cm:
                bad.submit(self.model, self.out("bad-token"), scheme="W4A16")
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            with self.assertRaises(grpc.RpcError) as cm:
                list(bad.watch("job-00000000000000ff"))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertFalse(os.path.exists(self.out("bad-scheme")))

    def test_watch_resumes_across_coordinator_restart(self):
        # 2 GPUs with 1 worker registered: the job waits, so its stream stays open while the coordinator dies.
        job = self.client.submit(self.model, self.out("waits"), scheme="W4A16", gpus=2)
        watcher = llmc_client.Client(server=self.server, token=self.token)
        events, errors = [], []

        def follow():
            try:
                for e in watcher.watch(job.id, give_up_after=30):
                    events.append(e)
            except Exception as e:  # noqa: BLE001 (reported by the assertion below)
                errors.append(e)

        t = threading.Thread(target=follow)
        t.start()
        for _ in range(100):
            if events:
                break
            time.sleep(0.1)
        self.assertTrue(events, "the watch saw the job's first event")
        servers = [p for p in _children(self.serve.pid) if _comm(p) == "llmc-server"]
        self.assertEqual(len(servers), 1, self.read_log())
        os.kill(servers[0], signal.SIGKILL)  # `llmc serve` restarts it on the same ports and data directory
        # Cancel once the restarted coordinator answers (the Client retries nothing but creates).
        for _ in range(200):
            try:
                self.client.cancel(job.id)
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(0.1)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertEqual(errors, [])
        watcher.close()
        self.assertGreaterEqual(watcher.reconnects, 1, "the stream broke and was resumed")
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)), "no event lost or repeated")
        self.assertEqual((events[-1].type, events[-1].state), ("state", pb.CANCELLED))
        self.assertEqual(self.client.get(job.id).state, pb.CANCELLED)


if __name__ == "__main__":
    unittest.main(verbosity=2)
