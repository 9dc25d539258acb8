"""A small Python client for the llmc compression service (llmc.v1.Compression, docs/api.md).

Made for MLOps pipelines: submit a compression job, follow its events, wait for the result.

    import llmc_client
    c = llmc_client.Client()                       # server: $LLMC_SERVER or 127.0.0.1:7443; token: $LLMC_TOKEN
    job = c.submit("/models/llama", "/srv/llmc/llama-w4a16", scheme="W4A16")
    for e in c.watch(job.id):                      # resumes from the last seq if the stream breaks
        print(e.seq, e.type, llmc_client.state_name(e.state), e.message)
    job = c.wait(job.id)                           # the final Job
    assert job.state == llmc_client.pb.SUCCEEDED

Needs Debian's python3-grpcio, python3-protobuf and python3-grpc-tools. The gRPC stubs are generated from
proto/llmc/v1/*.proto with grpc_tools.protoc the first time this module is imported, into a cache directory
($LLMC_PYGEN_DIR, else $XDG_CACHE_HOME/llmc/pygen, else ~/.cache/llmc/pygen) keyed by a hash of the .proto files,
so a changed proto regenerates them. $LLMC_PROTO_DIR overrides where the .proto files are (default: the
repository's proto/ beside this file). Nothing generated is kept in the source tree.

Errors are grpc.RpcError exceptions as the server sends them: e.code() is a grpc.StatusCode (INVALID_ARGUMENT,
NOT_FOUND, UNAUTHENTICATED, ...) and e.details() the server's message, which says what to do.
"""

import glob
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import grpc

DEFAULT_SERVER = "127.0.0.1:7443"

# Codes after which a watch reconnects and resumes (the coordinator restarted or the connection dropped), as
# `llmc watch` does.
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.INTERNAL)


def _proto_dir():
    d = os.environ.get("LLMC_PROTO_DIR")
    if d:
        return d
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "proto")


def _cache_root():
    d = os.environ.get("LLMC_PYGEN_DIR")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llmc", "pygen")


def _generate_stubs():
    """Returns the directory holding llmc/v1/*_pb2*.py for the current protos, generating it if needed."""
    proto_root = os.path.abspath(_proto_dir())
    protos = sorted(glob.glob(os.path.join(proto_root, "llmc", "v1", "*.proto")))
    if not protos:
        raise ImportError(f"llmc_client: no llmc/v1/*.proto under {proto_root}; set LLMC_PROTO_DIR to the "
                          "repository's proto/ directory")
    h = hashlib.sha256()
    for p in protos:
        h.update(os.path.basename(p).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    root = _cache_root()
    out = os.path.join(root, h.hexdigest()[:16])
    if os.path.exists(os.path.join(out, "llmc", "v1", "compression_pb2_grpc.py")):
        return out
    os.makedirs(root, exist_ok=True)
    # Generate into a private directory and rename it into place: concurrent imports never see half a tree.
    tmp = tempfile.mkdtemp(prefix=".gen-", dir=root)
    try:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_root, "--python_out", tmp,
               "--grpc_python_out", tmp] + protos
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ImportError("llmc_client: generating the gRPC stubs failed (is python3-grpc-tools installed?): "
                              + (r.stderr.strip() or r.stdout.strip()))
        for d in (os.path.join(tmp, "llmc"), os.path.join(tmp, "llmc", "v1")):
            open(os.path.join(d, "__init__.py"), "a").close()
        try:
            os.rename(tmp, out)
        except OSError:
            if not os.path.exists(os.path.join(out, "llmc", "v1", "compression_pb2_grpc.py")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _load():
    d = _generate_stubs()
    if d not in sys.path:
        sys.path.insert(0, d)
    return (importlib.import_module("llmc.v1.compression_pb2"),
            importlib.import_module("llmc.v1.compression_pb2_grpc"))


# pb: the message classes and enum values (pb.Job, pb.JobSpec, pb.SUCCEEDED, ...); pb_grpc: the stub.
pb, pb_grpc = _load()

TERMINAL_STATES = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


def state_name(state):
    """'SUCCEEDED' for pb.SUCCEEDED, etc."""
    return pb.JobState.Name(state)


def _as_uri(s):
    """A URI as given, or a local path made absolute (the server does not share our working directory)."""
    if not s or "://" in s:
        return s
    return os.path.abspath(s)


class Client:
    """One connection to a coordinator. Thread-safe (gRPC channels and stubs are).

    server: "host:port" (default $LLMC_SERVER, else 127.0.0.1:7443). token: bearer token (default $LLMC_TOKEN).
    ca_cert: PEM file of the CA for TLS (default $LLMC_CA_CERT; none: plaintext). timeout: seconds for each unary
    call.
    """

    def __init__(self, server=None, token=None, ca_cert=None, timeout=30.0):
        self.server = server or os.environ.get("LLMC_SERVER") or DEFAULT_SERVER
        self.token = token if token is not None else os.environ.get("LLMC_TOKEN", "")
        self.token = self.token.strip()
        ca_cert = ca_cert if ca_cert is not None else os.environ.get("LLMC_CA_CERT", "")
        if ca_cert:
            with open(ca_cert, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(self.server, creds)
        else:
            self._channel = grpc.insecure_channel(self.server)
        self._stub = pb_grpc.CompressionStub(self._channel)
        self._metadata = (("authorization", "Bearer " + self.token),) if self.token else ()
        self.timeout = timeout
        self.reconnects = 0  # times watch() resumed a broken stream (for tests and logs)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        return method(request, timeout=self.timeout, metadata=self._metadata)

    @staticmethod
    def make_spec(model, output, scheme=None, algorithm=None, recipe_yaml=None, ignore=(), dataset=None,
                  num_samples=0, seq_len=0, seed=0, eval_text=None, gpus=0, min_gpus=0, priority=0, labels=None,
                  max_shard_size="", observer=""):
        """A JobSpec: exactly one of scheme (with optional algorithm) and recipe_yaml (the recipe's text).
        Local paths are made absolute; URIs (file://, s3://) are passed as given."""
        spec = pb.JobSpec(model_uri=_as_uri(model), output_uri=_as_uri(output), gpus=gpus, min_gpus=min_gpus, priority=priority,
                          max_shard_size=max_shard_size or "", observer=observer or "")
        if scheme is not None:
            spec.preset.scheme = scheme
            spec.preset.algorithm = algorithm or ""
        if recipe_yaml is not None:
            spec.recipe_yaml = recipe_yaml  # oneof: the server answers INVALID_ARGUMENT when both or none are set
        spec.ignore.extend(ignore or ())
        if dataset:
            spec.calibration.dataset_uri = _as_uri(dataset)
        spec.calibration.num_samples = num_samples
        spec.calibration.seq_len = seq_len
        spec.calibration.seed = seed
        if eval_text:
            spec.eval_text_uri = _as_uri(eval_text)
        for k, v in (labels or {}).items():
            spec.labels[k] = v
        return spec

    def submit(self, model, output, request_id=None, retries=5, **spec_args):
        """Creates a job and returns it (a pb.Job, state QUEUED). spec_args: those of make_spec. request_id: the
        idempotency key (default: a random UUID); UNAVAILABLE is retried `retries` times with the same id, so a
        retry never makes a second job."""
        req = pb.CreateJobRequest(request_id=request_id or str(uuid.uuid4()),
                                  spec=self.make_spec(model, output, **spec_args))
        return self.create(req, retries=retries)

    def create(self, request, retries=5):
        """CreateJob with a prepared CreateJobRequest (retrying UNAVAILABLE with the same request_id)."""
        for attempt in range(retries + 1):
            try:
                return self._call(self._stub.CreateJob, request)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == retries:
                    raise
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
        raise AssertionError("unreachable")

    def get(self, job_id):
        return self._call(self._stub.GetJob, pb.GetJobRequest(id=job_id))

    def cancel(self, job_id):
        return self._call(self._stub.CancelJob, pb.CancelJobRequest(id=job_id))

    def validate(self, model, output, **spec_args):
        return self._call(self._stub.ValidateJob, pb.ValidateJobRequest(spec=self.make_spec(model, output, **spec_args)))

    def workers(self):
        return list(self._call(self._stub.ListWorkers, pb.ListWorkersRequest()).workers)

    def list(self, state=None, labels=None, page_size=0):
        """Yields the jobs the token may see, newest first, following next_page_token to the end.
        state: a pb.JobState value or its name; labels: {key: value}, all must match."""
        if isinstance(state, str):
            state = pb.JobState.Value(state)
        req = pb.ListJobsRequest(page_size=page_size, state=state or pb.JOB_STATE_UNSPECIFIED)
        for k, v in (labels or {}).items():
            req.labels[k] = v
        while True:
            resp = self._call(self._stub.ListJobs, req)
            yield from resp.jobs
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    def watch(self, job_id, from_seq=0, give_up_after=60.0, deadline=None):
        """Yields the job's events (pb.JobEvent) with seq > from_seq, live, until the job's final state event.

        When the stream breaks (coordinator restart, network), it reconnects with from_seq = the last seq seen, so
        no event is lost or repeated; it gives up (re-raising the last grpc.RpcError) after `give_up_after`
        seconds without reaching the server. Other errors (NOT_FOUND, UNAUTHENTICATED, ...) are raised at once.
        deadline: an absolute time.time() after which TimeoutError is raised.
        """
        seq = from_seq
        down_since = None  # when the current run of failed attempts began
        failures = 0
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.time()
                if timeout <= 0:
                    raise TimeoutError(f"job {job_id}: no final state before the deadline (last seq {seq})")
            stream = self._stub.WatchJob(pb.WatchJobRequest(id=job_id, from_seq=seq), timeout=timeout,
                                         metadata=self._metadata)
            opened, got = time.monotonic(), False
            try:
                for e in stream:
                    got = True
                    seq = e.seq
                    yield e
                return  # closed OK after the final state event
            except grpc.RpcError as e:
                if deadline is not None and time.time() >= deadline:
                    raise TimeoutError(f"job {job_id}: no final state before the deadline (last seq {seq})") from e
                if e.code() not in _RESUMABLE:
                    raise
                now = time.monotonic()
                # A stream that delivered events or lived a while reached the server: a new outage starts now.
                if down_since is None or got or now - opened >= 5.0:
                    down_since, failures = now, 0
                elif now - down_since > give_up_after:
                    raise
            finally:
                stream.cancel()
            failures += 1
            self.reconnects += 1
            time.sleep(min(1.0, 0.1 * failures))

    def wait(self, job_id, on_event=None, timeout=None, give_up_after=60.0):
        """Follows the job to its final state and returns the final pb.Job. on_event(event) is called for each
        event. timeout: seconds in all (None: no limit), then TimeoutError."""
        deadline = None if timeout is None else time.time() + timeout
        for e in self.watch(job_id, give_up_after=give_up_after, deadline=deadline):
            if on_event:
                on_event(e)
        return self.get(job_id)
