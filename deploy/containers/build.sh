#!/usr/bin/env bash
# Builds the llmc container images from a build directory, with buildah, on a Debian bookworm base made here
# with debootstrap (no image registry is needed):
#
#   deploy/containers/build.sh BUILD_DIR [--tag TAG]
#
#   localhost/llmc-server:TAG   llmc-server (coordinator); user 10001, volume /var/lib/llmc, ports 7443 and 7480
#   localhost/llmc-worker:TAG   llmc-worker, plus the CUDA libraries it links when BUILD_DIR was built with CUDA
#
# TAG defaults to the version `BUILD_DIR/bin/llmc --version` prints. The shared libraries each binary links are
# installed with apt from the Debian packages that own them on this machine (found with ldd and dpkg -S);
# libraries under /usr/local/cuda (the CUDA toolkit) are copied, the driver (libcuda.so.1) is not: the NVIDIA
# container toolkit mounts it at run time. A library that is neither is an error.
#
# Caches, so that a second run takes seconds: the debootstrap root file system as a tarball in
# $LLMC_IMAGE_CACHE (default /var/tmp/llmc-image-cache) and the images localhost/llmc-base:KEY (Debian) and
# localhost/llmc-runtime:KEY (Debian + one binary's packages + the llmc user), KEY a hash of what went in.
#
# Environment: LLMC_DEBIAN_MIRROR (default http://deb.debian.org/debian), LLMC_OCI_RUNTIME (default runc when
# installed), LLMC_IMAGE_CACHE, LLMC_STRIP=0 (keep the binaries' debug information; by default it is stripped).
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR [--tag TAG]" >&2; exit 2; }
[ $# -ge 1 ] || usage
BUILD_DIR=$(cd "$1" && pwd)
shift
TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    *) usage ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN="$BUILD_DIR/bin"
for b in llmc-server llmc-worker; do
  [ -x "$BIN/$b" ] || { echo "build.sh: $BIN/$b is missing; build llmc first (scripts/build.sh)" >&2; exit 1; }
done
for t in buildah podman debootstrap dpkg ldd; do
  command -v "$t" >/dev/null || { echo "build.sh: $t is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build.sh: run as root (debootstrap and rootful buildah)" >&2; exit 1; }

VERSION=$("$BIN/llmc" --version 2>/dev/null | awk '{print $2}') || true
VERSION=${VERSION:-0.0.0}
TAG=${TAG:-$VERSION}
REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
# shellcheck disable=SC2034  # read by images.sh
LLMC_LOG_NAME=build.sh
source "$HERE/images.sh"   # llmc_base_image, llmc_runtime_deps; LLMC_BUILD_FLAGS (podman-env.sh)
log() { llmc_log "$@"; }

BASE_IMAGE=$(llmc_base_image)

# --- one image -----------------------------------------------------------------------------------------------------
# build_image NAME CONTAINERFILE BINARY [EXTRA_PACKAGE...]: a runtime image (base + packages + user, cached by its
# inputs), then the image itself (binary and files on top).
build_image() {
  local name=$1 containerfile=$2 binary=$3 deps packages cuda_libs runtime_key runtime ctx lib
  shift 3
  deps=$(llmc_runtime_deps "$BIN/$binary") || { log "cannot build $name"; exit 1; }
  packages=$( { awk '$1 == "pkg" {print $2}' <<<"$deps"; printf '%s\n' "$@"; } | sed '/^$/d' | sort -u | tr '\n' ' ')
  cuda_libs=$(awk '$1 == "cuda" {print $2}' <<<"$deps" | sort -u)
  runtime_key=$( { echo "$BASE_IMAGE"; echo "$packages"; cat "$HERE/Containerfile.runtime"; } | llmc_sha)
  runtime="localhost/llmc-runtime:$runtime_key"
  if ! podman image exists "$runtime"; then
    log "$name: installing $packages"
    buildah build --quiet $LLMC_BUILD_FLAGS --network host --format docker \
      --build-arg BASE="$BASE_IMAGE" --build-arg PACKAGES="$packages" \
      -f "$HERE/Containerfile.runtime" -t "$runtime" "$HERE" >/dev/null
  fi
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin" "$ctx/cuda" "$ctx/empty" "$ctx/web"
  # the web console's files (llmc-server serves them from BIN/../share/llmc/web), when the build made them
  if [ -f "$BIN/../share/llmc/web/index.html" ]; then cp -r "$BIN/../share/llmc/web/." "$ctx/web/"; fi
  # without DWARF debug sections (symbols stay, for backtraces): the images get ~60 MB smaller per binary
  if [ "${LLMC_STRIP:-1}" = 1 ] && command -v objcopy >/dev/null; then
    objcopy --strip-debug "$BIN/$binary" "$ctx/bin/$binary"
  else
    cp "$BIN/$binary" "$ctx/bin/"
  fi
  cp "$HERE"/llmc-server-entrypoint "$HERE"/llmc-server-healthcheck "$ctx/bin/"
  local has_cuda=no
  for lib in $cuda_libs; do
    # the soname the binary asks for, with the bytes of the file it points to
    cp -L "$lib" "$ctx/cuda/$(basename "$lib")"
    has_cuda=yes
  done
  log "$name: localhost/$name:$TAG (CUDA libraries: $has_cuda${cuda_libs:+: $(echo $cuda_libs | xargs -n1 basename | tr '\n' ' ')})"
  local old
  old=$(podman image inspect --format '{{.Id}}' "localhost/$name:$TAG" 2>/dev/null || true)
  buildah build --quiet $LLMC_BUILD_FLAGS --network none --format docker \
    --build-arg RUNTIME="$runtime" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    --build-arg CUDA="$has_cuda" \
    -f "$HERE/$containerfile" -t "localhost/$name:$TAG" "$ctx" >/dev/null
  rm -rf "$ctx"
  # the image this tag named before, unless something else still uses it
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "localhost/$name:$TAG")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
}

# sqlite3: online backups of the job store and token maintenance (docs/operations.md)
build_image llmc-server Containerfile.server llmc-server sqlite3
build_image llmc-worker Containerfile.worker llmc-worker
log "done: localhost/llmc-server:$TAG localhost/llmc-worker:$TAG"
