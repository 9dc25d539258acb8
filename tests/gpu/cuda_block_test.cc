// The CUDA block runner and whole-model path against the CPU runtime, label `gpu` (skips visibly without a
// device). Uses the tiny checkpoints of every architecture in engine/model/testdata and, when ../shared is present
// (LLMC_SHARED_DIR), the fixture model and compressed-tensors goldens. Tolerances (fp32 GEMMs unless named):
//   block output        ||gpu - cpu|| / ||cpu|| <= 1e-5 and max |gpu - cpu| <= 1e-4 * max |cpu|
//                       tf32: relative 2e-3; bf16: relative 2e-2 (GEMM inputs rounded, see the kernel test)
//   Linear inputs seen by hooks, X^T X of them: relative 1e-5
//   logits              relative 1e-5, max abs 1e-4 * max |cpu|; next-token log-probs vs HF fp32: 1e-4 (as the CPU)
//   perplexity          mean NLL within 1e-6 relative (fp32), 1e-3 (tf32), 1e-2 (bf16)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "engine/model/causal_lm.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/cuda_block_runner.h"
#include "engine/model/cuda_causal_lm.h"
#include "engine/model/model_test_util.h"
#include "engine/model/perplexity.h"
#include "engine/tensor/dtype.h"
#include "tests/gpu/cuda_test_util.h"

namespace llmc {
namespace {

using gpu_test::MaxAbs;
using gpu_test::MaxAbsDiff;
using gpu_test::RelNorm;
using json = nlohmann::json;

// The dense families, then the mixture-of-experts ones (router on the device, top-k on the host, experts gathered).
const char* const kTinyModels[] = {"tiny-llama3",   "tiny-mistral",         "tiny-qwen2",   "tiny-qwen3",
                                   "tiny-gemma2",   "tiny-gemma3",          "tiny-qwen2-swa", "tiny-phi3",
                                   "tiny-phi4mini", "tiny-qwen3moe", "tiny-qwen3moe-nonorm", "tiny-mixtral",
                                   "tiny-qwen2moe", "tiny-llama4text"};

std::vector<int32_t> RandomIds(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = d(rng);
  return ids;
}

std::unique_ptr<CausalLm> OpenTiny(const std::string& name) {
  auto lm = CausalLm::Open(gpu_test::ModelTestData() + "/" + name, {.threads = 4});
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? std::move(*lm) : nullptr;
}

void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, double rel, double max_rel,
                 const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  const double r = RelNorm(gpu, cpu), m = MaxAbsDiff(gpu, cpu);
  EXPECT_LE(r, rel) << what << ": ||gpu - cpu|| / ||cpu||";
  EXPECT_LE(m, max_rel * MaxAbs(cpu)) << what << ": max |gpu - cpu| (max |cpu| " << MaxAbs(cpu) << ")";
  std::printf("%s: relative %.3g, max abs %.3g\n", what.c_str(), r, m);
}

// Records every Linear input (CPU hooks), for comparing what the CPU and the GPU show.
struct RecordingHooks : LinearHooks {
  struct Call {
    std::string name;
    int64_t tokens;
    std::vector<float> input;
  };
  std::vector<Call> calls;
  absl::Status OnInput(const LinearWeight& w, absl::Span<const float> input, int64_t tokens) override {
    calls.push_back({w.name, tokens, std::vector<float>(input.begin(), input.end())});
    return absl::OkStatus();
  }
};

// Device hook: H_name += X^T X of every input, with the runtime's own cuBLAS handle (same stream).
struct HessianHooks : CudaLinearHooks {
  explicit HessianHooks(CudaContext* c) : ctx(c) {}
  CudaContext* ctx;
  std::map<std::string, DeviceArray<float>> h;
  std::map<std::string, int64_t> in_features;
  absl::Status OnDeviceInput(const LinearWeight& w, const float* input, const uint16_t* /*input_bf16*/,
                             int64_t tokens, cudaStream_t s) override {
    if (s != ctx->stream()) return absl::InternalError("hook called on an unexpected stream");
    auto it = h.find(w.name);
    if (it == h.end()) {
      auto a = DeviceArray<float>::Create(w.in_features * w.in_features, "H");
      if (!a.ok()) return a.status();
      if (cudaMemsetAsync(a->data(), 0, a->bytes(), s) != cudaSuccess) return absl::InternalError("memset");
      it = h.emplace(w.name, std::move(*a)).first;
      in_features[w.name] = w.in_features;
    }
    std::string err = ctx->blas()->AccumulateXtX(input, tokens, w.in_features, 1.0f, it->second.data());
    return err.empty() ? absl::OkStatus() : absl::InternalError(err);
  }
};

class CudaBlockTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { LLMC_SKIP_WITHOUT_CUDA(); }
};

// Every block of every tiny architecture, in every precision and with chunking, against RunDecoderBlock.
TEST_P(CudaBlockTest, BlockMatchesRunDecoderBlock) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  const ModelSpec& spec = lm->spec();
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t seqs = 3, T = 37;  // T > the Mistral model's sliding window of 8
  auto x0 = lm->Embed(RandomIds(seqs * T, spec.vocab_size, 1), seqs, T);
  ASSERT_TRUE(x0.ok()) << x0.status();
  HiddenStates x = *x0;
  struct Variant {
    cuda::GemmPrecision p;
    int64_t chunk;
    double rel, max_rel;
  };
  const Variant variants[] = {{cuda::GemmPrecision::kFp32, 8192, 1e-5, 1e-4},
                              {cuda::GemmPrecision::kFp32, 1, 1e-5, 1e-4},  // one sequence per chunk
                              {cuda::GemmPrecision::kTf32, 50, 2e-3, 2e-2},
                              {cuda::GemmPrecision::kBf16, 8192, 2e-2, 2e-1}};
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    auto block = lm->LoadBlock(layer);
    ASSERT_TRUE(block.ok()) << block.status();
    HiddenStates cpu = x;
    ASSERT_TRUE(lm->RunBlock(**block, &cpu).ok());
    for (const Variant& v : variants) {
      // A reduced-precision router may pick another expert for a token whose top-k is nearly tied: MoE blocks are
      // compared in fp32 (their perplexity in every precision, below).
      if (spec.moe.enabled() && v.p != cuda::GemmPrecision::kFp32) continue;
      const std::string what = absl::StrCat(GetParam(), " layer ", layer, " ", cuda::GemmPrecisionName(v.p),
                                            " chunk ", v.chunk);
      auto w = CudaBlockWeights::Create(spec, v.p, ctx->get());
      ASSERT_TRUE(w.ok()) << w.status();
      ASSERT_TRUE((*w)->Upload(**block).ok());
      auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = v.chunk});
      ASSERT_TRUE(runner.ok());
      auto dx = UploadHiddenStates(x, ctx->get());
      ASSERT_TRUE(dx.ok()) << dx.status();
      ASSERT_TRUE((*runner)->Run(w->get(), &*dx).ok());
      HiddenStates gpu;
      ASSERT_TRUE(DownloadHiddenStates(*dx, ctx->get(), &gpu).ok());
      ExpectClose(gpu.data, cpu.data, v.rel, v.max_rel, what);
    }
    x = cpu;
  }
}

// Weights larger than one of the upload's pinned pieces (32 MiB: 8M fp32 or 16M bf16 values) cross in several
// pieces, and a block's Linears cycle through the pieces more than once: tiny-llama3 with its MLP widened to more
// than 16M weights per Linear, uploaded twice (the second upload reuses the pieces the first one's copies read),
// against the CPU in fp32 and bf16.
TEST(CudaBlockWeightsTest, WeightsWiderThanAnUploadPieceMatchCpu) {
  LLMC_SKIP_WITHOUT_CUDA();
  auto lm = OpenTiny("tiny-llama3");
  ASSERT_NE(lm, nullptr);
  ModelSpec spec = lm->spec();
  spec.intermediate_size = (int64_t{1} << 24) / spec.hidden_size + 333;  // gate/up/down: > 16M weights each
  const int64_t H = spec.hidden_size, I = spec.intermediate_size;
  auto loaded = lm->LoadBlock(0);
  ASSERT_TRUE(loaded.ok());
  DecoderBlock block = std::move(**loaded);
  uint32_t seed = 7;
  for (LinearWeight* l : {&block.gate_proj, &block.up_proj, &block.down_proj}) {
    const bool down = l == &block.down_proj;
    l->out_features = down ? H : I;
    l->in_features = down ? I : H;
    l->weight = gpu_test::Normal(static_cast<size_t>(H * I), down ? 0.2f / std::sqrt(float(I)) : 0.05f, seed++);
    if (!l->bias.empty()) l->bias = gpu_test::Normal(static_cast<size_t>(l->out_features), 0.1f, seed++);
  }
  const int64_t seqs = 2, T = 23;
  auto x = lm->Embed(RandomIds(seqs * T, spec.vocab_size, 9), seqs, T);
  ASSERT_TRUE(x.ok());
  HiddenStates cpu = *x;
  ASSERT_TRUE(RunDecoderBlock(spec, lm->Rope(T, 0), block, &cpu, nullptr, 8192, lm->context()).ok());
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  for (auto [p, rel, max_rel] : {std::tuple{cuda::GemmPrecision::kFp32, 1e-5, 1e-4},
                                 std::tuple{cuda::GemmPrecision::kBf16, 2e-2, 2e-1}}) {
    auto w = CudaBlockWeights::Create(spec, p, ctx->get());
    ASSERT_TRUE(w.ok()) << w.status();
    auto runner = CudaBlockRunner::Create(spec, ctx->get());
    ASSERT_TRUE(runner.ok());
    for (int upload = 0; upload < 2; ++upload) {
      ASSERT_TRUE((*w)->Upload(block).ok());
      auto dx = UploadHiddenStates(*x, ctx->get());
      ASSERT_TRUE(dx.ok());
      ASSERT_TRUE((*runner)->Run(w->get(), &*dx).ok());
      HiddenStates gpu;
      ASSERT_TRUE(DownloadHiddenStates(*dx, ctx->get(), &gpu).ok());
      ExpectClose(gpu.data, cpu.data, rel, max_rel,
                  absl::StrCat("intermediate ", I, " ", cuda::GemmPrecisionName(p), " upload ", upload));
    }
  }
}

// Long sequences (several attention tiles, the llama3 rope table at 2048 positions) and the sliding window.
TEST_P(CudaBlockTest, LongSequencesMatch) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  const ModelSpec& spec = lm->spec();
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t seqs = 2, T = 2048;
  auto x = lm->Embed(RandomIds(seqs * T, spec.vocab_size, 2), seqs, T);
  ASSERT_TRUE(x.ok());
  auto block = lm->LoadBlock(0);
  ASSERT_TRUE(block.ok());
  auto dx = UploadHiddenStates(*x, ctx->get());
  ASSERT_TRUE(dx.ok());
  HiddenStates cpu = *x;
  ASSERT_TRUE(lm->RunBlock(**block, &cpu).ok());
  auto w = CudaBlockWeights::Create(spec, cuda::GemmPrecision::kFp32, ctx->get());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Upload(**block).ok());
  auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = 3000});  // one sequence a chunk
  ASSERT_TRUE(runner.ok());
  ASSERT_TRUE((*runner)->Run(w->get(), &*dx).ok());
  HiddenStates gpu;
  ASSERT_TRUE(DownloadHiddenStates(*dx, ctx->get(), &gpu).ok());
  ExpectClose(gpu.data, cpu.data, 1e-5, 1e-4, absl::StrCat(GetParam(), " seq_len 2048"));
}

// Host hooks through the adapter see what the CPU hooks see; device hooks accumulate the same X^T X.
TEST_P(CudaBlockTest, HooksSeeTheSameInputs) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  const ModelSpec& spec = lm->spec();
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t seqs = 4, T = 19;
  auto x = lm->Embed(RandomIds(seqs * T, spec.vocab_size, 3), seqs, T);
  ASSERT_TRUE(x.ok());
  auto block = lm->LoadBlock(1);
  ASSERT_TRUE(block.ok());
  RecordingHooks cpu_hooks, gpu_hooks;
  HiddenStates cpu = *x;
  // Chunks of 2 sequences on both sides, so the hook calls line up one to one.
  ASSERT_TRUE(RunDecoderBlock(spec, lm->Rope(T, (*block)->layer), **block, &cpu, &cpu_hooks, 2 * T, lm->context()).ok());
  auto w = CudaBlockWeights::Create(spec, cuda::GemmPrecision::kFp32, ctx->get());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Upload(**block).ok());
  auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = 2 * T});
  ASSERT_TRUE(runner.ok());
  auto dx = UploadHiddenStates(*x, ctx->get());
  ASSERT_TRUE(dx.ok());
  HostLinearHooksAdapter adapter(&gpu_hooks);
  ASSERT_TRUE((*runner)->Run(w->get(), &*dx, &adapter).ok());
  ASSERT_EQ(gpu_hooks.calls.size(), cpu_hooks.calls.size());
  const size_t linears = (*block)->linears().size();
  if (!spec.moe.enabled()) {
    EXPECT_EQ(cpu_hooks.calls.size(), linears * 2);  // 7 Linears, or 4 when fused
  }
  for (size_t i = 0; i < cpu_hooks.calls.size(); ++i) {
    EXPECT_EQ(gpu_hooks.calls[i].name, cpu_hooks.calls[i].name);
    EXPECT_EQ(gpu_hooks.calls[i].tokens, cpu_hooks.calls[i].tokens);
    EXPECT_LE(RelNorm(gpu_hooks.calls[i].input, cpu_hooks.calls[i].input), 1e-5) << cpu_hooks.calls[i].name;
  }
  // Device hooks: X^T X per module over all chunks.
  auto dx2 = UploadHiddenStates(*x, ctx->get());
  ASSERT_TRUE(dx2.ok());
  HessianHooks hess(ctx->get());
  ASSERT_TRUE((*runner)->Run(w->get(), &*dx2, &hess).ok());
  if (!spec.moe.enabled()) {
    ASSERT_EQ(hess.h.size(), linears);
  }
  EXPECT_LE(hess.h.size(), linears);
  for (auto& [name, dh] : hess.h) {
    const int64_t in = hess.in_features[name];
    std::vector<float> ref(in * in, 0.0f);
    std::vector<double> acc(in * in, 0.0);
    for (const auto& c : cpu_hooks.calls) {
      if (c.name != name) continue;
      for (int64_t t = 0; t < c.tokens; ++t)
        for (int64_t i = 0; i < in; ++i)
          for (int64_t j = 0; j < in; ++j) acc[i * in + j] += double(c.input[t * in + i]) * c.input[t * in + j];
    }
    for (size_t i = 0; i < acc.size(); ++i) ref[i] = static_cast<float>(acc[i]);
    EXPECT_LE(RelNorm(gpu_test::ToHost(dh, in * in), ref), 1e-5) << name;
  }
}

// Device hook that copies the bf16 input of every Linear to the host, and the fp32 one when it asks for it.
struct Bf16InputHooks : CudaLinearHooks {
  explicit Bf16InputHooks(bool want_fp32) : fp32(want_fp32) {}
  bool fp32;
  struct Call {
    std::string name;
    std::vector<uint16_t> bf16;
    std::vector<float> f32;
  };
  std::vector<Call> calls;
  bool NeedsFp32Input() const override { return fp32; }
  absl::Status OnDeviceInput(const LinearWeight& w, const float* input, const uint16_t* input_bf16, int64_t tokens,
                             cudaStream_t s) override {
    if (input_bf16 == nullptr) return absl::InternalError(absl::StrCat(w.name, ": bf16 mode gave no bf16 input"));
    const size_t n = static_cast<size_t>(tokens * w.in_features);
    Call c{w.name, std::vector<uint16_t>(n), {}};
    if (cudaMemcpyAsync(c.bf16.data(), input_bf16, n * 2, cudaMemcpyDeviceToHost, s) != cudaSuccess)
      return absl::InternalError("copy");
    if (fp32) {
      c.f32.resize(n);
      if (cudaMemcpyAsync(c.f32.data(), input, n * 4, cudaMemcpyDeviceToHost, s) != cudaSuccess)
        return absl::InternalError("copy");
    }
    if (cudaStreamSynchronize(s) != cudaSuccess) return absl::InternalError("sync");
    calls.push_back(std::move(c));
    return absl::OkStatus();
  }
};

// bf16 mode writes the fp32 outputs of the norms and of the MLP activation only where something reads them (hooks
// that ask for fp32, quantized inputs, the MoE MLP); the GEMMs read the bf16 copies those kernels write. A block
// run without hooks, with hooks that read only the bf16 inputs, and with hooks that read fp32 gives the same bits,
// the hooks see the same bf16 inputs, and each is its fp32 input rounded to bf16.
TEST_P(CudaBlockTest, Bf16ModeWritesFp32InputsOnlyWhereRead) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  const ModelSpec& spec = lm->spec();
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t seqs = 4, T = 19;
  auto x = lm->Embed(RandomIds(seqs * T, spec.vocab_size, 5), seqs, T);
  ASSERT_TRUE(x.ok());
  auto block = lm->LoadBlock(spec.num_layers - 1);
  ASSERT_TRUE(block.ok());
  auto w = CudaBlockWeights::Create(spec, cuda::GemmPrecision::kBf16, ctx->get());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Upload(**block).ok());
  auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = 2 * T});
  ASSERT_TRUE(runner.ok());
  Bf16InputHooks with_fp32(true), bf16_only(false);
  std::vector<std::vector<float>> outs;
  for (CudaLinearHooks* h : std::initializer_list<CudaLinearHooks*>{nullptr, &bf16_only, &with_fp32}) {
    auto dx = UploadHiddenStates(*x, ctx->get());
    ASSERT_TRUE(dx.ok());
    ASSERT_TRUE((*runner)->Run(w->get(), &*dx, h).ok());
    HiddenStates out;
    ASSERT_TRUE(DownloadHiddenStates(*dx, ctx->get(), &out).ok());
    outs.push_back(std::move(out.data));
  }
  ASSERT_EQ(outs[0].size(), outs[1].size());
  ASSERT_EQ(outs[0].size(), outs[2].size());
  EXPECT_EQ(std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4), 0) << "bf16-only hooks";
  EXPECT_EQ(std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * 4), 0) << "fp32 hooks";
  ASSERT_EQ(bf16_only.calls.size(), with_fp32.calls.size());
  ASSERT_GE(with_fp32.calls.size(), (*block)->linears().size());
  for (size_t i = 0; i < with_fp32.calls.size(); ++i) {
    const auto& a = with_fp32.calls[i];
    const auto& b = bf16_only.calls[i];
    ASSERT_EQ(a.name, b.name);
    ASSERT_EQ(a.bf16, b.bf16) << a.name;
    for (size_t j = 0; j < a.f32.size(); ++j) ASSERT_EQ(a.bf16[j], FloatToBF16(a.f32[j])) << a.name << " at " << j;
  }
}

// The whole model on the device against CausalLm::Forward and HF's fp32 log-probs (reference.json).
TEST_P(CudaBlockTest, ForwardMatchesCpuAndTransformers) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  json ref = testing_util::ReadJson(gpu_test::ModelTestData() + "/" + GetParam() + "/reference.json");
  ASSERT_FALSE(ref.is_discarded());
  const int64_t V = lm->spec().vocab_size;
  // Sequences of equal length run as one batch (the references hold sequences of several lengths).
  std::map<int64_t, std::vector<int64_t>> by_len;
  for (size_t s = 0; s < ref["input_ids"].size(); ++s) by_len[ref["input_ids"][s].size()].push_back(s);
  for (const auto& [T, members] : by_len) {
    std::vector<int32_t> ids;
    for (int64_t s : members)
      for (int32_t id : ref["input_ids"][s]) ids.push_back(id);
    const int64_t seqs = members.size();
    std::map<int, std::vector<float>> cpu_hidden, gpu_hidden;
    auto cpu = lm->Forward(ids, seqs, T, [&](int i, const HiddenStates& x) { cpu_hidden[i] = x.data; });
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    for (bool prefetch : {true, false}) {
      auto gpu_lm = CudaCausalLm::Create(lm.get(), {.prefetch = prefetch});
      ASSERT_TRUE(gpu_lm.ok()) << gpu_lm.status();
      auto gpu = (*gpu_lm)->Forward(ids, seqs, T, [&](int i, const HiddenStates& x) { gpu_hidden[i] = x.data; });
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      ASSERT_EQ(gpu_hidden.size(), cpu_hidden.size());
      for (auto& [i, h] : cpu_hidden)
        ExpectClose(gpu_hidden[i], h, 1e-5, 1e-4, absl::StrCat(GetParam(), " T ", T, " hidden state ", i));
      ExpectClose(*gpu, *cpu, 1e-5, 1e-4, absl::StrCat(GetParam(), " T ", T, " logits, prefetch ", prefetch));
      for (int64_t m = 0; m < seqs; ++m) {
        const int64_t s = members[m];
        for (int64_t t = 0; t + 1 < T; ++t) {
          const double lp = -TokenNll(gpu->data() + (m * T + t) * V, V, ids[m * T + t + 1]);
          EXPECT_NEAR(lp, ref["next_token_logprobs"][s][t].get<double>(), 1e-4) << "seq " << s << " t " << t;
        }
      }
    }
  }
}

// Perplexity on the device: same protocol and passes as the CPU, in every precision.
TEST_P(CudaBlockTest, PerplexityMatchesCpu) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  auto ids = RandomIds(64 * 5 + 17, lm->spec().vocab_size, 4);
  PerplexityOptions po;
  po.seq_len = 64;
  po.max_windows = 5;
  po.windows_per_pass = 2;  // three passes
  auto cpu = ComputePerplexity(*lm, ids, po);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  for (auto [p, tol] : {std::pair{cuda::GemmPrecision::kFp32, 1e-6}, {cuda::GemmPrecision::kTf32, 1e-3},
                        {cuda::GemmPrecision::kBf16, 1e-2}}) {
    auto gpu = ComputePerplexityCuda(*lm, ids, po, {.precision = p});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    EXPECT_EQ(gpu->windows, 5);
    EXPECT_EQ(gpu->tokens, cpu->tokens);
    EXPECT_EQ(gpu->predicted_tokens, cpu->predicted_tokens);
    EXPECT_NEAR(gpu->mean_nll, cpu->mean_nll, tol * cpu->mean_nll) << cuda::GemmPrecisionName(p);
    if (p == cuda::GemmPrecision::kFp32) {
      for (int64_t w = 0; w < 5; ++w)
        EXPECT_NEAR(gpu->window_nll_sum[w], cpu->window_nll_sum[w], 1e-6 * cpu->window_nll_sum[w]);
    }
    std::printf("%s perplexity: cpu %.6f, cuda %s %.6f\n", GetParam(), cpu->perplexity, cuda::GemmPrecisionName(p),
                gpu->perplexity);
  }
}

// Calibration of every expert on the device: every expert's Linears see every token (as on the CPU), and the block's
// output is still the routed one.
TEST_P(CudaBlockTest, AllExpertsModeMatchesCpu) {
  auto lm = OpenTiny(GetParam());
  ASSERT_NE(lm, nullptr);
  const ModelSpec& spec = lm->spec();
  if (!spec.moe.enabled()) GTEST_SKIP() << GetParam() << " is dense";
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t seqs = 2, T = 11;
  auto x = lm->Embed(RandomIds(seqs * T, spec.vocab_size, 5), seqs, T);
  ASSERT_TRUE(x.ok());
  int layer = 0;
  while (!spec.moe.IsSparse(layer)) ++layer;
  auto block = lm->LoadBlock(layer);
  ASSERT_TRUE(block.ok());
  struct AllHooks : RecordingHooks {
    bool SeeAllExperts() const override { return true; }
  } cpu_hooks, gpu_hooks;
  HiddenStates cpu = *x;
  ASSERT_TRUE(RunDecoderBlock(spec, lm->Rope(T), **block, &cpu, &cpu_hooks, seqs * T, lm->context()).ok());
  HiddenStates routed = *x;
  ASSERT_TRUE(lm->RunBlock(**block, &routed).ok());
  ExpectClose(cpu.data, routed.data, 1e-6, 1e-5, absl::StrCat(GetParam(), " all-experts vs routed output (cpu)"));
  auto w = CudaBlockWeights::Create(spec, cuda::GemmPrecision::kFp32, ctx->get());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Upload(**block).ok());
  auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = seqs * T});
  ASSERT_TRUE(runner.ok());
  auto dx = UploadHiddenStates(*x, ctx->get());
  ASSERT_TRUE(dx.ok());
  HostLinearHooksAdapter adapter(&gpu_hooks);
  ASSERT_TRUE((*runner)->Run(w->get(), &*dx, &adapter).ok());
  HiddenStates gpu;
  ASSERT_TRUE(DownloadHiddenStates(*dx, ctx->get(), &gpu).ok());
  ExpectClose(gpu.data, cpu.data, 1e-5, 1e-4, absl::StrCat(GetParam(), " all-experts block"));
  ASSERT_EQ(gpu_hooks.calls.size(), cpu_hooks.calls.size());
  for (size_t i = 0; i < cpu_hooks.calls.size(); ++i) {
    EXPECT_EQ(gpu_hooks.calls[i].name, cpu_hooks.calls[i].name);
    EXPECT_EQ(cpu_hooks.calls[i].tokens, seqs * T) << cpu_hooks.calls[i].name;
    EXPECT_EQ(gpu_hooks.calls[i].tokens, seqs * T) << gpu_hooks.calls[i].name;
    EXPECT_LE(RelNorm(gpu_hooks.calls[i].input, cpu_hooks.calls[i].input), 1e-5) << cpu_hooks.calls[i].name;
  }
}

// Llama 4 with what the parity model does not exercise: a no-rope layer (query temperature), chunked attention
// (chunks of 8 in sequences of 37) and, on the rope layer, the interleaved rotation and L2 norm; every block against
// RunDecoderBlock (fp32; with chunking of the runner's batch) and the perplexity in every precision.
TEST(CudaLlama4Test, NoRopeAndChunkedLayersMatchCpu) {
  LLMC_SKIP_WITHOUT_CUDA();
  const std::string tmp = testing_util::WriteLlama4Variant(8);
  ASSERT_FALSE(tmp.empty());
  auto opened = CausalLm::Open(tmp, {.threads = 4});
  std::filesystem::remove_all(tmp);
  ASSERT_TRUE(opened.ok()) << opened.status();
  CausalLm& lm = **opened;
  const ModelSpec& spec = lm.spec();
  ASSERT_FALSE(spec.uses_rope(1));
  ASSERT_EQ(spec.chunk(0), 8);
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t seqs = 3, T = 37;
  auto x0 = lm.Embed(RandomIds(seqs * T, spec.vocab_size, 8), seqs, T);
  ASSERT_TRUE(x0.ok());
  HiddenStates x = *x0;
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    auto block = lm.LoadBlock(layer);
    ASSERT_TRUE(block.ok()) << block.status();
    HiddenStates cpu = x;
    ASSERT_TRUE(lm.RunBlock(**block, &cpu).ok());
    for (int64_t chunk : {int64_t{8192}, T}) {
      auto w = CudaBlockWeights::Create(spec, cuda::GemmPrecision::kFp32, ctx->get());
      ASSERT_TRUE(w.ok()) << w.status();
      ASSERT_TRUE((*w)->Upload(**block).ok());
      auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = chunk});
      ASSERT_TRUE(runner.ok());
      auto dx = UploadHiddenStates(x, ctx->get());
      ASSERT_TRUE(dx.ok());
      ASSERT_TRUE((*runner)->Run(w->get(), &*dx).ok());
      HiddenStates gpu;
      ASSERT_TRUE(DownloadHiddenStates(*dx, ctx->get(), &gpu).ok());
      ExpectClose(gpu.data, cpu.data, 1e-5, 1e-4, absl::StrCat("llama4 variant layer ", layer, " chunk ", chunk));
    }
    x = cpu;
  }
  auto ids = RandomIds(64 * 3, spec.vocab_size, 9);
  PerplexityOptions po;
  po.seq_len = 64;
  auto cpu = ComputePerplexity(lm, ids, po);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  for (auto [p, tol] : {std::pair{cuda::GemmPrecision::kFp32, 1e-6}, {cuda::GemmPrecision::kTf32, 1e-3},
                        {cuda::GemmPrecision::kBf16, 1e-2}}) {
    auto gpu = ComputePerplexityCuda(lm, ids, po, {.precision = p});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    EXPECT_NEAR(gpu->mean_nll, cpu->mean_nll, tol * cpu->mean_nll) << cuda::GemmPrecisionName(p);
    std::printf("llama4 variant perplexity: cpu %.6f, cuda %s %.6f\n", cpu->perplexity, cuda::GemmPrecisionName(p),
                gpu->perplexity);
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, CudaBlockTest, ::testing::ValuesIn(kTinyModels),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

class CudaModelTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMC_SKIP_WITHOUT_CUDA(); }
};

TEST_F(CudaModelTest, BadInputsFailCleanly) {
  auto lm = OpenTiny("tiny-llama3");
  ASSERT_NE(lm, nullptr);
  auto other = OpenTiny("tiny-qwen3");
  ASSERT_NE(other, nullptr);
  auto ctx = CudaContext::Create();
  ASSERT_TRUE(ctx.ok());
  auto w = CudaBlockWeights::Create(lm->spec(), cuda::GemmPrecision::kFp32, ctx->get());
  ASSERT_TRUE(w.ok());
  auto foreign = other->LoadBlock(0);
  ASSERT_TRUE(foreign.ok());
  absl::Status s = (*w)->Upload(**foreign);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  auto runner = CudaBlockRunner::Create(lm->spec(), ctx->get());
  ASSERT_TRUE(runner.ok());
  HiddenStates narrow;
  narrow.num_seqs = 1;
  narrow.seq_len = 4;
  narrow.hidden = 8;
  narrow.data.assign(32, 0.5f);
  auto dx = UploadHiddenStates(narrow, ctx->get());
  ASSERT_TRUE(dx.ok());
  s = (*runner)->Run(w->get(), &*dx);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  auto ok_block = lm->LoadBlock(0);
  ASSERT_TRUE(ok_block.ok());
  ASSERT_TRUE((*w)->Upload(**ok_block).ok());
  auto gpu_lm = CudaCausalLm::Create(lm.get());
  ASSERT_TRUE(gpu_lm.ok());
  std::vector<int32_t> bad = {1, 2, 100000};
  EXPECT_FALSE((*gpu_lm)->Forward(bad, 1, 3).ok());
  EXPECT_EQ(CudaContext::Create(1000).status().code(), absl::StatusCode::kInvalidArgument);
}

// Compressed-tensors checkpoints (dequantized on the host by LoadBlock) run the same on the device.
TEST_F(CudaModelTest, CompressedCheckpointsMatchCpu) {
  const std::string shared = testing_util::SharedDir();
  if (shared.empty() || !std::filesystem::is_directory(shared + "/golden/ct/ref_W4A16"))
    GTEST_SKIP() << "../shared/golden/ct not found (set LLMC_SHARED_DIR to run)";
  for (const char* name : {"ref_W4A16", "ref_NVFP4A16"}) {
    auto lm = CausalLm::Open(shared + "/golden/ct/" + name, {.threads = 4});
    ASSERT_TRUE(lm.ok()) << lm.status();
    auto ids = RandomIds(2 * 45, (*lm)->spec().vocab_size, 5);
    auto cpu = (*lm)->Forward(ids, 2, 45);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    auto gpu_lm = CudaCausalLm::Create(lm->get());
    ASSERT_TRUE(gpu_lm.ok()) << gpu_lm.status();
    auto gpu = (*gpu_lm)->Forward(ids, 2, 45);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ExpectClose(*gpu, *cpu, 1e-5, 1e-4, absl::StrCat(name, " logits"));
  }
}

// The fixture model (6 layers, hidden 384, vocab 8192): logits and perplexity of 512-token windows.
TEST_F(CudaModelTest, FixtureMatchesCpu) {
  const std::string dir = testing_util::FixtureDir();
  if (dir.empty()) GTEST_SKIP() << "../shared/models/llmc-fixture-llama not found (set LLMC_SHARED_DIR to run)";
  auto lm = CausalLm::Open(dir, {.threads = 8});
  ASSERT_TRUE(lm.ok()) << lm.status();
  auto ids = RandomIds(512 * 6, (*lm)->spec().vocab_size, 6);
  auto cpu = (*lm)->Forward(absl::MakeConstSpan(ids).subspan(0, 2 * 512), 2, 512);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto gpu_lm = CudaCausalLm::Create(lm->get());
  ASSERT_TRUE(gpu_lm.ok()) << gpu_lm.status();
  auto gpu = (*gpu_lm)->Forward(absl::MakeConstSpan(ids).subspan(0, 2 * 512), 2, 512);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ExpectClose(*gpu, *cpu, 1e-5, 1e-4, "fixture logits");
  PerplexityOptions po;
  po.seq_len = 512;
  po.max_windows = 6;
  auto pc = ComputePerplexity(**lm, ids, po);
  ASSERT_TRUE(pc.ok()) << pc.status();
  for (auto [p, tol] : {std::pair{cuda::GemmPrecision::kFp32, 1e-6}, {cuda::GemmPrecision::kTf32, 1e-3},
                        {cuda::GemmPrecision::kBf16, 1e-2}}) {
    auto pg = ComputePerplexityCuda(**lm, ids, po, {.precision = p});
    ASSERT_TRUE(pg.ok()) << pg.status();
    EXPECT_NEAR(pg->mean_nll, pc->mean_nll, tol * pc->mean_nll) << cuda::GemmPrecisionName(p);
    std::printf("fixture perplexity (random ids): cpu %.6f, cuda %s %.6f\n", pc->perplexity,
                cuda::GemmPrecisionName(p), pg->perplexity);
  }
}

}  // namespace
}  // namespace llmc
