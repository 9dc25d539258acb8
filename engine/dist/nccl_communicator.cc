#include "engine/dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace llmc {

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  absl::Duration timeout;
  std::string broken;  // the first failure; non-empty: aborted and unusable
};

namespace {

std::string NcclError(ncclResult_t r) { return absl::StrCat(ncclGetErrorString(r), " (", static_cast<int>(r), ")"); }

// Waits until the communicator's pending work is done (stream idle, no NCCL error) or the deadline.
// Returns "" on success, else what went wrong.
std::string WaitFor(ncclComm_t comm, cudaStream_t stream, absl::Time deadline, bool check_stream) {
  absl::Duration pause = absl::Microseconds(20);
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclResult_t q = ncclCommGetAsyncError(comm, &async);
    if (q != ncclSuccess) return absl::StrCat("ncclCommGetAsyncError: ", NcclError(q));
    if (async != ncclSuccess && async != ncclInProgress) return absl::StrCat("NCCL: ", NcclError(async));
    if (async == ncclSuccess) {
      if (!check_stream) return "";
      cudaError_t s = cudaStreamQuery(stream);
      if (s == cudaSuccess) return "";
      if (s != cudaErrorNotReady) return absl::StrCat("CUDA: ", cudaGetErrorString(s));
    }
    if (absl::Now() >= deadline) return "no answer from every rank before the deadline";
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(2));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(const NcclOptions& o, RendezvousStore* store) {
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size)
    return absl::InvalidArgumentError(absl::StrCat("nccl: rank ", o.rank, " of ", o.size, ": need 0 <= rank < size"));
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || o.device < 0 || o.device >= devices)
    return absl::InvalidArgumentError(absl::StrCat("nccl: device ", o.device, " is not one of the ", devices, " GPUs here"));
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  if (cudaSetDevice(o.device) != cudaSuccess) return absl::UnavailableError(absl::StrCat("nccl: cannot use GPU ", o.device));

  ncclUniqueId id;
  const std::string key = absl::StrCat(o.prefix, ".unique-id");
  if (o.rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
      return absl::UnavailableError(absl::StrCat("nccl: ncclGetUniqueId: ", NcclError(r)));
    if (absl::Status s = store->Set(key, absl::string_view(id.internal, sizeof(id.internal))); !s.ok()) return s;
  } else {
    auto v = store->Get(key, o.timeout);
    if (!v.ok()) return absl::UnavailableError(absl::StrCat("nccl: rank ", o.rank, ": ", v.status().message()));
    if (v->size() != sizeof(id.internal))
      return absl::DataLossError(absl::StrCat("nccl: the unique id under '", key, "' has ", v->size(), " bytes"));
    std::memcpy(id.internal, v->data(), sizeof(id.internal));
  }

  auto impl = std::make_unique<Impl>();
  impl->device = o.device;
  impl->stream = static_cast<cudaStream_t>(o.stream);
  impl->timeout = o.timeout;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so forming the communicator can time out instead of blocking forever
  ncclResult_t r = ncclCommInitRankConfig(&impl->comm, o.size, id, o.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress)
    return absl::UnavailableError(absl::StrCat("nccl: ncclCommInitRankConfig (rank ", o.rank, " of ", o.size, "): ", NcclError(r)));
  if (std::string e = WaitFor(impl->comm, impl->stream, absl::Now() + o.timeout, /*check_stream=*/false); !e.empty()) {
    ncclCommAbort(impl->comm);
    return absl::UnavailableError(absl::StrCat("nccl: rank ", o.rank, " of ", o.size, " could not form the communicator: ", e));
  }
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(std::move(impl)));
  c->rank_ = o.rank;
  c->size_ = o.size;
  return c;
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NcclCommunicator::~NcclCommunicator() {
  if (!impl_ || !impl_->comm) return;
  cudaSetDevice(impl_->device);
  if (impl_->broken.empty()) {
    ncclCommFinalize(impl_->comm);
    if (!WaitFor(impl_->comm, impl_->stream, absl::Now() + absl::Seconds(10), false).empty()) {
      ncclCommAbort(impl_->comm);
      return;
    }
    ncclCommDestroy(impl_->comm);
  }
}

// Enqueues one collective, then waits for it within the deadline; on failure aborts the communicator.
#define LLMC_NCCL_RUN(what, call)                                                                               \
  do {                                                                                                          \
    if (!impl_->broken.empty()) return absl::AbortedError(absl::StrCat("nccl: unusable after: ", impl_->broken)); \
    if (data.empty()) return absl::OkStatus();                                                                  \
    cudaSetDevice(impl_->device);                                                                               \
    ncclResult_t r_ = (call);                                                                                   \
    std::string e_ = (r_ != ncclSuccess && r_ != ncclInProgress)                                                \
                         ? absl::StrCat("enqueue: ", NcclError(r_))                                             \
                         : WaitFor(impl_->comm, impl_->stream, absl::Now() + impl_->timeout, true);             \
    if (!e_.empty()) {                                                                                          \
      ncclCommAbort(impl_->comm);                                                                               \
      impl_->broken = absl::StrCat(what, " failed on rank ", rank_, " of ", size_, ": ", e_);                   \
      return absl::AbortedError(absl::StrCat("nccl: ", impl_->broken, "; the ranks must be formed again"));      \
    }                                                                                                           \
    return absl::OkStatus();                                                                                    \
  } while (0)

absl::Status NcclCommunicator::AllReduceSum(absl::Span<float> data) {
  LLMC_NCCL_RUN("all-reduce (sum)",
                ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat32, ncclSum, impl_->comm, impl_->stream));
}
absl::Status NcclCommunicator::AllReduceSum(absl::Span<double> data) {
  LLMC_NCCL_RUN("all-reduce (sum)",
                ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat64, ncclSum, impl_->comm, impl_->stream));
}
absl::Status NcclCommunicator::AllReduceMax(absl::Span<float> data) {
  LLMC_NCCL_RUN("all-reduce (max)",
                ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat32, ncclMax, impl_->comm, impl_->stream));
}
absl::Status NcclCommunicator::Broadcast(absl::Span<float> data, int root) {
  if (root < 0 || root >= size_)
    return absl::InvalidArgumentError(absl::StrCat("nccl: broadcast root ", root, " is not a rank of ", size_));
  LLMC_NCCL_RUN("broadcast",
                ncclBroadcast(data.data(), data.data(), data.size(), ncclFloat32, root, impl_->comm, impl_->stream));
}

#undef LLMC_NCCL_RUN

}  // namespace llmc
