#include "engine/calib/cuda_awq_loss.h"

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend/cuda/attention_kernels.h"
#include "engine/backend/cuda/awq_kernels.h"
#include "engine/backend/cuda/gptq_kernels.h"
#include "engine/backend/cuda/model_kernels.h"
#include "engine/quant/model_dtype_math.h"

namespace llmc {
namespace {

using cuda::FakeQuantSpec;

absl::Status CudaError(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("AWQ on the GPU: ", what, ": ", cudaGetErrorString(e)));
}
absl::Status KernelError(const std::string& err, const std::string& what) {
  if (err.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("AWQ on the GPU: ", what, ": ", err));
}

template <typename T>
absl::Status Upload(DeviceArray<T>* dst, const T* src, int64_t n, const std::string& what, cudaStream_t stream) {
  LLMC_RETURN_IF_ERROR(dst->Reserve(n, what));
  if (n == 0) return absl::OkStatus();
  return CudaError(cudaMemcpyAsync(dst->data(), src, n * sizeof(T), cudaMemcpyHostToDevice, stream), what);
}

// The device arithmetic of an integer weight scheme in `dtype`, its group width for `cols` columns, and eps; false
// when the scheme is not one the trial kernel implements.
bool TrialSpec(const QuantArgs& a, DType dtype, int64_t cols, FakeQuantSpec* spec, int64_t* group, float* eps) {
  if (a.type != QuantType::kInt || a.num_bits < 2 || a.num_bits > 8) return false;
  if (a.strategy == Strategy::kGroup) {
    if (!a.group_size || *a.group_size <= 0 || cols % *a.group_size != 0) return false;
    *group = *a.group_size;
  } else if (a.strategy == Strategy::kChannel) {
    *group = cols;
  } else {
    return false;
  }
  spec->kind = FakeQuantSpec::Kind::kInt;
  spec->round = dtype == DType::kBF16  ? FakeQuantSpec::Round::kBf16
                : dtype == DType::kF16 ? FakeQuantSpec::Round::kF16
                                       : FakeQuantSpec::Round::kNone;
  spec->qmax = static_cast<float>((1 << (a.num_bits - 1)) - 1);
  spec->qmin = -static_cast<float>(1 << (a.num_bits - 1));
  spec->asymmetric = !a.symmetric;
  *eps = DTypeEps(dtype);
  return true;
}

class CudaAwqLoss final : public AwqLossEvaluator {
 public:
  CudaAwqLoss(const AwqParent& p, CudaContext* ctx, cuda::GemmPrecision precision)
      : p_(p), ctx_(ctx), precision_(precision) {}

  // Uploads everything and computes the reference output.
  absl::Status Init() {
    cudaStream_t st = ctx_->stream();
    const int64_t in = p_.members[0]->in_features;
    LLMC_RETURN_IF_ERROR(Upload(&x_, p_.input, p_.rows * in, "AWQ captured inputs", st));
    members_.resize(p_.members.size());
    for (size_t m = 0; m < p_.members.size(); ++m) {
      const LinearWeight& l = *p_.members[m];
      Member& d = members_[m];
      d.linear = &l;
      d.balance = p_.balance_index[m];
      LLMC_RETURN_IF_ERROR(Upload(&d.w, l.weight.data(), static_cast<int64_t>(l.weight.size()), l.name, st));
      LLMC_RETURN_IF_ERROR(Upload(&d.bias, l.bias.data(), static_cast<int64_t>(l.bias.size()), l.name + ".bias", st));
      if (d.balance >= 0) {
        LLMC_RETURN_IF_ERROR(d.trial.Reserve(static_cast<int64_t>(l.weight.size()), l.name + " (AWQ trial)"));
        if (!TrialSpec(*p_.groups[d.balance]->scheme.weights, p_.dtype, l.in_features, &d.spec, &d.group, &d.eps))
          return absl::InternalError(absl::StrCat(l.name, ": scheme checked by the factory is not supported"));
      }
    }
    if (p_.kind == AwqParent::Kind::kAttention) {
      const DecoderBlock& b = *p_.block;
      const ModelSpec& spec = *p_.spec;
      LLMC_RETURN_IF_ERROR(Upload(&tail_w_, b.o_proj.weight.data(), static_cast<int64_t>(b.o_proj.weight.size()), "o_proj", st));
      LLMC_RETURN_IF_ERROR(Upload(&tail_b_, b.o_proj.bias.data(), static_cast<int64_t>(b.o_proj.bias.size()), "o_proj.bias", st));
      if (spec.qk_norm) {
        LLMC_RETURN_IF_ERROR(Upload(&q_norm_, b.q_norm.data(), static_cast<int64_t>(b.q_norm.size()), "q_norm", st));
        LLMC_RETURN_IF_ERROR(Upload(&k_norm_, b.k_norm.data(), static_cast<int64_t>(b.k_norm.size()), "k_norm", st));
      }
      const int64_t half = p_.rope->head_dim() / 2;
      if (p_.rope->max_positions() < p_.seq_len)
        return absl::InternalError("AWQ on the GPU: the rope table is shorter than the captured sequences");
      LLMC_RETURN_IF_ERROR(Upload(&cos_, p_.rope->cos(0), p_.seq_len * half, "rope cos", st));
      LLMC_RETURN_IF_ERROR(Upload(&sin_, p_.rope->sin(0), p_.seq_len * half, "rope sin", st));
      const int64_t rows = p_.rows, Q = spec.q_size(), KV = spec.kv_size();
      LLMC_RETURN_IF_ERROR(q_.Reserve(rows * Q, "AWQ q"));
      LLMC_RETURN_IF_ERROR(k_.Reserve(rows * KV, "AWQ k"));
      LLMC_RETURN_IF_ERROR(v_.Reserve(rows * KV, "AWQ v"));
      LLMC_RETURN_IF_ERROR(attn_.Reserve(rows * Q, "AWQ attention"));
      if (p_.members.size() == 1) LLMC_RETURN_IF_ERROR(fused_.Reserve(rows * (Q + 2 * KV), "AWQ fused qkv"));
    } else if (p_.kind == AwqParent::Kind::kMlp) {
      const DecoderBlock& b = *p_.block;
      const ModelSpec& spec = *p_.spec;
      LLMC_RETURN_IF_ERROR(Upload(&tail_w_, b.down_proj.weight.data(), static_cast<int64_t>(b.down_proj.weight.size()), "down_proj", st));
      LLMC_RETURN_IF_ERROR(Upload(&tail_b_, b.down_proj.bias.data(), static_cast<int64_t>(b.down_proj.bias.size()), "down_proj.bias", st));
      const int64_t rows = p_.rows, I = spec.intermediate_size;
      LLMC_RETURN_IF_ERROR(g_.Reserve(rows * I, "AWQ gate"));
      LLMC_RETURN_IF_ERROR(u_.Reserve(rows * I, "AWQ up"));
      if (p_.members.size() == 1) LLMC_RETURN_IF_ERROR(fused_.Reserve(rows * 2 * I, "AWQ fused gate_up"));
    }
    const int64_t n_out = p_.rows * p_.out_features;
    LLMC_RETURN_IF_ERROR(ref_.Reserve(n_out, "AWQ reference output"));
    LLMC_RETURN_IF_ERROR(out_.Reserve(n_out, "AWQ trial output"));
    LLMC_RETURN_IF_ERROR(s_.Reserve(in, "AWQ scales"));
    LLMC_RETURN_IF_ERROR(partials_.Reserve(cuda::kAwqPartials, "AWQ loss partial sums"));
    LLMC_RETURN_IF_ERROR(Forward(/*trial=*/false, ref_.data()));
    return ctx_->Synchronize();
  }

  absl::StatusOr<double> Loss(absl::Span<const double> s) override {
    cudaStream_t st = ctx_->stream();
    const int64_t in = p_.members[0]->in_features;
    if (static_cast<int64_t>(s.size()) != in)
      return absl::InvalidArgumentError(absl::StrCat("AWQ on the GPU: ", s.size(), " scales for ", in, " channels"));
    LLMC_RETURN_IF_ERROR(Upload(&s_, s.data(), in, "AWQ scales", st));
    for (Member& d : members_) {
      if (d.balance < 0) continue;
      LLMC_RETURN_IF_ERROR(KernelError(cuda::AwqTrialWeightDevice(d.w.data(), d.linear->out_features, in, d.group,
                                                                  s_.data(), d.spec, d.eps, d.trial.data(), st),
                                       d.linear->name));
    }
    LLMC_RETURN_IF_ERROR(Forward(/*trial=*/true, out_.data()));
    double sum = 0;
    const int64_t n = p_.rows * p_.out_features;
    LLMC_RETURN_IF_ERROR(KernelError(cuda::AwqSquaredErrorSum(out_.data(), ref_.data(), n, partials_.data(), &sum, st),
                                     "loss"));
    return sum / static_cast<double>(n);
  }

 private:
  struct Member {
    const LinearWeight* linear = nullptr;
    int balance = -1;
    DeviceArray<float> w, bias, trial;
    FakeQuantSpec spec;
    int64_t group = 0;
    float eps = 0;
  };

  absl::Status Linear(const Member& m, bool trial, const float* x, float* y) {
    const LinearWeight& l = *m.linear;
    const float* w = trial && m.balance >= 0 ? m.trial.data() : m.w.data();
    return KernelError(ctx_->blas()->Linear(precision_, x, nullptr, p_.rows, l.in_features, w,
                                            m.bias.size() > 0 ? m.bias.data() : nullptr, l.out_features, y),
                       l.name);
  }
  absl::Status TailLinear(const float* x, int64_t in, float* y) {
    return KernelError(ctx_->blas()->Linear(precision_, x, nullptr, p_.rows, in, tail_w_.data(),
                                            tail_b_.size() > 0 ? tail_b_.data() : nullptr, p_.out_features, y),
                       "the parent's output Linear");
  }
  // dst [rows, width] = columns [col0, col0 + width) of src [rows, src_width].
  absl::Status Columns(const float* src, int64_t src_width, int64_t col0, int64_t width, float* dst) {
    return CudaError(cudaMemcpy2DAsync(dst, width * sizeof(float), src + col0, src_width * sizeof(float),
                                       width * sizeof(float), p_.rows, cudaMemcpyDeviceToDevice, ctx_->stream()),
                     "splitting a fused projection");
  }

  // The parent's output into `out` [rows, out_features], with the trial weights or the weights as held.
  absl::Status Forward(bool trial, float* out) {
    cudaStream_t st = ctx_->stream();
    const int64_t rows = p_.rows;
    switch (p_.kind) {
      case AwqParent::Kind::kLinear:
        return Linear(members_[0], trial, x_.data(), out);
      case AwqParent::Kind::kMlp: {
        const ModelSpec& spec = *p_.spec;
        const int64_t I = spec.intermediate_size;
        if (members_.size() == 1) {
          LLMC_RETURN_IF_ERROR(Linear(members_[0], trial, x_.data(), fused_.data()));
          LLMC_RETURN_IF_ERROR(Columns(fused_.data(), 2 * I, 0, I, g_.data()));
          LLMC_RETURN_IF_ERROR(Columns(fused_.data(), 2 * I, I, I, u_.data()));
        } else {
          LLMC_RETURN_IF_ERROR(Linear(members_[0], trial, x_.data(), g_.data()));
          LLMC_RETURN_IF_ERROR(Linear(members_[1], trial, x_.data(), u_.data()));
        }
        const std::string err = spec.activation == Activation::kGeluTanh
                                    ? cuda::GeluTanhGluDevice(g_.data(), u_.data(), rows * I, g_.data(), st)
                                    : cuda::SwiGluDevice(g_.data(), u_.data(), rows * I, g_.data(), st);
        LLMC_RETURN_IF_ERROR(KernelError(err, "gated activation"));
        return TailLinear(g_.data(), I, out);
      }
      case AwqParent::Kind::kAttention: {
        const ModelSpec& spec = *p_.spec;
        const int64_t Q = spec.q_size(), KV = spec.kv_size(), T = p_.seq_len, seqs = rows / T;
        if (members_.size() == 1) {
          LLMC_RETURN_IF_ERROR(Linear(members_[0], trial, x_.data(), fused_.data()));
          LLMC_RETURN_IF_ERROR(Columns(fused_.data(), Q + 2 * KV, 0, Q, q_.data()));
          LLMC_RETURN_IF_ERROR(Columns(fused_.data(), Q + 2 * KV, Q, KV, k_.data()));
          LLMC_RETURN_IF_ERROR(Columns(fused_.data(), Q + 2 * KV, Q + KV, KV, v_.data()));
        } else {
          LLMC_RETURN_IF_ERROR(Linear(members_[0], trial, x_.data(), q_.data()));
          LLMC_RETURN_IF_ERROR(Linear(members_[1], trial, x_.data(), k_.data()));
          LLMC_RETURN_IF_ERROR(Linear(members_[2], trial, x_.data(), v_.data()));
        }
        const float eps = static_cast<float>(spec.rms_norm_eps);
        if (spec.qk_norm) {
          LLMC_RETURN_IF_ERROR(KernelError(
              cuda::RmsNormDevice(q_.data(), rows * spec.num_heads, spec.head_dim, q_norm_.data(), eps, q_.data(), st),
              "q_norm"));
          LLMC_RETURN_IF_ERROR(KernelError(cuda::RmsNormDevice(k_.data(), rows * spec.num_kv_heads, spec.head_dim,
                                                               k_norm_.data(), eps, k_.data(), st),
                                           "k_norm"));
        }
        LLMC_RETURN_IF_ERROR(KernelError(cuda::RopeDevice(q_.data(), seqs, T, spec.num_heads, spec.head_dim,
                                                          cos_.data(), sin_.data(), st, spec.rotary_dim()),
                                         "rope (q)"));
        LLMC_RETURN_IF_ERROR(KernelError(cuda::RopeDevice(k_.data(), seqs, T, spec.num_kv_heads, spec.head_dim,
                                                          cos_.data(), sin_.data(), st, spec.rotary_dim()),
                                         "rope (k)"));
        LLMC_RETURN_IF_ERROR(KernelError(
            cuda::CausalAttentionDevice(q_.data(), k_.data(), v_.data(), seqs, T, spec.num_heads, spec.num_kv_heads,
                                        spec.head_dim, spec.window(p_.block->layer), attn_.data(), st,
                                        spec.softmax_scale(), spec.attention_softcap),
            "attention"));
        return TailLinear(attn_.data(), Q, out);
      }
    }
    return absl::InternalError("AWQ on the GPU: unknown parent kind");
  }

  AwqParent p_;
  CudaContext* ctx_;
  cuda::GemmPrecision precision_;
  std::vector<Member> members_;
  DeviceArray<float> x_, ref_, out_, tail_w_, tail_b_, q_norm_, k_norm_, cos_, sin_;
  DeviceArray<float> q_, k_, v_, attn_, fused_, g_, u_;
  DeviceArray<double> s_, partials_;
};

class CudaAwqLossFactory final : public AwqDeviceLossFactory {
 public:
  CudaAwqLossFactory(CudaContext* ctx, cuda::GemmPrecision precision) : ctx_(ctx), precision_(precision) {}

  absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> Create(const AwqParent& parent) override {
    if (parent.kind != AwqParent::Kind::kLinear && (parent.block == nullptr || parent.spec == nullptr))
      return absl::InvalidArgumentError("AWQ on the GPU: an attention or MLP parent needs its block and spec");
    if (parent.members.empty() || parent.rows <= 0 || parent.seq_len <= 0 || parent.rows % parent.seq_len != 0)
      return std::unique_ptr<AwqLossEvaluator>();
    if (parent.kind == AwqParent::Kind::kAttention && parent.rope == nullptr) return std::unique_ptr<AwqLossEvaluator>();
    // Llama 4's attention (interleaved rope, no-rope layers, L2 norms, chunks) has no kernels here: the host searches.
    if (parent.kind == AwqParent::Kind::kAttention && parent.spec->arch->llama4) return std::unique_ptr<AwqLossEvaluator>();
    for (size_t i = 0; i < parent.balance.size(); ++i) {
      FakeQuantSpec spec;
      int64_t group = 0;
      float eps = 0;
      if (parent.groups[i] == nullptr || !parent.groups[i]->scheme.weights ||
          !TrialSpec(*parent.groups[i]->scheme.weights, parent.dtype, parent.balance[i]->in_features, &spec, &group, &eps))
        return std::unique_ptr<AwqLossEvaluator>();
    }
    auto e = std::make_unique<CudaAwqLoss>(parent, ctx_, precision_);
    LLMC_RETURN_IF_ERROR(e->Init());
    return std::unique_ptr<AwqLossEvaluator>(std::move(e));
  }

 private:
  CudaContext* ctx_;
  cuda::GemmPrecision precision_;
};

}  // namespace

std::unique_ptr<AwqDeviceLossFactory> CreateCudaAwqLossFactory(CudaContext* ctx, cuda::GemmPrecision precision) {
  if (precision == cuda::GemmPrecision::kBf16) precision = cuda::GemmPrecision::kTf32;
  return std::make_unique<CudaAwqLossFactory>(ctx, precision);
}

}  // namespace llmc
