# shellcheck shell=bash disable=SC2034
# Sourced by build.sh and deploy/tests/systemd_test.sh: the Debian base image and the packages a binary needs.
#   llmc_base_image           makes (once) and prints localhost/llmc-base:bookworm-KEY, a debootstrapped Debian
#                             bookworm imported into podman; its root file system is cached as a tarball in
#                             $LLMC_IMAGE_CACHE (default /var/tmp/llmc-image-cache); a lock serialises parallel callers
#   llmc_runtime_deps BINARY  prints "pkg PACKAGE" for each Debian package that owns a library BINARY links and
#                             "cuda PATH" for each CUDA toolkit library; fails naming any other library
# Environment: LLMC_DEBIAN_MIRROR (default http://deb.debian.org/debian), LLMC_IMAGE_CACHE.
source "$(dirname "${BASH_SOURCE[0]}")/podman-env.sh"   # LLMC_RUN_FLAGS, LLMC_BUILD_FLAGS

LLMC_SUITE=bookworm
LLMC_MIRROR=${LLMC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
LLMC_CACHE=${LLMC_IMAGE_CACHE:-/var/tmp/llmc-image-cache}

llmc_log() { echo "${LLMC_LOG_NAME:-images}: $*" >&2; }
llmc_sha() { sha256sum | cut -c1-16; }

# _llmc_debootstrap ROOTFS: a minimal bookworm in ROOTFS (a fresh directory), with apt sources for the point and
# security updates, and no documentation, manual pages, translations or recommended packages.
_llmc_debootstrap() {
  local rootfs=$1 security=${LLMC_MIRROR%/debian}/debian-security
  case "$rootfs" in /?*/?*) ;; *) llmc_log "refusing to debootstrap into '$rootfs'"; return 1 ;; esac
  debootstrap --variant=minbase --include=ca-certificates "$LLMC_SUITE" "$rootfs" "$LLMC_MIRROR" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2; llmc_log "debootstrap failed"; return 1; }
  rm -f "$rootfs.log"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$LLMC_MIRROR" "$LLMC_SUITE" "$LLMC_MIRROR" "$LLMC_SUITE" "$security" "$LLMC_SUITE" >"$rootfs/etc/apt/sources.list"
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/llmc-excludes"
  printf '%s\n' 'APT::Install-Recommends "false";' 'APT::Install-Suggests "false";' >"$rootfs/etc/apt/apt.conf.d/90llmc"
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete
  rm -rf "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/usr/share/locale" "$rootfs/var/lib/apt/lists" \
    "$rootfs/var/cache/apt/archives" "$rootfs/var/log/apt"
  mkdir -p "$rootfs/var/lib/apt/lists/partial" "$rootfs/var/cache/apt/archives/partial"
  rm -f "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
}

llmc_base_image() {
  local key image
  key=$(echo "$LLMC_SUITE $LLMC_MIRROR base-v1" | llmc_sha)
  image="localhost/llmc-base:$LLMC_SUITE-$key"
  mkdir -p "$LLMC_CACHE"
  (
    flock 9
    podman image exists "$image" && exit 0
    tarball="$LLMC_CACHE/debian-$LLMC_SUITE-$key.tar"
    if [ ! -s "$tarball" ]; then
      llmc_log "debootstrap $LLMC_SUITE from $LLMC_MIRROR (once; cached in $tarball)"
      rootfs=$(mktemp -d "$LLMC_CACHE/rootfs.XXXXXX")
      trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
      _llmc_debootstrap "$rootfs" || exit 1
      tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
      mv "$tarball.tmp" "$tarball"
    fi
    llmc_log "importing $tarball as $image"
    podman import --quiet "$tarball" "$image" >/dev/null
  ) 9>"$LLMC_CACHE/.lock" || return 1
  echo "$image"
}

llmc_runtime_deps() {
  local bin=$1 line lib path real cand bad=0
  local -a libs=() cands=()
  local -A owner=()
  while read -r line; do
    case "$line" in
      *"=> not found"*)
        lib=${line%% *}
        case "$lib" in
          libcuda.so.*|libnvidia-ml.so.*) ;;  # the driver's libraries: mounted at run time on GPU hosts
          *) llmc_log "$bin: $lib is not found by ldd"; bad=1 ;;
        esac
        continue ;;
      *"=> "/*) path=${line#*=> }; path=${path%% (*} ;;
      /*) path=${line%% (*} ;;
      *) continue ;;  # linux-vdso
    esac
    real=$(readlink -f "$path")
    case "$real" in
      /usr/local/cuda/*|/usr/local/cuda-*/*)
        case "$(basename "$real")" in libcuda.so*) continue ;; esac
        echo "cuda $path"; continue ;;
    esac
    libs+=("$path")
    # dpkg knows a file by the path its package installed it at: /lib or /usr/lib, the link or its target
    cands+=("$path" "$real" "/usr$path" "${path#/usr}" "/usr$real" "${real#/usr}")
  done < <(ldd "$bin")
  # one dpkg query for all of them: "package:arch: /path" for each path it knows
  if [ ${#cands[@]} -gt 0 ]; then
    while IFS= read -r line; do
      case "$line" in diversion*) continue ;; esac
      owner["${line#*: }"]=${line%%:*}
    done < <(dpkg -S "${cands[@]}" 2>/dev/null | sort -u)
  fi
  for path in "${libs[@]}"; do
    real=$(readlink -f "$path")
    lib=""
    for cand in "$path" "$real" "/usr$path" "${path#/usr}" "/usr$real" "${real#/usr}"; do
      if [ -n "${owner[$cand]:-}" ]; then lib=${owner[$cand]}; break; fi
    done
    if [ -z "$lib" ]; then
      llmc_log "$bin: $path ($real) belongs to no Debian package and is not a CUDA library; cannot put it in an image"
      bad=1
    else
      echo "pkg $lib"
    fi
  done
  return $bad
}
