#!/usr/bin/env bash
# The service load test on loopback: starts `llmc serve` on a temporary data directory, runs llmc-load against it,
# prints the report as a table and as JSON, and stops the server.
#
#   bench/load/run_load.sh [CLIENTS [SECONDS [llmc-load flags...]]]     # default 200 clients x 30 s
#
# Environment: LLMC_BUILD_DIR (default: build; binaries in its bin/), WORKERS (llmc serve --workers, default 1:
# some jobs run while the clients load the API; 0: every job stays QUEUED), KEEP=1 keeps the temporary directory.
# Exit status: llmc-load's (0 only with no errors and no lost jobs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${LLMC_BUILD_DIR:-$repo/build}
bin=$(cd "$build" 2>/dev/null && pwd)/bin || { echo "run_load.sh: no build directory $build; set LLMC_BUILD_DIR" >&2; exit 2; }
clients=${1:-200}
duration=${2:-30}
shift $(( $# > 2 ? 2 : $# ))
workers=${WORKERS:-1}

for b in llmc llmc-server llmc-worker llmc-make-model llmc-load; do
  if [[ ! -x $bin/$b ]]; then
    echo "run_load.sh: $bin/$b is missing; build it (ninja -C $build llmc llmc-server llmc-worker llmc-make-model llmc-load) or set LLMC_BUILD_DIR" >&2
    exit 2
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/llmc-load.XXXXXX")
serve=
cleanup() {
  if [[ -n $serve ]] && kill -0 "$serve" 2>/dev/null; then
    kill -TERM "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
  fi
  if [[ ${KEEP:-0} == 1 ]]; then echo "run_load.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

"$bin/llmc-make-model" "$tmp/model" --shape tiny
mkdir -p "$tmp/out"
(cd "$tmp" && exec "$bin/llmc" serve --data-dir "$tmp/data" --port 0 --http-port 0 --workers "$workers" \
   --threads 1 --no-cwd-root --allowed-root "$tmp") >"$tmp/serve.log" 2>&1 &
serve=$!
for _ in $(seq 300); do
  [[ -s $tmp/data/serve.ready ]] && break
  kill -0 "$serve" 2>/dev/null || { cat "$tmp/serve.log" >&2; exit 2; }
  sleep 0.1
done
read -r grpc_port http_port <"$tmp/data/serve.ready"

echo "machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/{print $2}') GiB;" \
     "llmc serve --workers $workers --threads 1 on 127.0.0.1:$grpc_port, client and server on the same machine"
# CPU seconds (user + system) used so far by the coordinator and the workers (children of `llmc serve`).
service_cpu() {
  local total=0 pid
  for pid in $(cat /proc/"$serve"/task/*/children 2>/dev/null); do
    case $(cat /proc/"$pid"/comm 2>/dev/null) in
      llmc-server | llmc-worker) total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15) / hz}' /proc/"$pid"/stat) ;;
    esac
  done
  echo "$total"
}
cpu0=$(service_cpu)
t0=$(date +%s.%N)
rc=0
"$bin/llmc-load" --server "127.0.0.1:$grpc_port" --token-file "$tmp/data/admin.token" --model "$tmp/model" \
  --out-dir "$tmp/out" --clients "$clients" --duration "$duration" --json "$tmp/report.json" "$@" || rc=$?

echo "llmc-server + llmc-worker used $(awk -v a="$cpu0" -v b="$(service_cpu)" -v t0="$t0" -v t1="$(date +%s.%N)" \
  'BEGIN {printf "%.1f CPU s in the %.1f s of llmc-load (run and verification): %.2f cores", b - a, t1 - t0, (b - a) / (t1 - t0)}')"
echo "--- server side (/metrics): llmc_jobs and llmc_rpc_requests_total"
curl -sf "http://127.0.0.1:$http_port/metrics" | grep -E '^llmc_(jobs|jobs_created_total|rpc_requests_total)[{ ]' | grep -v ' 0$' || true
echo "--- JSON"
cat "$tmp/report.json"
exit $rc
