// Status helpers used across llmc (Abseil 20220623 has no RETURN_IF_ERROR / ASSIGN_OR_RETURN).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LLMC_CONCAT_INNER_(a, b) a##b
#define LLMC_CONCAT_(a, b) LLMC_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define LLMC_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::absl::Status llmc_status_ = (expr);          \
    if (!llmc_status_.ok()) return llmc_status_;   \
  } while (0)

// `LLMC_ASSIGN_OR_RETURN(auto x, Foo());` assigns the value of a StatusOr or returns its status.
#define LLMC_ASSIGN_OR_RETURN(lhs, expr) \
  LLMC_ASSIGN_OR_RETURN_IMPL_(LLMC_CONCAT_(llmc_statusor_, __LINE__), lhs, expr)
#define LLMC_ASSIGN_OR_RETURN_IMPL_(var, lhs, expr) \
  auto var = (expr);                                \
  if (!var.ok()) return std::move(var).status();    \
  lhs = std::move(var).value()
