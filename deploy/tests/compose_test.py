#!/usr/bin/env python3
"""Structural checks of deploy/compose (compose.yaml, compose.gpu.yaml, env.example), without a container engine:

  deploy/tests/compose_test.py [BUILD_DIR]

The files are read with PyYAML and interpolated the way compose does (${VAR}, ${VAR:-default}, ${VAR:?error})
with the values of env.example; then: every service key is a Compose Specification key; the worker dials the
coordinator's service name and gRPC port; published ports are the ports the coordinator listens on; the worker
token is the same file in both services and where --token-file points; the allowed root is the shared directory,
mounted at the same path everywhere; the containers run as 10001 with a read-only root file system, no
capabilities and no-new-privileges, with /tmp and the worker cache writable; the health check is the image's;
named volumes are declared; every variable is documented in env.example or has a default; the GPU file adds
--device cuda and a GPU reservation. With BUILD_DIR, every flag exists in the binaries' --help. The checks are
also run on broken copies, which they must reject. Prints "N passed, N failed"; exits non-zero on a failure.
"""
import copy
import os
import re
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
COMPOSE = os.path.join(HERE, "..", "compose")
CONTAINERS = os.path.join(HERE, "..", "containers")

# Service keys of the Compose Specification.
SERVICE_KEYS = set("""annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset
credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint
env_file environment expose extends external_links extra_hosts gpus group_add healthcheck hostname image init ipc
isolation labels links logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode
networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged profiles
pull_policy read_only restart runtime scale secrets security_opt shm_size stdin_open stop_grace_period stop_signal
storage_opt sysctls tmpfs tty ulimits user userns_mode uts volumes volumes_from working_dir""".split())
TOP_KEYS = {"name", "version", "services", "networks", "volumes", "secrets", "configs"}

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def read_env(path):
    env, documented = {}, set()
    for line in open(path):
        m = re.match(r"^\s*(#)?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            documented.add(m.group(2))
            if not m.group(1):
                env[m.group(2)] = m.group(3).strip()
    return env, documented


def interpolate(node, env, used, errors):
    if isinstance(node, dict):
        return {k: interpolate(v, env, used, errors) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, used, errors) for v in node]
    if not isinstance(node, str):
        return node

    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        used.add((name, op is not None and op.endswith("-")))
        val = env.get(name)
        if op in (":-", ":?") and not val or op in ("-", "?") and val is None:
            if op.endswith("?"):
                errors.append(f"${{{name}}} is required: {arg}")
                return ""
            return arg or ""
        return val if val is not None else ""

    return VAR.sub(sub, node)


def arg(cmd, flag):
    return next((cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag), None)


def mounts(svc):
    out = []
    for v in svc.get("volumes", []):
        parts = v.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def check(doc, gpu_doc, env, documented, used, help_text):
    """Returns the problems found in the interpolated compose files."""
    errs = []
    for k in doc:
        if k not in TOP_KEYS and not k.startswith("x-"):
            errs.append(f"top-level key {k} is not in the Compose Specification")
    services = doc.get("services", {})
    for name, svc in services.items():
        for k in svc:
            if k not in SERVICE_KEYS and not k.startswith("x-"):
                errs.append(f"{name}: key {k} is not a Compose service key")
    server, worker = services.get("llmc-server"), services.get("llmc-worker")
    if not server or not worker:
        return errs + ["services llmc-server and llmc-worker must exist"]
    scmd, wcmd = [str(a) for a in server.get("command", [])], [str(a) for a in worker.get("command", [])]

    listen, http = arg(scmd, "--listen"), arg(scmd, "--http-listen")
    if not listen or not http or listen.startswith("127.") or http.startswith("127."):
        errs.append("llmc-server: --listen and --http-listen must listen on all interfaces of the container")
    else:
        published = {str(p).rsplit(":", 1)[-1] for p in server.get("ports", [])}
        for a in (listen, http):
            if a.rsplit(":", 1)[-1] not in published:
                errs.append(f"llmc-server: port of {a} is not published")
    coord = arg(wcmd, "--coordinator")
    if not coord or coord.rsplit(":", 1)[0] != "llmc-server" or not listen or coord.rsplit(":", 1)[1] != listen.rsplit(":", 1)[1]:
        errs.append(f"llmc-worker: --coordinator {coord} is not the llmc-server service's gRPC port")

    token = arg(wcmd, "--token-file")
    wsrc = {dst: src for src, dst, _ in mounts(worker)}
    ssrc = {dst: src for src, dst, _ in mounts(server)}
    if token not in wsrc:
        errs.append(f"llmc-worker: --token-file {token} is not mounted")
    elif ssrc.get("/run/secrets/llmc/worker.token") != wsrc[token]:
        errs.append("llmc-server does not get the workers' token file at /run/secrets/llmc/worker.token")
    for s, name in ((server, "llmc-server"), (worker, "llmc-worker")):
        for src, dst, mode in mounts(s):
            if "token" in dst and "ro" not in mode.split(","):
                errs.append(f"{name}: {dst} is not mounted read-only")

    root = arg(scmd, "--allowed-root")
    if not root:
        errs.append("llmc-server: no --allowed-root")
    else:
        for s, name in ((server, "llmc-server"), (worker, "llmc-worker")):
            if not any(src == root and dst == root for src, dst, _ in mounts(s)):
                errs.append(f"{name}: the allowed root {root} is not mounted at the same path")

    for s, name in ((server, "llmc-server"), (worker, "llmc-worker")):
        if str(s.get("user")) != "10001:10001":
            errs.append(f"{name}: user is not 10001:10001 (the images' llmc user)")
        if s.get("read_only") is not True:
            errs.append(f"{name}: root file system not read-only")
        if "ALL" not in (s.get("cap_drop") or []):
            errs.append(f"{name}: capabilities not dropped")
        if "no-new-privileges:true" not in (s.get("security_opt") or []):
            errs.append(f"{name}: no-new-privileges not set")
        if "/tmp" not in (s.get("tmpfs") or []):
            errs.append(f"{name}: /tmp is not writable")
        for src, dst, _ in mounts(s):
            if not src.startswith(("/", ".")) and src not in (doc.get("volumes") or {}):
                errs.append(f"{name}: volume {src} is not declared")
    if not any(dst == "/var/lib/llmc" for _, dst, _ in mounts(server)):
        errs.append("llmc-server: the data directory /var/lib/llmc is not a volume")
    if not any(dst == "/var/cache/llmc" for _, dst, _ in mounts(worker)):
        errs.append("llmc-worker: its cache /var/cache/llmc is not a volume")
    test = (server.get("healthcheck") or {}).get("test", [])
    if len(test) < 2 or test[0] != "CMD" or not os.path.exists(os.path.join(CONTAINERS, os.path.basename(test[1]))):
        errs.append(f"llmc-server: health check {test} is not the image's llmc-server-healthcheck")
    try:
        int(worker.get("deploy", {}).get("replicas"))
    except (TypeError, ValueError):
        errs.append("llmc-worker: deploy.replicas is not a number")

    for name, has_default in used:
        if name not in documented and not has_default:
            errs.append(f"${{{name}}} has no default and is not in env.example")

    gsvc = (gpu_doc.get("services") or {}).get("llmc-worker", {})
    gcmd = [str(a) for a in gsvc.get("command", [])]
    if arg(gcmd, "--device") != "cuda":
        errs.append("compose.gpu.yaml: llmc-worker is not started with --device cuda")
    if arg(gcmd, "--coordinator") != coord or arg(gcmd, "--token-file") != token:
        errs.append("compose.gpu.yaml: llmc-worker's --coordinator/--token-file differ from compose.yaml")
    devs = gsvc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if not any("gpu" in (d.get("capabilities") or []) for d in devs):
        errs.append("compose.gpu.yaml: no GPU reservation")
    for k in gsvc:
        if k not in SERVICE_KEYS:
            errs.append(f"compose.gpu.yaml: key {k} is not a Compose service key")

    if help_text:
        for cmd, binary in ((scmd, "llmc-server"), (wcmd, "llmc-worker"), (gcmd, "llmc-worker")):
            for a in cmd:
                if a.startswith("--") and not re.search(r"(^|[\s,])" + re.escape(a.split("=")[0]) + r"([\s,=]|$)",
                                                        help_text[binary], re.M):
                    errs.append(f"{binary} has no flag {a}")
    return errs


def main():
    help_text = None
    if len(sys.argv) > 1:
        bindir = os.path.join(os.path.abspath(sys.argv[1]), "bin")
        for b in ("llmc-server", "llmc-worker"):
            if not os.access(os.path.join(bindir, b), os.X_OK):
                sys.exit(f"compose_test: no {os.path.join(bindir, b)}")
        help_text = {b: subprocess.run([os.path.join(bindir, b), "--help"], capture_output=True, text=True).stdout
                     for b in ("llmc-server", "llmc-worker")}
    env, documented = read_env(os.path.join(COMPOSE, "env.example"))
    raw = yaml.safe_load(open(os.path.join(COMPOSE, "compose.yaml")))
    raw_gpu = yaml.safe_load(open(os.path.join(COMPOSE, "compose.gpu.yaml")))
    passed = failed = 0

    def report(what, errs):
        nonlocal passed, failed
        if errs:
            failed += 1
            print(f"FAIL {what}")
            for e in errs:
                print(f"  {e}")
        else:
            passed += 1
            print(f"ok   {what}")

    used, ierr = set(), []
    doc = interpolate(raw, env, used, ierr)
    gpu_doc = interpolate(raw_gpu, env, used, ierr)
    report("compose.yaml + compose.gpu.yaml with env.example" + (", flags" if help_text else ""),
           ierr + check(doc, gpu_doc, env, documented, used, help_text))

    # A required variable left unset must be caught.
    used2, ierr2 = set(), []
    interpolate(raw, {k: v for k, v in env.items() if k != "LLMC_SHARED_DIR"}, used2, ierr2)
    report("an unset LLMC_SHARED_DIR is an error", [] if ierr2 else ["accepted"])

    # The checks must reject broken copies.
    def broken(f):
        d = copy.deepcopy(doc)
        f(d)
        return d
    w = lambda d: d["services"]["llmc-worker"]
    s = lambda d: d["services"]["llmc-server"]
    cases = {
        "a misspelt service key": lambda d: w(d).update({"volume": []}),
        "a worker dialling another host": lambda d: w(d)["command"].__setitem__(1, "llmc-coordinator:7443"),
        "a writable root file system": lambda d: s(d).pop("read_only"),
        "the shared directory at another path in the worker":
            lambda d: w(d).__setitem__("volumes", [v if not v.startswith(env["LLMC_SHARED_DIR"]) else
                                                   env["LLMC_SHARED_DIR"] + ":/data" for v in w(d)["volumes"]]),
        "an undeclared named volume": lambda d: d.__setitem__("volumes", {"llmc-data": None}),
    }
    missed = [what for what, f in cases.items() if not check(broken(f), gpu_doc, env, documented, used, help_text)]
    if help_text:
        d = broken(lambda d: w(d)["command"].append("--no-such-flag"))
        if not check(d, gpu_doc, env, documented, used, help_text):
            missed.append("an unknown flag")
    report(f"the checks reject {len(cases) + (1 if help_text else 0)} broken copies", [f"accepted {m}" for m in missed])
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
