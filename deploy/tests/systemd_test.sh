#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd (systemd-analyze works without systemd as PID 1):
#   - `systemd-analyze verify` of llmc-server.service, llmc-worker@cpu.service and llmc-worker@0.service with the
#     GPU drop-in, with ExecStart pointing at BUILD_DIR's binaries: no warning at all is accepted;
#   - `systemd-analyze security --offline=yes --threshold=N`: exposure at most 1.5 for the server, 2.0 for the
#     workers (CPU and GPU);
#   - the hardening directives the units promise, and that the GPU drop-in opens only its GPU's devices;
#   - every flag in ExecStart and in the example environment files exists in `llmc-server --help` /
#     `llmc-worker --help`, and every variable ExecStart uses is set by the unit or its example environment file;
#   - llmc.sysusers.conf and llmc.tmpfiles.conf applied to an empty root with systemd-sysusers/systemd-tmpfiles;
#   - and that the checks fail on a unit without its hardening and on a misspelt directive;
#   - then the units as shipped (with server.env, worker.env, sysusers, tmpfiles) under a real systemd, PID 1 of a
#     podman container made from deploy/containers' Debian base: llmc-server.service and llmc-worker@cpu.service
#     start, a W4A16 job submitted with the admin token SUCCEEDS, both services run as llmc with no capabilities,
#     no_new_privs and a seccomp filter, and both stop cleanly. This part needs root, podman, buildah and
#     debootstrap; without them it is reported as skipped and the rest still counts.
#   deploy/tests/systemd_test.sh BUILD_DIR
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
UNITS="$HERE/../systemd"
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BIN="$(cd "$1" && pwd)/bin"
for t in systemd-analyze systemd-sysusers systemd-tmpfiles; do
  command -v "$t" >/dev/null || { echo "systemd_test: $t is not installed" >&2; exit 1; }
done
for b in llmc-server llmc-worker; do [ -x "$BIN/$b" ] || { echo "systemd_test: no $BIN/$b" >&2; exit 1; }; done

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/  /' <<<"$2"; failed=$((failed + 1)); }

# The units as installed, but with ExecStart on BUILD_DIR's binaries.
mkdir -p "$T/units/llmc-worker@0.service.d"
cp "$UNITS/llmc-server.service" "$UNITS/llmc-worker@.service" "$T/units/"
cp "$UNITS/gpu.conf" "$T/units/llmc-worker@0.service.d/"
sed -i "s|/usr/local/bin/llmc-|$BIN/llmc-|g" "$T/units/llmc-server.service" "$T/units/llmc-worker@.service" \
  "$T/units/llmc-worker@0.service.d/gpu.conf"

verify() {  # verify UNIT: exit status 0 and nothing printed
  local out rc
  out=$(cd "$T/units" && systemd-analyze verify "./$1" 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify $1"; else fail "systemd-analyze verify $1 (exit $rc)" "$out"; fi
}
security() {  # security UNIT THRESHOLD (the exposure level, 0.0 to 10.0; systemd-analyze takes it in tenths)
  local out rc
  out=$(cd "$T/units" && systemd-analyze security --offline=yes --threshold="$(awk -v t="$2" 'BEGIN{printf "%d", t * 10}')" "./$1" 2>&1); rc=$?
  local level
  level=$(grep -o 'exposure level for [^:]*: [0-9.]*' <<<"$out" | awk '{print $NF}')
  if [ $rc -eq 0 ] && [ -n "$level" ]; then ok "systemd-analyze security $1: exposure $level <= $2"
  else fail "systemd-analyze security $1: exposure ${level:-?} above $2 (exit $rc)" "$(grep '✗' <<<"$out")"; fi
}
verify llmc-server.service
verify llmc-worker@cpu.service
verify llmc-worker@0.service
security llmc-server.service 1.5
security llmc-worker@cpu.service 2.0
security llmc-worker@0.service 2.0

# Directives the units promise (docs/operations.md lists them).
has() {  # has FILE LINE...: every LINE is a line of FILE
  local f=$1 missing=""
  shift
  for l in "$@"; do grep -qxF -- "$l" "$f" || missing+="$l"$'\n'; done
  if [ -z "$missing" ]; then ok "$(basename "$f"): ${#@} required directives"; else fail "$(basename "$f"): missing directives" "$missing"; fi
}
COMMON=(User=llmc Group=llmc NoNewPrivileges=yes CapabilityBoundingSet= AmbientCapabilities= ProtectSystem=strict
  ProtectHome=yes PrivateTmp=yes ProtectKernelTunables=yes ProtectKernelModules=yes ProtectControlGroups=yes
  RestrictNamespaces=yes RestrictSUIDSGID=yes LockPersonality=yes SystemCallArchitectures=native
  SystemCallFilter=@system-service DevicePolicy=closed ReadWritePaths=-/srv/llmc)
has "$UNITS/llmc-server.service" "${COMMON[@]}" PrivateDevices=yes StateDirectory=llmc StateDirectoryMode=0700 \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' MemoryDenyWriteExecute=yes 'SystemCallFilter=~@privileged @resources'
has "$UNITS/llmc-worker@.service" "${COMMON[@]}" PrivateDevices=yes LoadCredential=worker.token:/etc/llmc/worker.token \
  'CacheDirectory=llmc-worker/%i'
has "$UNITS/gpu.conf" PrivateDevices=no DevicePolicy=closed 'DeviceAllow=/dev/nvidia%i rw' 'DeviceAllow=/dev/nvidiactl rw' \
  'DeviceAllow=/dev/nvidia-uvm rw' 'Environment=CUDA_VISIBLE_DEVICES=%i' 'Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID'
if grep -q -- '--data-dir /var/lib/llmc ' "$UNITS/llmc-server.service"; then ok "llmc-server: --data-dir is its StateDirectory"
else fail "llmc-server: --data-dir is not /var/lib/llmc (StateDirectory=llmc)"; fi
allowed=$(grep '^DeviceAllow=' "$UNITS/gpu.conf" | sort | tr '\n' ' ')
if [ "$allowed" = "DeviceAllow=/dev/nvidia%i rw DeviceAllow=/dev/nvidia-uvm rw DeviceAllow=/dev/nvidia-uvm-tools rw DeviceAllow=/dev/nvidiactl rw " ]; then
  ok "gpu.conf: the instance's GPU, the control and unified-memory devices, nothing else"
else fail "gpu.conf: DeviceAllow is not exactly the instance's GPU and the NVIDIA control devices" "$allowed"; fi
if grep -q -- '--device cuda' "$UNITS/gpu.conf"; then ok "gpu.conf: --device cuda"; else fail "gpu.conf: no --device cuda"; fi

# Flags and variables: what ExecStart and the example environment files use must exist.
flags_ok() {  # flags_ok BINARY TEXT...: every --flag in TEXT is in BINARY --help
  local help missing="" f
  help=$("$BIN/$1" --help 2>&1)
  shift
  for f in $(grep -oE -- '(^|[ "=])--[a-z][a-z0-9-]*' <<<"$*" | sed 's/^[ "=]//' | sort -u); do
    grep -qE -- "(^|[ ,])$f([ ,=]|$)" <<<"$help" || missing+="$f "
  done
  echo "$missing"
}
for pair in "llmc-server:llmc-server.service server.env" "llmc-worker:llmc-worker@.service gpu.conf worker.env"; do
  b=${pair%%:*}
  text=""
  for f in ${pair#*:}; do text+=$(grep -E '^#?(ExecStart=|[A-Z_]+_ARGS=)' "$UNITS/$f")$'\n'; done
  m=$(flags_ok "$b" "$text")
  if [ -z "$m" ]; then ok "$b: every flag in ${pair#*:} exists"; else fail "$b: unknown flags: $m"; fi
done
for pair in "llmc-server.service:server.env" "llmc-worker@.service:worker.env" "gpu.conf:worker.env"; do
  unit=${pair%%:*} envf=${pair#*:}
  missing=""
  for v in $(grep '^ExecStart=.' "$UNITS/$unit" | grep -oE '\$\{?[A-Z_]+\}?' | tr -d '${}' | sort -u); do
    grep -qE "^Environment=.*\\b$v=|^Environment=\"$v=" "$UNITS/$unit" "$UNITS/llmc-worker@.service" || \
      grep -qE "^$v=" "$UNITS/$envf" || missing+="$v "
  done
  if [ -z "$missing" ]; then ok "$unit: every variable in ExecStart is set"; else fail "$unit: unset variables: $missing"; fi
done

# sysusers and tmpfiles, applied to an empty root.
R="$T/root"
mkdir -p "$R/etc/sysusers.d" "$R/etc/tmpfiles.d"
cp "$UNITS/llmc.sysusers.conf" "$R/etc/sysusers.d/llmc.conf"
cp "$UNITS/llmc.tmpfiles.conf" "$R/etc/tmpfiles.d/llmc.conf"
out=$( { systemd-sysusers --root="$R" && systemd-tmpfiles --root="$R" --create; } 2>&1)
uid=$(awk -F: '$1 == "llmc" {print $3}' "$R/etc/passwd" 2>/dev/null)
if [ -n "$uid" ] && [ "$(stat -c %u:%a "$R/srv/llmc/out" 2>/dev/null)" = "$uid:750" ] && \
   [ "$(stat -c %g:%a "$R/etc/llmc" 2>/dev/null)" = "$uid:750" ]; then
  ok "sysusers and tmpfiles: user llmc, /srv/llmc/out owned by it, /etc/llmc group llmc"
else fail "sysusers and tmpfiles" "$out"; fi

# The checks themselves must fail on bad units.
sed '/^# Hardening/,/^\[Install\]/{/^\[Install\]/!d}' "$T/units/llmc-server.service" >"$T/units/unhardened.service"
if (cd "$T/units" && systemd-analyze security --offline=yes --threshold=15 ./unhardened.service >/dev/null 2>&1); then
  fail "a unit without its hardening section passes the security threshold"
else ok "a unit without its hardening section fails the security threshold"; fi
sed 's/^NoNewPrivileges=yes/NoNewPrivilege=yes/' "$T/units/llmc-server.service" >"$T/units/misspelt.service"
if [ -n "$(cd "$T/units" && systemd-analyze verify ./misspelt.service 2>&1)" ]; then ok "a misspelt directive makes verify complain"
else fail "a misspelt directive passes verify silently"; fi

# The units as shipped, started by a real systemd: PID 1 of a podman container made from the Debian base of
# deploy/containers (cached as localhost/llmc-systemd-test:KEY). Needs buildah, podman and debootstrap.
live() {
  local id="llmc-systest-$$" image pkgs key base ctx b out pid field cudalibs lib
  # shellcheck disable=SC2034  # read by images.sh
  LLMC_LOG_NAME=systemd_test
  source "$HERE/../containers/images.sh"
  base=$(llmc_base_image) || { fail "live: no Debian base image"; return; }
  pkgs=$(for b in llmc llmc-server llmc-worker llmc-make-model; do llmc_runtime_deps "$BIN/$b"; done | \
    awk '$1 == "pkg" {print $2}' | sort -u | tr '\n' ' ') || { fail "live: runtime packages"; return; }
  key=$(printf '%s\n%s\nsystemd-test-v1\n' "$base" "$pkgs" | llmc_sha)
  image="localhost/llmc-systemd-test:$key"
  if ! podman image exists "$image"; then
    ctx="$T/ctx"
    mkdir -p "$ctx"
    printf 'FROM %s\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd systemd-sysv %s >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }; rm -rf /var/lib/apt/lists/* /tmp/apt.log\n' \
      "$base" "$pkgs" >"$ctx/Containerfile"
    buildah build --quiet $LLMC_BUILD_FLAGS --network host -t "$image" "$ctx" >/dev/null 2>"$T/build.err" || {
      fail "live: building $image" "$(tail -20 "$T/build.err")"; return; }
  fi
  podman run -d --name "$id" $LLMC_RUN_FLAGS --systemd=always --network none "$image" /lib/systemd/systemd \
    >"$T/run.out" 2>&1 || { fail "live: podman run" "$(cat "$T/run.out")"; return; }
  # shellcheck disable=SC2064
  trap "podman rm -f -v -t 2 $id >/dev/null 2>&1; rm -rf '$T'" EXIT
  mkdir -p "$T/bin"
  for b in llmc llmc-server llmc-worker llmc-make-model; do
    objcopy --strip-debug "$BIN/$b" "$T/bin/$b" 2>/dev/null || cp "$BIN/$b" "$T/bin/$b"
  done
  podman cp "$T/bin/." "$id:/usr/local/bin/"
  # A CUDA build's binaries link the toolkit's libraries (not the driver): copy them in, as the images do.
  cudalibs=$(for b in llmc llmc-server llmc-worker llmc-make-model; do llmc_runtime_deps "$BIN/$b"; done | \
    awk '$1 == "cuda" {print $2}' | sort -u)
  if [ -n "$cudalibs" ]; then
    mkdir -p "$T/cuda"
    for lib in $cudalibs; do cp -L "$lib" "$T/cuda/$(basename "$lib")"; done
    podman cp "$T/cuda/." "$id:/usr/local/lib/"
    podman exec "$id" ldconfig
  fi
  podman cp "$UNITS/llmc-server.service" "$id:/etc/systemd/system/"
  podman cp "$UNITS/llmc-worker@.service" "$id:/etc/systemd/system/"
  podman exec "$id" mkdir -p /etc/sysusers.d /etc/tmpfiles.d
  podman cp "$UNITS/llmc.sysusers.conf" "$id:/etc/sysusers.d/llmc.conf"
  podman cp "$UNITS/llmc.tmpfiles.conf" "$id:/etc/tmpfiles.d/llmc.conf"
  out=$(podman exec "$id" sh -c '
    for i in $(seq 1 100); do
      case "$(systemctl is-system-running 2>/dev/null)" in running|degraded) break ;; esac; sleep 0.2; done
    systemd-sysusers && systemd-tmpfiles --create /etc/tmpfiles.d/llmc.conf' 2>&1) || { fail "live: sysusers/tmpfiles" "$out"; return; }
  podman cp "$UNITS/server.env" "$id:/etc/llmc/server.env"
  podman cp "$UNITS/worker.env" "$id:/etc/llmc/worker.env"
  out=$(podman exec "$id" sh -c '
    set -e
    chmod 0600 /etc/llmc/server.env /etc/llmc/worker.env
    systemctl daemon-reload
    systemctl start llmc-server
    for i in $(seq 1 100); do [ -s /var/lib/llmc/worker.token ] && break; sleep 0.1; done
    install -m 0600 /var/lib/llmc/worker.token /etc/llmc/worker.token
    systemctl start llmc-worker@cpu
    runuser -u llmc -- llmc-make-model /srv/llmc/models/tiny --shape tiny >/dev/null
    LLMC_TOKEN=$(cat /var/lib/llmc/admin.token) llmc submit /srv/llmc/models/tiny /srv/llmc/out/tiny-w4a16 \
      --scheme W4A16 --watch --no-progress
    test "$(stat -c %U /srv/llmc/out/tiny-w4a16/config.json)" = llmc' 2>&1) || {
    fail "live: a job through llmc-server.service and llmc-worker@cpu.service" \
      "$out"$'\n'"$(podman exec "$id" journalctl -u llmc-server -u llmc-worker@cpu --no-pager 2>&1 | tail -20)"; return; }
  ok "live: systemd starts llmc-server.service and llmc-worker@cpu.service as shipped; a W4A16 job SUCCEEDS"
  # What the kernel applied to the running services.
  out=""
  for u in llmc-server llmc-worker@cpu; do
    pid=$(podman exec "$id" systemctl show -p MainPID --value "$u")
    status=$(podman exec "$id" cat "/proc/$pid/status")
    for field in "NoNewPrivs:	1" "Seccomp:	2" "CapBnd:	0000000000000000" "CapEff:	0000000000000000"; do
      grep -qF "$field" <<<"$status" || out+="$u: /proc/$pid/status lacks '$field'"$'\n'
    done
    [ "$(podman exec "$id" stat -c %U "/proc/$pid")" = llmc ] || out+="$u: does not run as llmc"$'\n'
  done
  if [ -z "$out" ]; then ok "live: both services run as llmc with no capabilities, no_new_privs and a seccomp filter"
  else fail "live: the hardening is not in force" "$out"; fi
  out=$(podman exec "$id" sh -c 'systemctl stop llmc-worker@cpu llmc-server
    for u in llmc-worker@cpu llmc-server; do
      echo "$u $(systemctl show -p Result --value $u) $(systemctl show -p ExecMainStatus --value $u)"; done' 2>&1)
  if [ "$(grep -c ' success 0$' <<<"$out")" = 2 ]; then ok "live: both stop cleanly on SIGTERM (exit 0)"
  else fail "live: stopping the services" "$out"; fi
}
if command -v podman >/dev/null && command -v buildah >/dev/null && command -v debootstrap >/dev/null && [ "$(id -u)" = 0 ]; then
  live
else
  echo "skip live run under systemd: needs root, podman, buildah and debootstrap"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
