// Child processes for the service's multi-process tests: start a binary with arguments (stdout and stderr to a
// log file), signal it by pid, wait for it with a timeout.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace llmc::testing {

// Starts argv[0] with argv; output appended to `log`. The child gets SIGKILL if the test process dies.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log, const std::vector<std::string>& env = {});
// Waits up to `timeout_ms` for `pid` to exit; returns its wait status, or -1 on timeout.
int WaitFor(pid_t pid, int timeout_ms);
// Sends `sig`, waits up to timeout_ms, then SIGKILLs and reaps. Returns the wait status.
int Stop(pid_t pid, int sig, int timeout_ms);
// Runs argv to completion; returns the exit status (or -1) and its stdout in *out.
int RunCapture(const std::vector<std::string>& argv, std::string* out, const std::vector<std::string>& env = {});
// Whether `pid` runs (a zombie does not).
bool Alive(pid_t pid);
// A TCP port on 127.0.0.1 that was free a moment ago (for a child server to listen on); 0 if none was found.
int FreePort();

}  // namespace llmc::testing
