// What the ranks of one job exchange inside the sequential pipeline (docs/distributed.md): every rank calibrates a
// block on its slice of the samples, the statistics are reduced before any solve, each module is solved by one
// owner rank and its result broadcast, and rank 0 writes the output.
//
// Every function here is a collective: every rank of `comm` calls it with the same arguments (shapes, owners,
// roots) in the same order, and it fails (ABORTED) when a rank is lost. With one rank each is a no-op or a copy.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/calib/block_backend.h"
#include "engine/calib/calib_hooks.h"
#include "engine/calib/calib_stats.h"
#include "engine/dist/communicator.h"
#include "engine/model/decoder_block.h"

namespace llmc {

// Sums (Hessians, Wanda's sums of squares, AWQ's channel sums, token and sample counts) and maxima (SmoothQuant's
// channel maxima, activation ranges, kv cache ranges, the non-finite flag) of one calibration pass over the ranks,
// so every rank holds the statistics of all samples. Statistics a backend keeps in its own memory (device
// Hessians) are reduced by `backend`. With `gather_captures`, AWQ's captured inputs (each rank captures its share)
// are concatenated in rank order (the sequences of the first captured length) so every rank holds the same.
// Input groups are visited in name order; every rank has the same groups (each runs the block on >= 1 sample).
absl::Status ReduceCalibStats(Communicator* comm, BlockBackend* backend, CalibHooks* hooks, bool gather_captures);

// Every rank's `block` becomes `root`'s: the Linear weights and biases, and the norms.
absl::Status SyncBlock(Communicator* comm, DecoderBlock* block, int root);

// The rank that solves each module: greedy by cost (the most expensive module first, to the least loaded rank;
// ties to the earlier module and the lower rank), so every rank computes the same assignment and the ranks' total
// costs are balanced.
std::vector<int> AssignOwners(const std::vector<double>& costs, int ranks);

// The solve cost of a module: GPTQ and SparseGPT work on rows x cols^2 (plus the cols^3 factorization), the others
// on rows x cols.
double SolveCost(int64_t rows, int64_t cols, bool second_order);

// One module's solve result as its owner broadcasts it: the compressed (or pruned) values the block propagates
// with, the checkpoint tensors it writes (rank 0 emits them), a mask (pruning) and its report entry.
struct ModuleResult {
  std::vector<float> weight;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> tensors;
  std::vector<uint8_t> mask;
  nlohmann::json info;
  std::vector<std::string> warnings;
};

// From `root` to all: every rank's `*result` becomes root's. DATA_LOSS when the bytes received do not parse.
absl::Status BroadcastModuleResult(Communicator* comm, ModuleResult* result, int root);

// Every rank's status to every rank: OK when all are OK, else the first failure in rank order, naming its rank.
// Ranks call it after work that may fail on some of them, so none waits in a later collective for a rank that
// stopped, and every rank reports the real cause.
absl::Status AgreeOnStatus(Communicator* comm, const absl::Status& mine);

// Every rank's `mine` to every rank, in rank order.
absl::StatusOr<std::vector<nlohmann::json>> AllGatherJson(Communicator* comm, const nlohmann::json& mine);

}  // namespace llmc
