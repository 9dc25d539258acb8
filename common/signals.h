// Process signals for the daemons (llmc-server, llmc-worker, `llmc serve`): termination signals are taken
// synchronously with sigwait/sigtimedwait by one thread instead of by asynchronous handlers.
#pragma once

#include <signal.h>

#include <initializer_list>

namespace llmc {

// Blocks SIGINT and SIGTERM, and any `extra` signals (e.g. SIGCHLD), in the calling thread, and ignores SIGPIPE
// (a closed socket is an error return, not a death). Call it in main() before any thread starts, so every
// thread inherits the mask and only the thread that waits receives them. Returns the set to wait on.
sigset_t BlockTerminationSignals(std::initializer_list<int> extra = {});

}  // namespace llmc
