// The one "run these on N threads, first error wins" loop of llmc (uploads, downloads, multipart copies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"

namespace llmc {

// Runs fn(i) for every i in [0, n) on min(threads, n) threads (at least one), each taking the next index.
// After the first error no index is started; the calls in flight finish. Returns the first error, or OK.
// fn is called concurrently from several threads. threads <= 1 runs everything on the calling thread.
absl::Status ParallelFor(int64_t n, int threads, const std::function<absl::Status(int64_t i)>& fn);

// memcpy(dst, src, bytes) in pieces of at least 8 MiB on up to `threads` threads (hardware concurrency for 0): a
// large copy, such as a weight out of a pinned staging buffer, at the memory bandwidth rather than one core's.
// The ranges must not overlap.
void ParallelCopy(void* dst, const void* src, size_t bytes, int threads = 0);

}  // namespace llmc
