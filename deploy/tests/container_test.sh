#!/usr/bin/env bash
# Builds the llmc-server and llmc-worker images from BUILD_DIR (deploy/containers/build.sh) and runs them, each
# container in a network namespace of its own (slirp4netns; ports published on this host's loopback):
#   1. the server container runs as 10001 with a read-only root file system, seeds the worker token mounted as a
#      secret into its data volume (mode 0600), and answers GET /healthz on its published HTTP port; the image's
#      HEALTHCHECK passes (podman healthcheck run);
#   2. a worker container dials the server's published gRPC port and registers (GET /api/v1/workers);
#   3. `llmc submit --watch` from this host compresses a synthetic tiny Llama (llmc-make-model --shape tiny) to
#      W4A16 through the containers, in a directory mounted at the same path everywhere; the job SUCCEEDS, its
#      output is byte-identical to `llmc compress` on this host, and /metrics counts it;
#   4. the procedures of docs/operations.md: an online backup with sqlite3 inside the server container; a token
#      made with `llmc-server token create` works, and after its row is deleted and the server restarted it is
#      refused (the worker reconnects by itself); a restore of the backup (stop, replace jobs.db, drop the WAL)
#      brings back exactly the jobs of the backup; the server stops cleanly on SIGTERM (exit 0);
#   5. a worker with a wrong token is refused and exits non-zero.
# Exits 77 (skipped) when buildah or podman is not installed; removes its containers, volume and images (the
# cached Debian base and runtime layers stay: build.sh reuses them).
#   deploy/tests/container_test.sh BUILD_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD_DIR=$(cd "$1" && pwd)
BIN="$BUILD_DIR/bin"
for t in buildah podman; do
  command -v "$t" >/dev/null || { echo "SKIPPED: $t is not installed (scripts/setup.sh installs it)"; exit 77; }
done
for t in curl debootstrap slirp4netns sha256sum; do
  command -v "$t" >/dev/null || { echo "container_test: $t is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
done
for b in llmc llmc-server llmc-worker llmc-make-model; do
  [ -x "$BIN/$b" ] || { echo "container_test: no $BIN/$b" >&2; exit 1; }
done
source "$HERE/../containers/podman-env.sh"

ID=llmc-ctest-$$
TAG=ctest-$$
SERVER_IMAGE=localhost/llmc-server:$TAG
WORKER_IMAGE=localhost/llmc-worker:$TAG
# The shared directory is mounted at the same path in the containers as here, so the paths `llmc submit` sends
# mean the same files to the coordinator and the worker.
T=$(mktemp -d /var/tmp/llmc-ctest.XXXXXX)
START=$SECONDS
passed=0
step() { echo "[$((SECONDS - START))s] $*"; }
ok() { echo "ok   $*"; passed=$((passed + 1)); }
logs() {
  for c in "$ID-server" "$ID-worker"; do
    podman container exists "$c" 2>/dev/null || continue
    echo "--- podman logs $c (last 40 lines)"
    podman logs "$c" 2>&1 | tail -40
  done
}
die() { echo "FAIL $*" >&2; logs >&2; echo "$passed passed, 1 failed"; exit 1; }
cleanup() {
  podman rm -f -v -t 2 "$ID-server" "$ID-worker" "$ID-badworker" >/dev/null 2>&1 || true
  podman volume rm -f "$ID-data" >/dev/null 2>&1 || true
  podman rmi -f "$SERVER_IMAGE" "$WORKER_IMAGE" >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT
# podman run/start, its messages kept for a failure (without systemd it complains about health check timers)
prun() { "$@" >"$T/podman.out" 2>&1 || { cat "$T/podman.out" >&2; return 1; }; }
running() { [ "$(podman inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
wait_healthz() {
  for _ in $(seq 1 120); do
    [ "$(curl -fsS --max-time 2 "http://$HTTP/healthz" 2>/dev/null)" = ok ] && return 0
    running "$ID-server" || die "the server container exited"
    sleep 0.5
  done
  die "GET http://$HTTP/healthz did not answer ok within 60 s"
}
api() { curl -fsS --max-time 5 -H "Authorization: Bearer $ADMIN" "http://$HTTP$1"; }
wait_worker() {  # the worker is registered and IDLE
  for _ in $(seq 1 120); do
    api /api/v1/workers 2>/dev/null | tr -d ' \n' | grep -q '"id":"ctest-worker"[^}]*"state":"IDLE"' && return 0
    running "$ID-worker" || die "the worker container exited"
    sleep 0.5
  done
  die "the worker did not register within 60 s"
}
sql() { podman exec "$ID-server" sqlite3 /var/lib/llmc/"$1" "$2"; }

step "building the images (tag $TAG)"
"$HERE/../containers/build.sh" "$BUILD_DIR" --tag "$TAG" || die "deploy/containers/build.sh failed"
for i in "$SERVER_IMAGE" "$WORKER_IMAGE"; do
  podman image exists "$i" || die "$i was not built"
  [ "$(podman image inspect --format '{{.Config.User}}' "$i")" = "10001:10001" ] || die "$i does not run as 10001:10001"
done
sizes=$(for i in "$SERVER_IMAGE" "$WORKER_IMAGE"; do podman image inspect --format '{{.Size}}' "$i"; done | awk '{printf "%s%.0f MB", (NR > 1 ? ", " : ""), $1 / 1e6}')
ok "images built (server, worker: $sizes), user 10001"

step "the model and the token"
mkdir -p "$T/shared" "$T/secrets"
"$BIN/llmc-make-model" "$T/shared/model" --shape tiny >/dev/null
TOKEN="llmc_$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
echo "$TOKEN" >"$T/secrets/worker.token"
chown -R 10001:10001 "$T/shared" "$T/secrets"
chmod 0700 "$T/secrets"
chmod 0400 "$T/secrets/worker.token"
podman volume create "$ID-data" >/dev/null

step "the server container"
HARDEN=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)
prun podman run -d --name "$ID-server" $LLMC_RUN_FLAGS "${HARDEN[@]}" --network slirp4netns \
  -p 127.0.0.1::7443 -p 127.0.0.1::7480 \
  -v "$ID-data:/var/lib/llmc" -v "$T/shared:$T/shared" -v "$T/secrets:/run/secrets/llmc:ro" \
  "$SERVER_IMAGE" --listen 0.0.0.0:7443 --http-listen 0.0.0.0:7480 --allowed-root "$T/shared" \
  || die "podman run of the server failed"
GRPC=$(podman port "$ID-server" 7443/tcp) || die "no published gRPC port"
HTTP=$(podman port "$ID-server" 7480/tcp) || die "no published HTTP port"
wait_healthz
ok "GET http://$HTTP/healthz answers ok (server container; gRPC published on $GRPC)"
podman healthcheck run "$ID-server" >/dev/null 2>&1 || die "the image's HEALTHCHECK failed"
ok "the image's HEALTHCHECK passes"
[ "$(podman exec "$ID-server" id -u)" = 10001 ] || die "the server does not run as 10001"
if podman exec "$ID-server" touch /usr/local/bin/x 2>/dev/null; then die "the root file system is writable"; fi
[ "$(podman exec "$ID-server" cat /var/lib/llmc/worker.token)" = "$TOKEN" ] || die "the worker token was not seeded into the data volume"
[ "$(podman exec "$ID-server" stat -c %a /var/lib/llmc/worker.token)" = 600 ] || die "the seeded token is not mode 0600"
podman exec "$ID-server" test -s /var/lib/llmc/jobs.db || die "no jobs.db in the data volume"
ADMIN=$(podman exec "$ID-server" cat /var/lib/llmc/admin.token)
[ -n "$ADMIN" ] || die "no admin token"
ok "server: uid 10001, read-only root, jobs.db and tokens in the volume, worker token seeded (0600)"

step "the worker container"
# Its own network namespace; slirp4netns's 10.0.2.2 is this host's loopback, where the gRPC port is published.
prun podman run -d --name "$ID-worker" $LLMC_RUN_FLAGS "${HARDEN[@]}" \
  --network slirp4netns:allow_host_loopback=true --add-host llmc-server:10.0.2.2 \
  -v "$T/shared:$T/shared" -v "$T/secrets/worker.token:/run/secrets/llmc/worker.token:ro" \
  "$WORKER_IMAGE" --coordinator "llmc-server:${GRPC##*:}" --token-file /run/secrets/llmc/worker.token \
  --worker-id ctest-worker --threads 2 || die "podman run of the worker failed"
wait_worker
ok "the worker container registered with the coordinator"

step "a W4A16 job through the containers"
submit() {  # submit OUTPUT: llmc submit --watch from this host; fails unless the job SUCCEEDED
  local out
  out=$("$BIN/llmc" submit "$T/shared/model" "$1" --scheme W4A16 --server "$GRPC" --token "$ADMIN" --watch \
    --no-progress 2>&1) || { echo "$out" | tail -20 >&2; die "llmc submit --watch $1 did not succeed"; }
}
OUT="$T/shared/out-w4a16"
submit "$OUT"
[ -f "$OUT/config.json" ] && ls "$OUT"/*.safetensors >/dev/null 2>&1 || die "the job left no checkpoint in $OUT"
ok "llmc submit --watch: the job SUCCEEDED in the worker container"
"$BIN/llmc" compress "$T/shared/model" "$T/local-w4a16" --scheme W4A16 >/dev/null || die "llmc compress on this host failed"
for f in $(cd "$T/local-w4a16" && ls *.safetensors config.json); do
  cmp -s "$T/local-w4a16/$f" "$OUT/$f" || die "$f from the container differs from llmc compress on this host"
done
ok "the container's output is byte-identical to llmc compress on this host"
grep -qE '^llmc_jobs\{state="SUCCEEDED"\} 1$' <<<"$(curl -fsS --max-time 5 "http://$HTTP/metrics")" \
  || die "/metrics does not count the succeeded job"
ok "/metrics: llmc_jobs{state=\"SUCCEEDED\"} 1"

step "backup, tokens, restore"
podman exec "$ID-server" sqlite3 /var/lib/llmc/jobs.db ".backup /var/lib/llmc/jobs-backup.db" || die "sqlite3 .backup failed"
[ "$(sql jobs-backup.db 'SELECT count(*) FROM jobs')" = 1 ] || die "the backup does not hold the job"
ok "online backup: sqlite3 jobs.db \".backup ...\" in the running server container"
submit "$T/shared/out-after-backup"

TEAM=$(podman exec "$ID-server" llmc-server token create --data-dir /var/lib/llmc --tenant team-a --role submitter \
  --name ctest) || die "llmc-server token create failed"
"$BIN/llmc" list --server "$GRPC" --token "$TEAM" --json >/dev/null || die "the new submitter token is refused"
sql jobs.db "DELETE FROM tokens WHERE sha256 = '$(printf %s "$TEAM" | sha256sum | cut -d' ' -f1)'"
[ "$(sql jobs.db "SELECT count(*) FROM tokens WHERE name = 'ctest'")" = 0 ] || die "the token's row is still there"
prun podman restart -t 30 "$ID-server" || die "podman restart of the server failed"
GRPC=$(podman port "$ID-server" 7443/tcp); HTTP=$(podman port "$ID-server" 7480/tcp)
wait_healthz
if out=$("$BIN/llmc" list --server "$GRPC" --token "$TEAM" 2>&1); then die "a deleted token still works after the restart"; fi
grep -qi "unknown bearer token" <<<"$out" || die "a deleted token is refused with: $out"
ok "token create, then revoke (delete its row, restart): the token is refused"
wait_worker
ok "the worker reconnected to the restarted coordinator by itself"

prun podman stop -t 30 "$ID-server" || die "podman stop of the server failed"
[ "$(podman inspect --format '{{.State.ExitCode}}' "$ID-server")" = 0 ] || die "the server did not exit 0 on SIGTERM"
prun podman run --rm $LLMC_RUN_FLAGS --user 10001:10001 --entrypoint /bin/sh -v "$ID-data:/var/lib/llmc" "$SERVER_IMAGE" \
  -c 'cd /var/lib/llmc && rm -f jobs.db-wal jobs.db-shm && mv jobs-backup.db jobs.db' || die "the restore failed"
prun podman start "$ID-server" || die "podman start of the server failed"
GRPC=$(podman port "$ID-server" 7443/tcp); HTTP=$(podman port "$ID-server" 7480/tcp)
wait_healthz
jobs=$(api /api/v1/jobs) || die "GET /api/v1/jobs failed after the restore"
n=$(grep -o '"id":[ ]*"[^"]*"' <<<"$jobs" | sort -u | wc -l)
[ "$n" = 1 ] && grep -q 'out-w4a16' <<<"$jobs" && ! grep -q 'out-after-backup' <<<"$jobs" \
  || die "after the restore the store holds $n jobs: $jobs"
ok "server stops with exit 0 on SIGTERM; restore (replace jobs.db, drop the WAL) brings back the backup's one job"
wait_worker
submit "$T/shared/out-after-restore"
ok "a job after the restore succeeds"

step "a worker with a wrong token"
echo "llmc_wrong" >"$T/secrets/wrong.token"
chown 10001:10001 "$T/secrets/wrong.token"
rc=0
timeout 60 podman run --name "$ID-badworker" $LLMC_RUN_FLAGS "${HARDEN[@]}" \
  --network slirp4netns:allow_host_loopback=true -v "$T/secrets/wrong.token:/run/secrets/llmc/worker.token:ro" \
  "$WORKER_IMAGE" --coordinator "10.0.2.2:${GRPC##*:}" --token-file /run/secrets/llmc/worker.token \
  >"$T/bad.log" 2>&1 || rc=$?
{ [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "refused this worker" "$T/bad.log"; } \
  || { cat "$T/bad.log" >&2; die "a worker with a wrong token was not refused (exit $rc)"; }
ok "a worker with a wrong token is refused (exit $rc)"

step "done"
echo "$passed passed, 0 failed"
