# shellcheck shell=bash disable=SC2034
# Sourced by build.sh and the container test: flags for buildah and podman on hosts where podman's defaults fail.
#   LLMC_OCI_RUNTIME   OCI runtime (default: runc when installed; crun fails on some hosts, e.g. under gVisor)
#   LLMC_RUN_FLAGS     flags for `podman run`: the runtime, and open-file and process limits that the container
#                      runtime can set here. podman asks for 1048576 open files and processes by default; where
#                      that is above the caller's hard limit (or, for processes, above kernel.pid_max under gVisor),
#                      runc cannot set it and the container does not start.
#   LLMC_BUILD_FLAGS   the same for `buildah build` (its RUN steps start containers too)
_llmc_min() {
  local m=1048576 v
  for v in "$@"; do
    case "$v" in ''|unlimited) continue ;; esac
    [ "$v" -lt "$m" ] && m=$v
  done
  echo "$m"
}
_llmc_nofile=$(_llmc_min "$(ulimit -Hn)")
_llmc_nproc=$(_llmc_min "$(ulimit -Hu)" "$(cat /proc/sys/kernel/pid_max 2>/dev/null)")
if [ -z "${LLMC_OCI_RUNTIME:-}" ] && command -v runc >/dev/null; then LLMC_OCI_RUNTIME=runc; fi
LLMC_RUN_FLAGS="${LLMC_OCI_RUNTIME:+--runtime $LLMC_OCI_RUNTIME} --ulimit nofile=$_llmc_nofile:$_llmc_nofile --ulimit nproc=$_llmc_nproc:$_llmc_nproc"
LLMC_BUILD_FLAGS=$LLMC_RUN_FLAGS
unset _llmc_nofile _llmc_nproc
