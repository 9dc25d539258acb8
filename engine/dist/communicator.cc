#include "engine/dist/communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/util.h"

namespace llmc {

int SingleRank::rank() const { return 0; }
int SingleRank::size() const { return 1; }
absl::Status SingleRank::AllReduceSum(absl::Span<float>) { return absl::OkStatus(); }
absl::Status SingleRank::AllReduceSum(absl::Span<double>) { return absl::OkStatus(); }
absl::Status SingleRank::AllReduceMax(absl::Span<float>) { return absl::OkStatus(); }
absl::Status SingleRank::Broadcast(absl::Span<float>, int) { return absl::OkStatus(); }
absl::Status SingleRank::Broadcast(absl::Span<uint8_t>, int) { return absl::OkStatus(); }

template <typename F>
absl::Status MeteredCommunicator::Count(size_t bytes, F&& f) {
  const double t0 = NowSeconds();
  absl::Status s = f();
  stats_.seconds += NowSeconds() - t0;
  stats_.bytes += static_cast<int64_t>(bytes);
  ++stats_.calls;
  return s;
}
absl::Status MeteredCommunicator::AllReduceSum(absl::Span<float> d) {
  return Count(d.size() * sizeof(float), [&] { return inner_->AllReduceSum(d); });
}
absl::Status MeteredCommunicator::AllReduceSum(absl::Span<double> d) {
  return Count(d.size() * sizeof(double), [&] { return inner_->AllReduceSum(d); });
}
absl::Status MeteredCommunicator::AllReduceMax(absl::Span<float> d) {
  return Count(d.size() * sizeof(float), [&] { return inner_->AllReduceMax(d); });
}
absl::Status MeteredCommunicator::Broadcast(absl::Span<float> d, int root) {
  return Count(d.size() * sizeof(float), [&] { return inner_->Broadcast(d, root); });
}
absl::Status MeteredCommunicator::Broadcast(absl::Span<uint8_t> d, int root) {
  return Count(d.size(), [&] { return inner_->Broadcast(d, root); });
}

absl::Status BroadcastInt(Communicator* comm, int64_t* value, int root) {
  if (comm->size() == 1) return absl::OkStatus();
  uint8_t b[sizeof(int64_t)];
  std::memcpy(b, value, sizeof(b));
  if (absl::Status s = comm->Broadcast(absl::MakeSpan(b, sizeof(b)), root); !s.ok()) return s;
  std::memcpy(value, b, sizeof(b));
  return absl::OkStatus();
}

absl::Status BroadcastString(Communicator* comm, std::string* data, int root, int64_t max_bytes) {
  if (comm->size() == 1) return absl::OkStatus();
  int64_t n = static_cast<int64_t>(data->size());
  if (absl::Status s = BroadcastInt(comm, &n, root); !s.ok()) return s;
  if (n < 0 || n > max_bytes)
    return absl::DataLossError(absl::StrCat("broadcast from rank ", root, " announced ", n, " bytes (at most ", max_bytes,
                                            "); the ranks disagree"));
  if (comm->rank() != root) data->resize(static_cast<size_t>(n));
  return comm->Broadcast(absl::MakeSpan(reinterpret_cast<uint8_t*>(data->data()), data->size()), root);
}

}  // namespace llmc
