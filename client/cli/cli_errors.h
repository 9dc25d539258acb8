// How every llmc subcommand reports a failure: one line on stderr, a non-zero exit status.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"

namespace llmc::cli {

// Prints "llmc: error: MESSAGE" (newlines folded) and returns the exit status: 130 when cancelled, else 1.
inline int Fail(const absl::Status& s) {
  std::string msg(s.message());
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "llmc: error: %s\n", msg.c_str());
  return s.code() == absl::StatusCode::kCancelled ? 130 : 1;
}

}  // namespace llmc::cli
