#include "engine/dist/communicator.h"

namespace llmc {

int SingleRank::rank() const { return 0; }
int SingleRank::size() const { return 1; }
absl::Status SingleRank::AllReduceSum(absl::Span<float>) { return absl::OkStatus(); }
absl::Status SingleRank::AllReduceSum(absl::Span<double>) { return absl::OkStatus(); }
absl::Status SingleRank::AllReduceMax(absl::Span<float>) { return absl::OkStatus(); }
absl::Status SingleRank::Broadcast(absl::Span<float>, int) { return absl::OkStatus(); }

}  // namespace llmc
