// A BlockView over a few small tensors, for the tests of the smoothing algorithms.
#pragma once

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/algo/block_view.h"
#include "engine/format/algorithms.h"
#include "engine/format/quant_config.h"
#include "engine/format/quant_scheme.h"

namespace llmc::testing {

// Statistics of one input, owned by the fake.
struct FakeInput {
  std::vector<float> channel_max;
  std::vector<double> channel_abs_sum;
  std::vector<float> captured;  // [tokens, in]
  int64_t tokens = 0;
};

// Linears named "<prefix><leaf>", norms "<prefix>input_layernorm" and "<prefix>post_attention_layernorm".
// ParentForward computes every balance Linear on the captured inputs of balance[0] (x W^T + b) and concatenates
// the outputs: the parent is the balance Linears themselves.
class FakeBlockView final : public BlockView {
 public:
  static constexpr char kPrefix[] = "model.layers.0.";

  explicit FakeBlockView(DType dtype = DType::kF32) : dtype_(dtype) {}

  // Adds a Linear `leaf` ("self_attn.q_proj") [out, in] with N(0, 0.05) weights from `seed`.
  LinearWeight& AddLinear(const std::string& leaf, int64_t out, int64_t in, uint32_t seed) {
    LinearWeight lw;
    lw.name = kPrefix + leaf;
    lw.out_features = out;
    lw.in_features = in;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    lw.weight.resize(out * in);
    for (float& v : lw.weight) v = normal(rng);
    linears_.push_back(std::move(lw));
    return linears_.back();
  }
  // The seven Linears of a Llama block (seeds 1 to 7 in forward order): q and o [hidden, hidden], k and v [kv,
  // hidden], gate and up [inter, hidden], down [hidden, inter].
  void AddDecoderLinears(int64_t hidden, int64_t kv, int64_t inter) {
    AddLinear("self_attn.q_proj", hidden, hidden, 1);
    AddLinear("self_attn.k_proj", kv, hidden, 2);
    AddLinear("self_attn.v_proj", kv, hidden, 3);
    AddLinear("self_attn.o_proj", hidden, hidden, 4);
    AddLinear("mlp.gate_proj", inter, hidden, 5);
    AddLinear("mlp.up_proj", inter, hidden, 6);
    AddLinear("mlp.down_proj", hidden, inter, 7);
  }
  std::vector<float>& input_norm() { return input_norm_; }
  std::vector<float>& post_attention_norm() { return post_attention_norm_; }
  // Makes the activations x [tokens, in] (one sequence) the input of `leaf`'s input group: their max |x| and sum |x|
  // per channel, and all of them captured.
  void SetInput(const std::string& leaf, std::vector<float> x, int64_t in) {
    FakeInput& f = inputs_[InputGroup(kPrefix + leaf)];
    f.tokens = static_cast<int64_t>(x.size()) / in;
    f.channel_max.assign(in, 0.0f);
    f.channel_abs_sum.assign(in, 0.0);
    for (int64_t t = 0; t < f.tokens; ++t)
      for (int64_t c = 0; c < in; ++c) {
        f.channel_max[c] = std::max(f.channel_max[c], std::fabs(x[t * in + c]));
        f.channel_abs_sum[c] += std::fabs(x[t * in + c]);
      }
    f.captured = std::move(x);
  }
  // Quantizes every Linear with `preset` except the `ignore` targets.
  void Quantize(const std::string& preset, std::vector<std::string> ignore = {}) {
    config_ = *QuantConfig::Create({{"group_0", *PresetScheme(preset)}}, std::move(ignore));
  }
  LinearWeight* linear(const std::string& leaf) {
    for (LinearWeight& l : linears_)
      if (l.name == kPrefix + leaf) return &l;
    return nullptr;
  }

  std::string prefix() const override { return kPrefix; }
  DType dtype() const override { return dtype_; }
  std::vector<LinearWeight*> linears() override {
    std::vector<LinearWeight*> out;
    for (LinearWeight& l : linears_) out.push_back(&l);
    return out;
  }
  std::vector<std::pair<std::string, std::vector<float>*>> norms() override {
    return {{std::string(kPrefix) + "input_layernorm", &input_norm_},
            {std::string(kPrefix) + "post_attention_layernorm", &post_attention_norm_}};
  }
  std::optional<InputStatistics> input_statistics(const std::string& module) const override {
    auto it = inputs_.find(InputGroup(module));
    if (it == inputs_.end()) return std::nullopt;
    const FakeInput& f = it->second;
    return InputStatistics{.tokens = f.tokens,
                           .channel_max = f.channel_max,
                           .channel_abs_sum = f.channel_abs_sum,
                           .captured = f.captured,
                           .captured_tokens = f.tokens,
                           .captured_seq_len = f.tokens};  // one sequence
  }
  const ConfigGroup* weight_group(const std::string& module) const override {
    if (!config_) return nullptr;
    const int g = config_->Match(module, "Linear");
    return g < 0 ? nullptr : &config_->groups()[g];
  }
  // Routers: Linears whose leaf is "gate" (a mixture-of-experts block's mlp.gate).
  bool IsRouter(const std::string& module) const override { return LinearLeaf(module) == "gate"; }
  absl::Status ParentForward(absl::Span<LinearWeight* const> balance,
                             absl::Span<const std::vector<float>* const> weights, std::vector<float>* out) override {
    ++parent_calls;
    for (size_t b = 0; b < balance.size(); ++b)
      if (weights[b] == nullptr) ++held_weights[balance[b]->name];
    const FakeInput& in = inputs_.at(InputGroup(balance[0]->name));
    const int64_t cols = balance[0]->in_features, tokens = static_cast<int64_t>(in.captured.size()) / cols;
    out->clear();
    for (size_t b = 0; b < balance.size(); ++b) {
      const std::vector<float>& w = weights[b] ? *weights[b] : balance[b]->weight;
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t o = 0; o < balance[b]->out_features; ++o) {
          float acc = balance[b]->bias.empty() ? 0.0f : balance[b]->bias[o];
          for (int64_t c = 0; c < cols; ++c) acc += in.captured[t * cols + c] * w[o * cols + c];
          out->push_back(acc);
        }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> DeviceAwqLoss(absl::Span<LinearWeight* const> balance) override {
    if (device_awq_loss) return device_awq_loss(balance);
    return std::unique_ptr<AwqLossEvaluator>();
  }

  int parent_calls = 0;
  std::map<std::string, int> held_weights;  // per Linear: the ParentForward calls that ran it as held
  // What DeviceAwqLoss returns when set (default: null, the search runs on the host).
  std::function<absl::StatusOr<std::unique_ptr<AwqLossEvaluator>>(absl::Span<LinearWeight* const>)> device_awq_loss;

 private:
  DType dtype_;
  std::deque<LinearWeight> linears_;  // stable addresses
  std::vector<float> input_norm_, post_attention_norm_;
  std::map<std::string, FakeInput> inputs_;
  std::optional<QuantConfig> config_;
};

// The mapping of the input norm onto q/k/v.
inline SmoothMapping QkvFromInputNorm() {
  return {{"re:.*q_proj", "re:.*k_proj", "re:.*v_proj"}, "re:.*input_layernorm"};
}

}  // namespace llmc::testing
