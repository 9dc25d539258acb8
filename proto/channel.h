// What every client of a coordinator shares (the `llmc` subcommands, llmc-worker, tests, the load test): the
// channel (TLS when LLMC_CA_CERT or --ca-cert is given), the bearer token, and status conversion.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "llmc/v1/compression.grpc.pb.h"

namespace llmc::rpc {

inline constexpr char kDefaultServer[] = "127.0.0.1:7443";

// Rendezvous relay limits (worker.proto, RendezvousSet): keys are IsPortableName(key, kMaxRendezvousKeyLength)
// (common/util.h), values at most kMaxRendezvousValueBytes.
inline constexpr size_t kMaxRendezvousKeyLength = 200;
inline constexpr size_t kMaxRendezvousValueBytes = 64 * 1024;

// Whether a gang rank's failure (JobFinished.code of a job on several ranks) says that the gang broke rather than
// the job: a collective aborted because another rank died or stopped (ABORTED), the ranks could not meet or a
// peer was unreachable (UNAVAILABLE, DEADLINE_EXCEEDED). The coordinator retries such an attempt like a lost worker
// and rank 0 keeps its staging output for the resume; any other code fails the job.
inline bool IsGangFailure(absl::StatusCode code) {
  return code == absl::StatusCode::kAborted || code == absl::StatusCode::kUnavailable ||
         code == absl::StatusCode::kDeadlineExceeded;
}

// `server` ("" : $LLMC_SERVER, else 127.0.0.1:7443); TLS with the PEM roots in `ca_cert` when not empty.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& server, const std::string& ca_cert = "");
std::string ResolveServer(const std::string& server);
// `token` ("" : $LLMC_TOKEN).
std::string ResolveToken(const std::string& token);
// Sets `authorization: Bearer <token>` when token is not empty.
void AddAuth(grpc::ClientContext* ctx, const std::string& token);
absl::Status FromGrpc(const grpc::Status& s);

// Reads a token file (first line, whitespace trimmed): the worker token and the tokens an operator hands out.
// Errors name the file.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace llmc::rpc
