// llmc-bench-block: tokens/s of the CUDA block runner (engine/model/cuda_block_runner.h) on one decoder block of the
// Llama-3-8B shape (hidden 4096, 32 heads / 8 kv heads of 128, intermediate 14336, llama3 rope) with random
// weights, for a batch of sequences, in each GEMM precision. bench/gpu/block_bench.py measures the same block in
// PyTorch/transformers; bench/gpu/bench_block.sh runs both and prints the ratios.
//
//   llmc-bench-block [--batch 4] [--seq-len 2048] [--precision fp32,tf32,bf16] [--iters 10] [--warmup 3]
//                    [--max-chunk-tokens 8192] [--profile] [--json]
//
// tokens/s = batch * seq_len / (median over --iters runs of the time of one Run over the whole batch), each run
// timed with CUDA events on the compute stream, after --warmup untimed runs; the weights are uploaded once before
// (upload is not timed; it overlaps compute in `llmc eval`). Hidden states are re-initialized before each run.
// --profile: after the timed runs, --iters more with CUDA events between the runner's stages
// (CudaBlockRunnerOptions::profile), reported as mean milliseconds per stage ("stages_ms"); the events are kept out
// of the tokens/s figure.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/backend/cuda/rtn_kernels.h"
#include "engine/model/architecture.h"
#include "engine/model/cuda_block_runner.h"

namespace {

using namespace llmc;

ModelSpec Llama3_8B() {
  ModelSpec s;
  s.arch = &SupportedArchitectures()[0];
  s.hidden_size = 4096;
  s.num_layers = 1;
  s.num_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.intermediate_size = 14336;
  s.vocab_size = 128256;
  s.rms_norm_eps = 1e-5;
  s.rope.type = RopeSpec::Type::kLlama3;
  s.rope.theta = 500000.0;
  s.rope.factor = 8.0;
  s.rope.low_freq_factor = 1.0;
  s.rope.high_freq_factor = 4.0;
  s.rope.original_max_position_embeddings = 8192;
  return s;
}

// Uniform(-1/sqrt(in), 1/sqrt(in)) like nn.Linear's default init, from a fast generator (218M values).
void Fill(LinearWeight* w, const std::string& name, int64_t out, int64_t in, uint64_t seed) {
  w->name = name;
  w->layer = 0;
  w->out_features = out;
  w->in_features = in;
  w->weight.resize(static_cast<size_t>(out * in));
  const float bound = 1.0f / std::sqrt(static_cast<float>(in));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : w->weight) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = bound * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "llmc-bench-block: error: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokens/s of the CUDA decoder block runner on a Llama-3-8B-shaped block"};
  int64_t batch = 4, seq_len = 2048, max_chunk = 8192;
  int iters = 10, warmup = 3;
  std::string precisions = "fp32,tf32,bf16";
  bool json_out = false, profile = false;
  app.add_option("--batch", batch, "sequences per run")->capture_default_str();
  app.add_option("--seq-len", seq_len, "tokens per sequence")->capture_default_str();
  app.add_option("--precision", precisions, "comma-separated GEMM precisions: fp32, tf32, bf16")->capture_default_str();
  app.add_option("--iters", iters, "timed runs (the median is reported)")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed runs first")->capture_default_str();
  app.add_option("--max-chunk-tokens", max_chunk, "CudaBlockRunnerOptions::max_chunk_tokens")->capture_default_str();
  app.add_flag("--json", json_out, "print one JSON object");
  app.add_flag("--profile", profile, "also time each stage of the block (mean ms over --iters runs)");
  CLI11_PARSE(app, argc, argv);
  if (batch < 1 || seq_len < 1 || iters < 1 || warmup < 0)
    return Fail(absl::InvalidArgumentError("--batch, --seq-len and --iters must be >= 1, --warmup >= 0"));

  const ModelSpec spec = Llama3_8B();
  auto ctx = CudaContext::Create();
  if (!ctx.ok()) return Fail(ctx.status());
  DecoderBlock block;
  block.layer = 0;
  block.input_norm.assign(spec.hidden_size, 1.0f);
  block.post_attention_norm.assign(spec.hidden_size, 1.0f);
  const int64_t H = spec.hidden_size, Q = spec.q_size(), KV = spec.kv_size(), I = spec.intermediate_size;
  Fill(&block.q_proj, "model.layers.0.self_attn.q_proj", Q, H, 1);
  Fill(&block.k_proj, "model.layers.0.self_attn.k_proj", KV, H, 2);
  Fill(&block.v_proj, "model.layers.0.self_attn.v_proj", KV, H, 3);
  Fill(&block.o_proj, "model.layers.0.self_attn.o_proj", H, Q, 4);
  Fill(&block.gate_proj, "model.layers.0.mlp.gate_proj", I, H, 5);
  Fill(&block.up_proj, "model.layers.0.mlp.up_proj", I, H, 6);
  Fill(&block.down_proj, "model.layers.0.mlp.down_proj", H, I, 7);

  HiddenStates x0;
  x0.num_seqs = batch;
  x0.seq_len = seq_len;
  x0.hidden = H;
  x0.data.resize(static_cast<size_t>(batch * seq_len * H));
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : x0.data) v = nd(rng);
  auto x_init = UploadHiddenStates(x0, ctx->get());
  if (!x_init.ok()) return Fail(x_init.status());
  auto x = UploadHiddenStates(x0, ctx->get());
  if (!x.ok()) return Fail(x.status());

  nlohmann::json results = nlohmann::json::array();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (absl::string_view name : absl::StrSplit(precisions, ',')) {
    cuda::GemmPrecision p;
    if (name == "fp32") {
      p = cuda::GemmPrecision::kFp32;
    } else if (name == "tf32") {
      p = cuda::GemmPrecision::kTf32;
    } else if (name == "bf16") {
      p = cuda::GemmPrecision::kBf16;
    } else {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--precision ", name, ": use fp32, tf32 or bf16")));
    }
    auto w = CudaBlockWeights::Create(spec, p, ctx->get());
    if (!w.ok()) return Fail(w.status());
    if (auto s = (*w)->Upload(block); !s.ok()) return Fail(s);
    auto runner = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = max_chunk});
    if (!runner.ok()) return Fail(runner.status());
    std::vector<float> ms;
    for (int i = 0; i < warmup + iters; ++i) {
      cudaMemcpyAsync(x->data.data(), x_init->data.data(), x->data.bytes(), cudaMemcpyDeviceToDevice,
                      (*ctx)->stream());
      cudaEventRecord(start, (*ctx)->stream());
      if (auto s = (*runner)->Run(w->get(), &*x); !s.ok()) return Fail(s);
      cudaEventRecord(stop, (*ctx)->stream());
      if (auto s = (*ctx)->Synchronize(); !s.ok()) return Fail(s);
      float t = 0;
      cudaEventElapsedTime(&t, start, stop);
      if (i >= warmup) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const double tps = batch * seq_len / (median / 1e3);
    // Checksum of the output, so a broken run shows (NaN or zero).
    HiddenStates out;
    if (auto s = DownloadHiddenStates(*x, ctx->get(), &out); !s.ok()) return Fail(s);
    double rms = 0;
    for (float v : out.data) rms += double(v) * v;
    rms = std::sqrt(rms / out.data.size());
    nlohmann::json stages = nlohmann::json::array();
    if (profile) {
      auto prof = CudaBlockRunner::Create(spec, ctx->get(), {.max_chunk_tokens = max_chunk, .profile = true});
      if (!prof.ok()) return Fail(prof.status());
      std::vector<std::pair<std::string, double>> sum;
      for (int i = 0; i < 1 + iters; ++i) {  // one untimed run first
        cudaMemcpyAsync(x->data.data(), x_init->data.data(), x->data.bytes(), cudaMemcpyDeviceToDevice,
                        (*ctx)->stream());
        if (auto s = (*prof)->Run(w->get(), &*x); !s.ok()) return Fail(s);
        auto st = (*prof)->TakeStageMilliseconds();
        if (!st.ok()) return Fail(st.status());
        if (i == 0) continue;
        for (const auto& [stage, ms_stage] : *st) {
          auto it = std::find_if(sum.begin(), sum.end(), [&](const auto& e) { return e.first == stage; });
          if (it == sum.end()) sum.push_back({stage, ms_stage});
          else it->second += ms_stage;
        }
      }
      for (const auto& [stage, total] : sum) {
        stages.push_back({{"stage", stage}, {"ms", total / iters}});
        if (!json_out) std::printf("  %-22s %8.2f ms\n", stage.c_str(), total / iters);
      }
    }
    results.push_back({{"precision", std::string(name)},
                       {"stages_ms", stages},
                       {"median_ms", median},
                       {"min_ms", ms.front()},
                       {"max_ms", ms.back()},
                       {"tokens_per_second", tps},
                       {"output_rms", rms},
                       {"weight_bytes", (*w)->device_bytes()},
                       {"scratch_bytes", (*runner)->scratch_bytes()}});
    if (!json_out)
      std::printf("llmc CUDA block %-5s  %9.0f tokens/s  (median %.2f ms, min %.2f, max %.2f; output rms %.4f)\n",
                  std::string(name).c_str(), tps, median, ms.front(), ms.back(), rms);
  }
  if (json_out) {
    nlohmann::json j = {{"bench", "llmc-bench-block"}, {"device", cuda::DeviceName()}, {"shape", "llama3-8b"},
                        {"batch", batch},          {"seq_len", seq_len},             {"tokens", batch * seq_len},
                        {"iters", iters},          {"results", results}};
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("device %s, batch %lld x %lld tokens\n", cuda::DeviceName().c_str(), (long long)batch,
                (long long)seq_len);
  }
  return 0;
}
