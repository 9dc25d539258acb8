#include "engine/calib/cuda_block_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/block_view.h"
#include "engine/algo/cuda_gptq.h"
#include "engine/backend/cuda/model_kernels.h"
#include "engine/calib/cuda_awq_loss.h"
#include "engine/model/cuda_block_runner.h"
#include "engine/model/cuda_context.h"

namespace llmc {
namespace {

// An input group's X^T X on the device, scaled as it accumulates (H = 2/N sum x x^T), and its sample count.
struct CudaHessian final : DeviceHessian {
  DeviceArray<float> xtx;  // [cols, cols]
  int64_t cols = 0;
  int64_t samples = 0;
};

// Calibration on the GPU: Hessian sums accumulate on the device (cuBLAS SYRK); every other statistic goes through
// the host hooks (a copy of the input per call), which only the smoothing and static-scale algorithms need.
class DeviceCalibHooks : public CudaLinearHooks {
 public:
  // `alpha` scales every X^T X added (2/N for the Hessian of N calibration samples).
  DeviceCalibHooks(const Wants& wants, CalibHooks* host, CudaContext* ctx, float alpha, cuda::GemmPrecision precision)
      : wants_(wants), host_(host), ctx_(ctx), alpha_(alpha), precision_(precision) {
    adapter_ = std::make_unique<HostLinearHooksAdapter>(host);
    need_host_ = !wants.row_norm.empty() || !wants.channel_max.empty() || !wants.range.empty() ||
                 !wants.channel_mean.empty() || !wants.capture.empty() || wants.kv ||
                 (!wants.hessian.empty() && !wants.device_hessian);
  }
  void set_seq_len(int64_t t) { seq_len_ = t; }
  // A new forward pass: an input at the address of the last one is new data, not the same input again.
  void NewPass() {
    last_ptr_ = nullptr;
    last_group_.clear();
  }
  bool SeeAllExperts() const override { return host_->SeeAllExperts(); }
  // The device Hessians in bf16 read the runner's bf16 copy alone; the host statistics and the other precisions
  // read the fp32 input.
  bool NeedsFp32Input() const override { return need_host_ || precision_ != cuda::GemmPrecision::kBf16; }

  absl::Status OnDeviceInput(const LinearWeight& w, const float* input, const uint16_t* input_bf16, int64_t tokens,
                             cudaStream_t stream) override {
    const std::string group = InputGroup(w.name);
    const bool repeat = input == last_ptr_ && group == last_group_;
    last_ptr_ = input;
    last_group_ = group;
    if (!repeat && wants_.device_hessian && wants_.hessian.count(group)) {
      GroupStats& s = host_->stats()[group];
      const int64_t cols = w.in_features;
      if (!s.device_hessian) {
        auto h = std::make_unique<CudaHessian>();
        LLMC_RETURN_IF_ERROR(h->xtx.Reserve(cols * cols, absl::StrCat("Hessian of ", group)));
        if (cudaMemsetAsync(h->xtx.data(), 0, cols * cols * sizeof(float), stream) != cudaSuccess)
          return absl::InternalError("cudaMemsetAsync failed");
        h->cols = cols;
        s.device_hessian = std::move(h);
      }
      auto* h = static_cast<CudaHessian*>(s.device_hessian.get());
      // Only the lower triangle accumulates here; Finish mirrors each Hessian once.
      std::string err = ctx_->blas()->AccumulateXtX(input, tokens, cols, alpha_, h->xtx.data(), precision_,
                                                    input_bf16, /*mirror=*/false);
      if (!err.empty()) return absl::InternalError(absl::StrCat(w.name, ": ", err));
      if (std::find(touched_.begin(), touched_.end(), h) == touched_.end()) touched_.push_back(h);
      h->samples += seq_len_ > 0 ? std::max<int64_t>(1, tokens / seq_len_) : 1;
      s.tokens += tokens;
    }
    if (need_host_) return adapter_->OnDeviceInput(w, input, input_bf16, tokens, stream);
    return absl::OkStatus();
  }

  // After the last pass of a calibration: completes every Hessian accumulated (its upper triangle from the lower).
  absl::Status Finish() {
    for (CudaHessian* h : touched_) {
      std::string err = ctx_->blas()->MirrorLower(h->xtx.data(), h->cols);
      if (!err.empty()) return absl::InternalError(absl::StrCat("completing a Hessian: ", err));
    }
    touched_.clear();
    return absl::OkStatus();
  }

 private:
  const Wants& wants_;
  CalibHooks* host_;
  CudaContext* ctx_;
  float alpha_;
  cuda::GemmPrecision precision_;
  std::unique_ptr<HostLinearHooksAdapter> adapter_;
  bool need_host_ = false;
  int64_t seq_len_ = 0;
  const float* last_ptr_ = nullptr;
  std::string last_group_;
  std::vector<CudaHessian*> touched_;  // Hessians accumulated since the last Finish (lower triangles only)
};

// Pinned host memory of `size()` elements of T (cudaHostAlloc), for activations kept off the device.
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  ~PinnedArray() {
    if (p_) cudaFreeHost(p_);
  }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  PinnedArray(PinnedArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  absl::Status Allocate(int64_t n, absl::string_view what) {
    const uint64_t bytes = static_cast<uint64_t>(std::max<int64_t>(n, 1)) * sizeof(T);
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat("cannot pin ", bytes >> 20, " MiB of host memory for ", what,
                                                       ": use fewer calibration samples or tokens, or keep the ",
                                                       "activations on the device (bf16)"));
    }
    p_ = static_cast<T*>(p);
    n_ = n;
    return absl::OkStatus();
  }
  T* data() { return p_; }

 private:
  T* p_ = nullptr;
  int64_t n_ = 0;
};

// Where the calibration activations stay between blocks (BlockBackendOptions::activations).
enum class Storage { kFp32, kBf16, kHost };

// One batch of equal-length sequences, in the form `Storage` says.
struct StoredBatch {
  int64_t num_seqs = 0;
  int64_t seq_len = 0;
  DeviceHiddenStates f32;       // kFp32: the batch itself (blocks run on it in place)
  DeviceArray<uint16_t> b16;    // kBf16: bf16 bits, [tokens, hidden]
  PinnedArray<uint16_t> host;   // kHost: bf16 bits in pinned host memory
};

class CudaBlockBackend final : public BlockBackend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBlockBackend>> Create(const BlockBackendOptions& options, CausalLm* lm,
                                                                   CalibBatches batches) {
    std::unique_ptr<CudaBlockBackend> b(new CudaBlockBackend(options.num_samples));
    if (options.activations == "bf16") b->storage_ = Storage::kBf16;
    else if (options.activations == "host") b->storage_ = Storage::kHost;
    else if (!options.activations.empty() && options.activations != "fp32")
      return absl::InvalidArgumentError(absl::StrCat("calibration activations '", options.activations,
                                                     "': use fp32, bf16 or host"));
    LLMC_ASSIGN_OR_RETURN(b->cuda_, CudaContext::Create());
    cuda::GemmPrecision prec = cuda::GemmPrecision::kTf32;
    if (options.gemm_precision == "fp32") prec = cuda::GemmPrecision::kFp32;
    else if (options.gemm_precision == "bf16") prec = cuda::GemmPrecision::kBf16;
    else if (!options.gemm_precision.empty() && options.gemm_precision != "tf32")
      return absl::InvalidArgumentError(absl::StrCat("GEMM precision '", options.gemm_precision, "': use fp32, tf32 or bf16"));
    LLMC_ASSIGN_OR_RETURN(b->dweights_, CudaBlockWeights::Create(lm->spec(), prec, b->cuda_.get()));
    b->awq_ = CreateCudaAwqLossFactory(b->cuda_.get(), prec);
    CudaBlockRunnerOptions ro;
    ro.max_chunk_tokens = std::max<int64_t>(options.max_chunk_tokens, 8192);
    b->chunk_tokens_ = ro.max_chunk_tokens;
    LLMC_ASSIGN_OR_RETURN(b->runner_, CudaBlockRunner::Create(lm->spec(), b->cuda_.get(), ro));
    b->hidden_ = lm->spec().hidden_size;
    int64_t max_slice = 0;
    for (const auto& [n, t] : batches.shapes) max_slice = std::max(max_slice, std::min(n, b->SliceSeqs(t)) * t);
    LLMC_RETURN_IF_ERROR(b->dscratch_.data.Reserve(std::max<int64_t>(1, max_slice * b->hidden_),
                                                   "calibration activations (one slice)"));
    b->dscratch_.hidden = b->hidden_;
    if (b->storage_ == Storage::kHost) LLMC_RETURN_IF_ERROR(b->CreateHostPipe(std::max<int64_t>(1, max_slice * b->hidden_)));
    // Every batch's storage first, so the embedding table only takes memory the activations leave free.
    for (size_t i = 0; i < batches.shapes.size(); ++i) LLMC_RETURN_IF_ERROR(b->Allocate(batches.shapes[i]));
    {
      std::optional<DeviceEmbedding> emb = b->UploadEmbeddings(lm, batches, max_slice);
      b->embedded_on_device_ = emb.has_value();
      for (size_t i = 0; i < batches.shapes.size(); ++i)
        LLMC_RETURN_IF_ERROR(b->Store(batches, i, lm, emb ? &*emb : nullptr));
      LLMC_RETURN_IF_ERROR(b->cuda_->Synchronize());  // before the table and the ids are freed
    }
    return b;
  }

  absl::Status Calibrate(const DecoderBlock& block, const Wants& wants, CalibHooks* hooks) override {
    hooks->set_on_device(true);
    DeviceCalibHooks dh(wants, hooks, cuda_.get(), 2.0f / static_cast<float>(num_samples_), dweights_->precision());
    LLMC_RETURN_IF_ERROR(dweights_->Upload(block));
    if (storage_ == Storage::kHost) {
      LLMC_RETURN_IF_ERROR(RunHostSlices([&](const Slice& s) -> absl::Status {
        hooks->set_seq_len(s.batch->seq_len);
        dh.set_seq_len(s.batch->seq_len);
        dh.NewPass();
        return runner_->Run(dweights_.get(), &dscratch_, &dh);
      }, /*save=*/false));
      LLMC_RETURN_IF_ERROR(dh.Finish());
      return cuda_->Synchronize();
    }
    // Slices of whole runner chunks: the hooks see the same inputs in the same order as one pass over the batch.
    for (StoredBatch& b : batches_) {
      hooks->set_seq_len(b.seq_len);
      dh.set_seq_len(b.seq_len);
      for (int64_t s0 = 0; s0 < b.num_seqs; s0 += SliceSeqs(b.seq_len)) {
        const int64_t n = std::min(SliceSeqs(b.seq_len), b.num_seqs - s0);
        LLMC_RETURN_IF_ERROR(Load(b, s0, n));
        dh.NewPass();
        LLMC_RETURN_IF_ERROR(runner_->Run(dweights_.get(), &dscratch_, &dh));
      }
    }
    LLMC_RETURN_IF_ERROR(dh.Finish());
    return cuda_->Synchronize();
  }

  // Runs the block with its compressed weights over every stored activation, and fails (as the CPU backend does)
  // when any output is NaN or infinite: one device flag, set by a check of each slice's output, read once at the end.
  absl::Status Propagate(const DecoderBlock& block) override {
    LLMC_RETURN_IF_ERROR(dweights_->Upload(block));
    LLMC_RETURN_IF_ERROR(nonfinite_.Reserve(1, "non-finite flag"));
    if (cudaMemsetAsync(nonfinite_.data(), 0, sizeof(unsigned), cuda_->stream()) != cudaSuccess)
      return absl::InternalError("cudaMemsetAsync failed");
    auto run_and_check = [&](DeviceHiddenStates* h) -> absl::Status {
      LLMC_RETURN_IF_ERROR(runner_->Run(dweights_.get(), h));
      const std::string err = cuda::FlagNonFiniteDevice(h->data.data(), h->num_seqs * h->seq_len * hidden_,
                                                        nonfinite_.data(), cuda_->stream());
      if (!err.empty()) return absl::InternalError(err);
      return absl::OkStatus();
    };
    if (storage_ == Storage::kHost) {
      LLMC_RETURN_IF_ERROR(RunHostSlices([&](const Slice&) { return run_and_check(&dscratch_); }, /*save=*/true));
    } else {
      for (StoredBatch& b : batches_) {
        if (storage_ == Storage::kFp32) {
          LLMC_RETURN_IF_ERROR(run_and_check(&b.f32));
          continue;
        }
        for (int64_t s0 = 0; s0 < b.num_seqs; s0 += SliceSeqs(b.seq_len)) {
          const int64_t n = std::min(SliceSeqs(b.seq_len), b.num_seqs - s0);
          LLMC_RETURN_IF_ERROR(Load(b, s0, n));
          LLMC_RETURN_IF_ERROR(run_and_check(&dscratch_));
          LLMC_RETURN_IF_ERROR(Save(&b, s0, n));
        }
      }
    }
    unsigned flag = 0;
    if (cudaMemcpyAsync(&flag, nonfinite_.data(), sizeof(unsigned), cudaMemcpyDeviceToHost, cuda_->stream()) !=
        cudaSuccess)
      return absl::InternalError("cannot read the non-finite flag from the device");
    LLMC_RETURN_IF_ERROR(cuda_->Synchronize());
    if (flag != 0)
      return absl::InvalidArgumentError(absl::StrCat("block ", block.layer, " produced NaN or Inf activations with the ",
                                                     "compressed weights; the compression is unstable for this model"));
    return absl::OkStatus();
  }

  // On the GPU when the Hessian is there and the scheme is supported; from a host copy of it otherwise.
  absl::StatusOr<GptqResult> Gptq(const std::string& module, const float* weight, int64_t rows, int64_t cols,
                                  const GroupStats* st, GroupQuantizer* q, const GptqOptions& go) override {
    if (!st || !st->device_hessian) return BlockBackend::Gptq(module, weight, rows, cols, st, q, go);
    // The device sum holds H = 2/N sum x x^T already (scaled as it accumulated).
    const auto* h = static_cast<const CudaHessian*>(st->device_hessian.get());
    if (CudaGptqSupports(*q))
      return CudaGptqQuantize(module, weight, rows, cols, h->xtx.data(), h->samples, q, go, cuda_.get());
    std::vector<float> host(cols * cols);
    if (cudaMemcpy(host.data(), h->xtx.data(), host.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
      return absl::InternalError("cannot copy a Hessian from the device");
    return GptqQuantize(module, weight, rows, cols, host.data(), h->samples, q, go);
  }

  // NCCL sums the device Hessian in place; a host communicator (Gloo) through a host copy.
  absl::Status ReduceDeviceStats(GroupStats* st, Communicator* comm) override {
    if (!st->device_hessian || comm->size() == 1) return absl::OkStatus();
    auto* h = static_cast<CudaHessian*>(st->device_hessian.get());
    LLMC_RETURN_IF_ERROR(cuda_->Synchronize());
    const size_t n = h->xtx.size();
    if (comm->device_memory()) {
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(h->xtx.data(), n)));
    } else {
      std::vector<float> host(n);
      if (cudaMemcpy(host.data(), h->xtx.data(), n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
        return absl::InternalError("cannot copy a Hessian from the device");
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(host)));
      if (cudaMemcpy(h->xtx.data(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
        return absl::InternalError("cannot copy a Hessian to the device");
    }
    double samples = static_cast<double>(h->samples);
    LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(&samples, 1)));
    h->samples = static_cast<int64_t>(samples);
    return absl::OkStatus();
  }

  bool runs_off_host() const override { return true; }

  AwqDeviceLossFactory* awq_device_loss() override { return awq_.get(); }

  void ReportBlock(nlohmann::json* blk) override {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      peak_device_bytes_ = std::max<uint64_t>(peak_device_bytes_, total_b - free_b);
      (*blk)["device_used_bytes"] = total_b - free_b;
    }
  }

  void Report(nlohmann::json* j) const override {
    (*j)["device_name"] = cuda_->device_name();
    (*j)["peak_device_used_bytes"] = peak_device_bytes_;
    (*j)["embedding"] = embedded_on_device_ ? "device" : "host";  // where the calibration tokens were embedded
    (*j)["calibration_activations"] = storage_ == Storage::kFp32 ? "fp32" : storage_ == Storage::kBf16 ? "bf16" : "host";
    (*j)["precision"] = cuda::GemmPrecisionName(dweights_->precision());
  }

  ~CudaBlockBackend() override {
    if (pipe_.stream != nullptr) cudaStreamSynchronize(pipe_.stream);  // copies may still read or write the buffers
    for (cudaEvent_t e : {pipe_.loaded[0], pipe_.loaded[1], pipe_.consumed[0], pipe_.consumed[1], pipe_.converted,
                          pipe_.saved})
      if (e != nullptr) cudaEventDestroy(e);
    if (pipe_.stream != nullptr) cudaStreamDestroy(pipe_.stream);
  }

 private:
  explicit CudaBlockBackend(int64_t num_samples) : num_samples_(num_samples) {}

  // kHost: the activations cross PCIe on their own stream, beside the blocks. While slice j runs, slice j + 1 is
  // copied in (two input buffers, taken in turn) and slice j - 1 goes back out (one output buffer); events order
  // each buffer's writer after its last reader.
  struct HostPipe {
    cudaStream_t stream = nullptr;
    cudaEvent_t loaded[2] = {nullptr, nullptr}, consumed[2] = {nullptr, nullptr};
    cudaEvent_t converted = nullptr, saved = nullptr;
    DeviceArray<uint16_t> in[2];
    DeviceArray<uint16_t> out;
  };
  struct Slice {
    StoredBatch* batch;
    int64_t s0, n;
  };

  absl::Status CreateHostPipe(int64_t values) {
    if (cudaStreamCreateWithFlags(&pipe_.stream, cudaStreamNonBlocking) != cudaSuccess)
      return absl::InternalError("cannot create the activation copy stream");
    for (cudaEvent_t* e : {&pipe_.loaded[0], &pipe_.loaded[1], &pipe_.consumed[0], &pipe_.consumed[1],
                           &pipe_.converted, &pipe_.saved})
      if (cudaEventCreateWithFlags(e, cudaEventDisableTiming) != cudaSuccess)
        return absl::InternalError("cannot create the activation copy events");
    for (DeviceArray<uint16_t>* a : {&pipe_.in[0], &pipe_.in[1], &pipe_.out})
      LLMC_RETURN_IF_ERROR(a->Reserve(values, "activation staging"));
    return absl::OkStatus();
  }

  // Every slice of every batch, in the order the blocks run them.
  std::vector<Slice> Slices() {
    std::vector<Slice> out;
    for (StoredBatch& b : batches_)
      for (int64_t s0 = 0; s0 < b.num_seqs; s0 += SliceSeqs(b.seq_len))
        out.push_back({&b, s0, std::min(SliceSeqs(b.seq_len), b.num_seqs - s0)});
    return out;
  }

  // Queues the copy of slice `s` into input buffer `slot` on the copy stream.
  absl::Status Prefetch(const Slice& s, int slot) {
    const int64_t off = s.s0 * s.batch->seq_len * hidden_, count = s.n * s.batch->seq_len * hidden_;
    if (cudaStreamWaitEvent(pipe_.stream, pipe_.consumed[slot], 0) != cudaSuccess ||
        cudaMemcpyAsync(pipe_.in[slot].data(), s.batch->host.data() + off, count * sizeof(uint16_t),
                        cudaMemcpyHostToDevice, pipe_.stream) != cudaSuccess ||
        cudaEventRecord(pipe_.loaded[slot], pipe_.stream) != cudaSuccess)
      return absl::InternalError("cannot copy calibration activations from host memory");
    return absl::OkStatus();
  }

  // Runs `run` on every slice in the fp32 scratch, the slices streamed from host memory and (save) back.
  absl::Status RunHostSlices(const std::function<absl::Status(const Slice&)>& run, bool save) {
    const std::vector<Slice> slices = Slices();
    cudaStream_t cs = cuda_->stream();
    if (!slices.empty()) LLMC_RETURN_IF_ERROR(Prefetch(slices[0], 0));
    for (size_t j = 0; j < slices.size(); ++j) {
      const Slice& s = slices[j];
      const int slot = static_cast<int>(j % 2);
      dscratch_.num_seqs = s.n;
      dscratch_.seq_len = s.batch->seq_len;
      const int64_t count = s.n * s.batch->seq_len * hidden_;
      if (cudaStreamWaitEvent(cs, pipe_.loaded[slot], 0) != cudaSuccess)
        return absl::InternalError("cannot order the activation copies");
      const std::string err = cuda::Bf16ToFloatDevice(pipe_.in[slot].data(), count, dscratch_.data.data(), cs);
      if (!err.empty()) return absl::InternalError(err);
      if (cudaEventRecord(pipe_.consumed[slot], cs) != cudaSuccess)
        return absl::InternalError("cannot order the activation copies");
      if (j + 1 < slices.size()) LLMC_RETURN_IF_ERROR(Prefetch(slices[j + 1], static_cast<int>((j + 1) % 2)));
      LLMC_RETURN_IF_ERROR(run(s));
      if (save) LLMC_RETURN_IF_ERROR(Save(s.batch, s.s0, s.n));
    }
    LLMC_RETURN_IF_ERROR(cuda_->Synchronize());
    if (cudaStreamSynchronize(pipe_.stream) != cudaSuccess)
      return absl::InternalError("copying calibration activations to or from host memory failed");
    return absl::OkStatus();
  }

  // Sequences per slice of a batch of sequences of length t: whole runner chunks, about kSliceTokens tokens.
  int64_t SliceSeqs(int64_t t) const {
    constexpr int64_t kSliceTokens = 65536;
    const int64_t chunk = std::max<int64_t>(1, chunk_tokens_ / std::max<int64_t>(t, 1));
    return chunk * std::max<int64_t>(1, kSliceTokens / (chunk * std::max<int64_t>(t, 1)));
  }

  // The token-embedding table and one slice's token ids on the device, while the batches are stored.
  struct DeviceEmbedding {
    DeviceArray<uint8_t> table;
    DeviceArray<int32_t> ids;
    cuda::TableDType dtype = cuda::TableDType::kF32;
    int64_t cols = 0;
    float scale = 1.0f;
  };

  // The embedding table on the device when the batches come with their token ids, the table is stored dense
  // (BF16, F16, F32) and the device has room for it; nullopt otherwise, and Store embeds on the host.
  std::optional<DeviceEmbedding> UploadEmbeddings(CausalLm* lm, const CalibBatches& src, int64_t max_slice_tokens) {
    if (!src.token_ids) return std::nullopt;
    absl::StatusOr<CausalLm::EmbeddingTable> t = lm->Embeddings();
    if (!t.ok() || t->cols != hidden_) return std::nullopt;
    DeviceEmbedding e;
    e.dtype = t->dtype == DType::kBF16 ? cuda::TableDType::kBF16
              : t->dtype == DType::kF16 ? cuda::TableDType::kF16
                                        : cuda::TableDType::kF32;
    e.cols = t->cols;
    e.scale = t->scale;
    const int64_t bytes = t->rows * t->cols * static_cast<int64_t>(DTypeSize(t->dtype));
    if (!e.table.Reserve(bytes, "the token embeddings").ok() ||
        !e.ids.Reserve(std::max<int64_t>(1, max_slice_tokens), "token ids").ok() ||
        cudaMemcpy(e.table.data(), t->data, bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
      cudaGetLastError();
      return std::nullopt;  // no room (or no copy): the host embeds
    }
    return e;
  }

  // Allocates the storage of one more batch of num_seqs sequences of seq_len tokens (batches_.back()).
  absl::Status Allocate(std::pair<int64_t, int64_t> shape) {
    const auto [num_seqs, seq_len] = shape;
    StoredBatch b;
    b.num_seqs = num_seqs;
    b.seq_len = seq_len;
    const int64_t values = std::max<int64_t>(1, num_seqs * seq_len * hidden_);
    switch (storage_) {
      case Storage::kFp32:
        b.f32.num_seqs = num_seqs;
        b.f32.seq_len = seq_len;
        b.f32.hidden = hidden_;
        LLMC_RETURN_IF_ERROR(b.f32.data.Reserve(values, "calibration activations"));
        break;
      case Storage::kBf16:
        LLMC_RETURN_IF_ERROR(b.b16.Reserve(values, "calibration activations (bf16)"));
        break;
      case Storage::kHost:
        LLMC_RETURN_IF_ERROR(b.host.Allocate(values, "calibration activations (bf16, host)"));
        break;
    }
    batches_.push_back(std::move(b));
    return absl::OkStatus();
  }

  // Embeds batch i of `src` a slice at a time into its storage (batches_[i]): on the device from `emb` (the token
  // ids checked here, as CausalLm::Embed checks them), else on the host through src.embed.
  absl::Status Store(const CalibBatches& src, size_t i, const CausalLm* lm, DeviceEmbedding* emb) {
    const auto [num_seqs, seq_len] = src.shapes[i];
    StoredBatch& b = batches_[i];
    absl::Span<const int32_t> ids;
    if (emb != nullptr) {
      ids = src.token_ids(i);
      if (static_cast<int64_t>(ids.size()) != num_seqs * seq_len)
        return absl::InternalError(absl::StrCat("calibration batch ", i, ": token ids differ from its plan"));
      LLMC_RETURN_IF_ERROR(lm->CheckTokenIds(ids));
    }
    for (int64_t s0 = 0; s0 < num_seqs; s0 += SliceSeqs(seq_len)) {
      const int64_t n = std::min(SliceSeqs(seq_len), num_seqs - s0);
      const int64_t off = s0 * seq_len * hidden_;
      float* dst = storage_ == Storage::kFp32 ? b.f32.data.data() + off : dscratch_.data.data();
      HiddenStates h;  // the host path's slice, alive until its copy is done
      if (emb != nullptr) {
        const int64_t count = n * seq_len;
        if (cudaMemcpyAsync(emb->ids.data(), ids.data() + s0 * seq_len, count * sizeof(int32_t),
                            cudaMemcpyHostToDevice, cuda_->stream()) != cudaSuccess)
          return absl::InternalError("cannot copy calibration token ids to the device");
        const std::string err = cuda::EmbedRowsDevice(emb->table.data(), emb->dtype, emb->cols, emb->ids.data(), count,
                                                      emb->scale, dst, cuda_->stream());
        if (!err.empty()) return absl::InternalError(err);
      } else {
        LLMC_ASSIGN_OR_RETURN(h, src.embed(i, s0, n));
        if (h.num_seqs != n || h.seq_len != seq_len || h.hidden != hidden_ ||
            static_cast<int64_t>(h.data.size()) != n * seq_len * hidden_)
          return absl::InternalError(absl::StrCat("calibration batch ", i, ": embedded shape differs from its plan"));
        if (cudaMemcpyAsync(dst, h.data.data(), h.data.size() * sizeof(float), cudaMemcpyHostToDevice,
                            cuda_->stream()) != cudaSuccess)
          return absl::InternalError("cannot copy calibration activations to the device");
      }
      if (storage_ != Storage::kFp32) {
        dscratch_.num_seqs = n;
        dscratch_.seq_len = seq_len;
        LLMC_RETURN_IF_ERROR(Save(&b, s0, n));
      }
      LLMC_RETURN_IF_ERROR(cuda_->Synchronize());  // before the host slice (or the ids' host memory) is reused
    }
    return absl::OkStatus();
  }

  // Sequences [s0, s0 + n) of `b` into the fp32 scratch.
  absl::Status Load(StoredBatch& b, int64_t s0, int64_t n) {
    dscratch_.num_seqs = n;
    dscratch_.seq_len = b.seq_len;
    const int64_t off = s0 * b.seq_len * hidden_, count = n * b.seq_len * hidden_;
    std::string err;
    switch (storage_) {
      case Storage::kFp32:
        if (cudaMemcpyAsync(dscratch_.data.data(), b.f32.data.data() + off, count * sizeof(float),
                            cudaMemcpyDeviceToDevice, cuda_->stream()) != cudaSuccess)
          return absl::InternalError("device copy of the calibration activations failed");
        return absl::OkStatus();
      case Storage::kBf16:
        err = cuda::Bf16ToFloatDevice(b.b16.data() + off, count, dscratch_.data.data(), cuda_->stream());
        break;
      case Storage::kHost:
        return absl::InternalError("host activations are read through RunHostSlices");
    }
    if (!err.empty()) return absl::InternalError(err);
    return absl::OkStatus();
  }

  // The fp32 scratch (sequences [s0, s0 + n)) back into `b`'s bf16 storage.
  absl::Status Save(StoredBatch* b, int64_t s0, int64_t n) {
    const int64_t off = s0 * b->seq_len * hidden_, count = n * b->seq_len * hidden_;
    std::string err;
    if (storage_ == Storage::kBf16) {
      err = cuda::FloatToBf16Device(dscratch_.data.data(), count, b->b16.data() + off, cuda_->stream());
    } else if (storage_ == Storage::kHost) {
      // Converted on the compute stream once the previous slice has left the output buffer, copied out on the copy
      // stream while the next slice runs.
      cudaStream_t cs = cuda_->stream();
      if (cudaStreamWaitEvent(cs, pipe_.saved, 0) != cudaSuccess)
        return absl::InternalError("cannot order the activation copies");
      err = cuda::FloatToBf16Device(dscratch_.data.data(), count, pipe_.out.data(), cs);
      if (err.empty() &&
          (cudaEventRecord(pipe_.converted, cs) != cudaSuccess ||
           cudaStreamWaitEvent(pipe_.stream, pipe_.converted, 0) != cudaSuccess ||
           cudaMemcpyAsync(b->host.data() + off, pipe_.out.data(), count * sizeof(uint16_t), cudaMemcpyDeviceToHost,
                           pipe_.stream) != cudaSuccess ||
           cudaEventRecord(pipe_.saved, pipe_.stream) != cudaSuccess))
        return absl::InternalError("cannot copy calibration activations to host memory");
    }
    if (!err.empty()) return absl::InternalError(err);
    return absl::OkStatus();
  }

  int64_t num_samples_;
  Storage storage_ = Storage::kFp32;
  int64_t chunk_tokens_ = 8192;
  int64_t hidden_ = 0;
  std::unique_ptr<CudaContext> cuda_;
  std::unique_ptr<CudaBlockWeights> dweights_;
  std::unique_ptr<CudaBlockRunner> runner_;
  std::unique_ptr<AwqDeviceLossFactory> awq_;
  std::vector<StoredBatch> batches_;
  DeviceHiddenStates dscratch_;      // one slice, fp32: what the blocks run on
  HostPipe pipe_;                    // kHost: slices of bf16 on their way to or from the host
  bool embedded_on_device_ = false;
  DeviceArray<unsigned> nonfinite_;  // Propagate's flag: some output was NaN or infinite
  uint64_t peak_device_bytes_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateCudaBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                     CalibBatches batches) {
  LLMC_ASSIGN_OR_RETURN(std::unique_ptr<CudaBlockBackend> b, CudaBlockBackend::Create(options, lm, std::move(batches)));
  return std::unique_ptr<BlockBackend>(std::move(b));
}

}  // namespace llmc
