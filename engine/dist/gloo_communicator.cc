#include "engine/dist/gloo_communicator.h"

#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <exception>
#include <stdexcept>

#include "absl/strings/str_cat.h"

namespace llmc {
namespace {

// Gloo's store interface over ours. Gloo calls these during connectFullMesh; it expects exceptions on failure.
class StoreAdapter final : public gloo::rendezvous::Store {
 public:
  StoreAdapter(RendezvousStore* store, std::string prefix, absl::Duration timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status s = store_->Set(Key(key), absl::string_view(data.data(), data.size()));
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = store_->Get(Key(key), timeout_);
    if (!v.ok()) throw std::runtime_error(std::string(v.status().message()));
    return std::vector<char>(v->begin(), v->end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, absl::ToChronoMilliseconds(timeout_)); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    for (const auto& k : keys) {
      auto v = store_->Get(Key(k), absl::FromChrono(timeout));
      if (!v.ok()) throw std::runtime_error(std::string(v.status().message()));
    }
  }

 private:
  // Gloo's keys are rank numbers; ours carry the job's prefix and stay file-name safe.
  std::string Key(const std::string& k) const { return absl::StrCat(prefix_, ".", k); }
  RendezvousStore* store_;
  const std::string prefix_;
  const absl::Duration timeout_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(const GlooOptions& o,
                                                                          RendezvousStore* store) {
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size)
    return absl::InvalidArgumentError(absl::StrCat("gloo: rank ", o.rank, " of ", o.size, ": need 0 <= rank < size"));
  if (o.timeout <= absl::ZeroDuration()) return absl::InvalidArgumentError("gloo: the timeout must be positive");
  const auto timeout = absl::ToChronoMilliseconds(o.timeout);
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(o.rank, o.size);
    context->setTimeout(timeout);
    StoreAdapter adapter(store, o.prefix, o.timeout);
    context->connectFullMesh(adapter, device);
    return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(o.rank, o.size, timeout, std::move(context)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo: rank ", o.rank, " of ", o.size, " on ", o.hostname,
                                               " could not connect to the other ranks: ", e.what()));
  }
}

GlooCommunicator::GlooCommunicator(int rank, int size, std::chrono::milliseconds timeout,
                                   std::shared_ptr<gloo::Context> context)
    : rank_(rank), size_(size), timeout_(timeout), context_(std::move(context)) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::Failed(const char* what, const std::string& cause) {
  if (broken_.empty()) broken_ = absl::StrCat(what, " failed on rank ", rank_, " of ", size_, ": ", cause);
  return absl::AbortedError(absl::StrCat("gloo: ", broken_, "; the ranks must be formed again"));
}

template <typename T>
absl::Status GlooCommunicator::AllReduce(absl::Span<T> data, void (*fn)(void*, const void*, const void*, size_t),
                                         const char* what) {
  if (!broken_.empty()) return absl::AbortedError(absl::StrCat("gloo: unusable after: ", broken_));
  if (size_ == 1 || data.empty()) return absl::OkStatus();
  try {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(data.data(), data.size());
    opts.setReduceFunction(fn);
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  } catch (const std::exception& e) {
    return Failed(what, e.what());
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::AllReduceSum(absl::Span<float> data) {
  return AllReduce(data, &gloo::sum<float>, "all-reduce (sum)");
}
absl::Status GlooCommunicator::AllReduceSum(absl::Span<double> data) {
  return AllReduce(data, &gloo::sum<double>, "all-reduce (sum)");
}
absl::Status GlooCommunicator::AllReduceMax(absl::Span<float> data) {
  return AllReduce(data, &gloo::max<float>, "all-reduce (max)");
}

template <typename T>
absl::Status GlooCommunicator::BroadcastT(absl::Span<T> data, int root) {
  if (root < 0 || root >= size_)
    return absl::InvalidArgumentError(absl::StrCat("gloo: broadcast root ", root, " is not a rank of ", size_));
  if (!broken_.empty()) return absl::AbortedError(absl::StrCat("gloo: unusable after: ", broken_));
  if (size_ == 1 || data.empty()) return absl::OkStatus();
  try {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(data.data(), data.size());
    opts.setRoot(root);
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::broadcast(opts);
  } catch (const std::exception& e) {
    return Failed("broadcast", e.what());
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::Broadcast(absl::Span<float> data, int root) { return BroadcastT(data, root); }
absl::Status GlooCommunicator::Broadcast(absl::Span<uint8_t> data, int root) { return BroadcastT(data, root); }

}  // namespace llmc
