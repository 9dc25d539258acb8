#!/usr/bin/env bash
# Checks the locking annotations with clang's thread-safety analysis (docs/architecture.md, "Thread safety").
# Configures a clang build directory (${TSA_BUILD_DIR:-build-clang}: CUDA, tests and benchmarks off),
# generates the protobuf headers, then compiles every source of the targets below with -fsyntax-only and the
# clang build's own flags (compile_commands.json), which include -Wthread-safety -Werror=thread-safety: any
# thread-safety finding fails the file. Syntax-only is enough (the analysis runs in the front end); it skips
# code generation and the parts of the engine that llmc_worker links but this check does not need. Last, a
# known violation (tests/thread_safety/violation.cc) must be rejected with a thread-safety error, so the check
# cannot pass because the analysis stopped looking. scripts/test.sh runs this after the main build.
#   scripts/thread_safety.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TSA_BUILD_DIR:-build-clang}
# The service (coordinator, worker, storage, common), and llmc_engine for its annotated SafetensorsWriter.
TARGETS=(llmc_common llmc_storage llmc_rpc llmc_server llmc-server llmc_worker llmc-worker llmc_engine)
start=$SECONDS

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMC_WITH_CUDA=OFF -DLLMC_BUILD_TESTS=OFF -DLLMC_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="-Wthread-safety -Werror=thread-safety" >/dev/null
# The generated protobuf/gRPC headers the sources include (the only build step they need).
mapfile -t generated < <(ninja -C "$BUILD" -t targets all | sed -n 's/^\(.*\.pb\.h\): .*/\1/p')
ninja -C "$BUILD" "${generated[@]}" >/dev/null

python3 - "$BUILD" "${TARGETS[@]}" <<'EOF'
import concurrent.futures, json, os, shlex, subprocess, sys

build, targets = sys.argv[1], set(sys.argv[2:])
root = os.getcwd()
checks, seen, template = [], set(), None
for entry in json.load(open(os.path.join(build, "compile_commands.json"))):
    args = shlex.split(entry["command"])
    i = args.index("-o")
    target = args[i + 1].split("/CMakeFiles/")[-1].split(".dir/")[0]  # <dir>/CMakeFiles/<target>.dir/<file>.o
    del args[i:i + 2]
    args = [a for a in args if a != "-g"] + ["-fsyntax-only"]
    if target == "llmc_common" and template is None:
        template = (args, entry["file"], entry["directory"])
    if target in targets:
        checks.append((entry["file"], args, entry["directory"]))
        seen.add(target)
if seen != targets or template is None:
    sys.exit(f"llmc thread-safety: error: {build}/compile_commands.json has no sources of "
             f"{sorted(targets - seen)}")

def run(check):
    path, args, cwd = check
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return path, r.returncode, r.stderr

failed = 0
with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
    for path, rc, err in pool.map(run, checks):
        if rc != 0:  # other clang warnings of passing files are not this check's business
            failed += 1
            sys.stderr.write(err)
            print(f"llmc thread-safety: FAILED {os.path.relpath(path, root)}", file=sys.stderr)
if failed:
    sys.exit(f"llmc thread-safety: error: {failed} of {len(checks)} files fail (clang's messages above); "
             "for a thread-safety error, take the lock or mark the function ABSL_EXCLUSIVE_LOCKS_REQUIRED")

# The negative test: compiled like a source of llmc_common, it must fail with a thread-safety error.
args, source, cwd = template
violation = os.path.join(root, "tests/thread_safety/violation.cc")
r = subprocess.run([violation if a == source else a for a in args], cwd=cwd, capture_output=True, text=True)
expected = "requires holding mutex 'mu_'"
if r.returncode == 0 or expected not in r.stderr or "-Werror,-Wthread-safety" not in r.stderr:
    sys.stderr.write(r.stderr)
    sys.exit(f"llmc thread-safety: error: {os.path.relpath(violation, root)} must fail with \"{expected}\" "
             f"(exit {r.returncode}); the analysis is not checking")
print(f"llmc thread-safety: {len(checks)} files pass; the known violation is rejected")
EOF
echo "llmc thread-safety: done in $((SECONDS - start)) s"
