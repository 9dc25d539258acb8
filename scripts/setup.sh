#!/usr/bin/env bash
# Installs everything llmc needs to build and test on Debian 12 (bookworm). Idempotent; run as root or with sudo.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build pkg-config git python3
  libabsl-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev libre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  libopenblas-dev
  libpcre2-dev libicu-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libsqlite3-dev libcurl4-openssl-dev libssl-dev libxml2-dev
  libmicrohttpd-dev libcpp-httplib-dev prometheus-cpp-dev libgloo-dev python3-grpcio python3-grpc-tools python3-protobuf prometheus
  radosgw ceph-mon ceph-osd ceph-common
  buildah podman runc debootstrap debian-archive-keyring slirp4netns fuse-overlayfs uidmap containernetworking-plugins
  curl python3-yaml sqlite3 systemd
  chromium nodejs
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "llmc setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "llmc setup: all packages present"
fi

# The web console's npm packages (client/web/package-lock.json): uplot (copied into the served folder by the build),
# playwright-core and typescript (its browser test and type check). The browser is Debian's chromium, never a download.
if ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi
# playwright-core needs Node.js 20 or newer; Debian 12's own nodejs is 18.
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
  echo "llmc setup: warning: Node.js $(node --version 2>/dev/null || echo missing) is older than 20: the console's" \
       "browser test needs Node.js 20 or newer (Debian 12 ships 18; install a newer nodejs package)" >&2
fi
web="$(cd "$(dirname "$0")/.." && pwd)/client/web"
if [ ! -f "$web/node_modules/.package-lock.json" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
  echo "llmc setup: npm ci in client/web"
  (cd "$web" && npm ci --no-audit --no-fund)
fi

# The npm projects of the deployment checks (Kubernetes validators, Grafana's schema and TypeScript), pinned by
# their package-lock.json; node_modules is git-ignored. Their tests run `npm ci` again (offline when cached).
if command -v npm >/dev/null; then
  for d in deploy/tests deploy/grafana/tests; do
    (cd "$(dirname "$0")/../$d" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null)
  done
  echo "llmc setup: npm ci in deploy/tests and deploy/grafana/tests"
else
  echo "llmc setup: npm is not installed (Node 20): the deployment checks need it" >&2
fi
