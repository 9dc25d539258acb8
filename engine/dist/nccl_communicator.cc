#include "engine/dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"

namespace llmc {

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  absl::Duration timeout;
  std::string broken;  // the first failure; non-empty: aborted and unusable
  void* scratch = nullptr;  // device staging for host buffers
  size_t scratch_bytes = 0;
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
  if (impl_->scratch) cudaFree(impl_->scratch);
  if (impl_->broken.empty()) {
    ncclCommFinalize(impl_->comm);
    if (!WaitFor(impl_->comm, impl_->stream, absl::Now() + absl::Seconds(10), false).empty()) {
      ncclCommAbort(impl_->comm);
      return;
    }
    ncclCommDestroy(impl_->comm);
  }
}

// Enqueues one collective on `data` (device or host memory, `bytes` long), then waits for it within the deadline;
// on failure aborts the communicator. Host buffers go through a device scratch buffer.
absl::Status NcclCommunicator::Run(const char* what, void* data, size_t bytes,
                                   const std::function<int(void* buf)>& enqueue) {
  if (!impl_->broken.empty()) return absl::AbortedError(absl::StrCat("nccl: unusable after: ", impl_->broken));
  if (bytes == 0) return absl::OkStatus();
  cudaSetDevice(impl_->device);
  cudaPointerAttributes attr{};
  const bool on_device = cudaPointerGetAttributes(&attr, data) == cudaSuccess &&
                         (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged);
  cudaGetLastError();  // a host pointer may leave an error behind on older runtimes
  void* buf = data;
  std::string e;
  if (!on_device) {
    if (impl_->scratch_bytes < bytes) {
      if (impl_->scratch) cudaFree(impl_->scratch);
      impl_->scratch = nullptr;
      impl_->scratch_bytes = 0;
      if (cudaMalloc(&impl_->scratch, bytes) != cudaSuccess)
        return absl::ResourceExhaustedError(absl::StrCat("nccl: no device memory to stage ", bytes, " bytes of ", what));
      impl_->scratch_bytes = bytes;
    }
    buf = impl_->scratch;
    if (cudaMemcpyAsync(buf, data, bytes, cudaMemcpyHostToDevice, impl_->stream) != cudaSuccess)
      e = "staging the host buffer on the device failed";
  }
  if (e.empty()) {
    auto r = static_cast<ncclResult_t>(enqueue(buf));
    e = (r != ncclSuccess && r != ncclInProgress) ? absl::StrCat("enqueue: ", NcclError(r))
                                                  : WaitFor(impl_->comm, impl_->stream, absl::Now() + impl_->timeout, true);
  }
  if (e.empty() && !on_device &&
      (cudaMemcpyAsync(data, buf, bytes, cudaMemcpyDeviceToHost, impl_->stream) != cudaSuccess ||
       cudaStreamSynchronize(impl_->stream) != cudaSuccess))
    e = "copying the result back to the host failed";
  if (!e.empty()) {
    ncclCommAbort(impl_->comm);
    impl_->broken = absl::StrCat(what, " failed on rank ", rank_, " of ", size_, ": ", e);
    return absl::AbortedError(absl::StrCat("nccl: ", impl_->broken, "; the ranks must be formed again"));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSum(absl::Span<float> d) {
  return Run("all-reduce (sum)", d.data(), d.size() * sizeof(float), [&](void* b) {
    return static_cast<int>(ncclAllReduce(b, b, d.size(), ncclFloat32, ncclSum, impl_->comm, impl_->stream));
  });
}
absl::Status NcclCommunicator::AllReduceSum(absl::Span<double> d) {
  return Run("all-reduce (sum)", d.data(), d.size() * sizeof(double), [&](void* b) {
    return static_cast<int>(ncclAllReduce(b, b, d.size(), ncclFloat64, ncclSum, impl_->comm, impl_->stream));
  });
}
absl::Status NcclCommunicator::AllReduceMax(absl::Span<float> d) {
  return Run("all-reduce (max)", d.data(), d.size() * sizeof(float), [&](void* b) {
    return static_cast<int>(ncclAllReduce(b, b, d.size(), ncclFloat32, ncclMax, impl_->comm, impl_->stream));
  });
}
absl::Status NcclCommunicator::Broadcast(absl::Span<float> d, int root) {
  if (root < 0 || root >= size_)
    return absl::InvalidArgumentError(absl::StrCat("nccl: broadcast root ", root, " is not a rank of ", size_));
  return Run("broadcast", d.data(), d.size() * sizeof(float), [&](void* b) {
    return static_cast<int>(ncclBroadcast(b, b, d.size(), ncclFloat32, root, impl_->comm, impl_->stream));
  });
}
absl::Status NcclCommunicator::Broadcast(absl::Span<uint8_t> d, int root) {
  if (root < 0 || root >= size_)
    return absl::InvalidArgumentError(absl::StrCat("nccl: broadcast root ", root, " is not a rank of ", size_));
  return Run("broadcast", d.data(), d.size(), [&](void* b) {
    return static_cast<int>(ncclBroadcast(b, b, d.size(), ncclUint8, root, impl_->comm, impl_->stream));
  });
}

}  // namespace llmc
