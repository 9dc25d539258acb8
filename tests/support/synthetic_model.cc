#include "tests/support/synthetic_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/io/model_dir.h"
#include "engine/io/safetensors.h"

namespace llmc {

namespace fs = std::filesystem;

bool SyntheticShapeByName(const std::string& name, SyntheticLlamaShape* s) {
  if (name == "tiny") *s = SyntheticLlamaShape{};
  else if (name == "1b") *s = SyntheticLlamaShape{2048, 8192, 16, 32, 8, 128256, true};
  else if (name == "8b") *s = SyntheticLlamaShape{4096, 14336, 32, 32, 8, 128256, false};
  else return false;
  return true;
}

namespace {

struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  // Sum of 4 uniforms: a cheap bell shape with std ~0.02.
  float Weight() {
    uint64_t r = Next();
    float a = static_cast<float>(r & 0xffff) + static_cast<float>((r >> 16) & 0xffff) +
              static_cast<float>((r >> 32) & 0xffff) + static_cast<float>((r >> 48) & 0xffff);
    return (a / 65536.0f - 2.0f) * 0.0346f;
  }
};

void Fill(std::vector<uint8_t>& buf, DType dtype, uint64_t n, Rng& rng, bool ones) {
  buf.resize(n * DTypeSize(dtype));
  for (uint64_t i = 0; i < n; ++i) {
    float v = ones ? 1.0f : rng.Weight();
    if (dtype == DType::kBF16) {
      uint16_t h = FloatToBF16(v);
      std::memcpy(buf.data() + 2 * i, &h, 2);
    } else if (dtype == DType::kF16) {
      uint16_t h = FloatToF16(v);
      std::memcpy(buf.data() + 2 * i, &h, 2);
    } else {
      std::memcpy(buf.data() + 4 * i, &v, 4);
    }
  }
}

}  // namespace

absl::Status WriteSyntheticLlama(const std::string& dir, const SyntheticLlamaShape& s, DType dtype, uint64_t seed,
                                 uint64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const int64_t hd = s.hidden / s.heads;
  std::vector<TensorSpec> all;
  all.push_back({"model.embed_tokens.weight", dtype, {s.vocab, s.hidden}});
  for (int64_t l = 0; l < s.layers; ++l) {
    std::string p = absl::StrCat("model.layers.", l, ".");
    all.push_back({p + "input_layernorm.weight", dtype, {s.hidden}});
    all.push_back({p + "self_attn.q_proj.weight", dtype, {s.heads * hd, s.hidden}});
    all.push_back({p + "self_attn.k_proj.weight", dtype, {s.kv_heads * hd, s.hidden}});
    all.push_back({p + "self_attn.v_proj.weight", dtype, {s.kv_heads * hd, s.hidden}});
    all.push_back({p + "self_attn.o_proj.weight", dtype, {s.hidden, s.heads * hd}});
    all.push_back({p + "post_attention_layernorm.weight", dtype, {s.hidden}});
    all.push_back({p + "mlp.gate_proj.weight", dtype, {s.intermediate, s.hidden}});
    all.push_back({p + "mlp.up_proj.weight", dtype, {s.intermediate, s.hidden}});
    all.push_back({p + "mlp.down_proj.weight", dtype, {s.hidden, s.intermediate}});
  }
  all.push_back({"model.norm.weight", dtype, {s.hidden}});
  if (!s.tie_embeddings) all.push_back({"lm_head.weight", dtype, {s.vocab, s.hidden}});
  // Split into shards.
  std::vector<std::vector<TensorSpec>> shards(1);
  uint64_t cur = 0;
  for (auto& t : all) {
    if (cur > 0 && cur + t.nbytes() > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    cur += t.nbytes();
    shards.back().push_back(t);
  }
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0;
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string name = shards.size() == 1 ? "model.safetensors"
                                          : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    LLMC_ASSIGN_OR_RETURN(auto w, SafetensorsWriter::Create((fs::path(dir) / name).string(), shards[i]));
    for (size_t j = 0; j < shards[i].size(); ++j) {
      const auto& t = shards[i][j];
      uint64_t n = t.nbytes() / DTypeSize(t.dtype);
      bool norm = t.shape.size() == 1;
      // Write big tensors in 64 MB pieces to bound memory.
      const uint64_t piece = (64u << 20) / DTypeSize(t.dtype);
      for (uint64_t off = 0; off < n; off += piece) {
        uint64_t m = std::min(piece, n - off);
        Fill(buf, t.dtype, m, rng, norm);
        LLMC_RETURN_IF_ERROR(w->Write(static_cast<int>(j), off * DTypeSize(t.dtype), absl::MakeConstSpan(buf.data(), m * DTypeSize(t.dtype))));
      }
      weight_map[t.name] = name;
      total += t.nbytes();
    }
    LLMC_RETURN_IF_ERROR(w->Close());
  }
  if (shards.size() > 1) {
    nlohmann::json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream(fs::path(dir) / "model.safetensors.index.json") << idx.dump(2) << "\n";
  }
  std::string dt = dtype == DType::kBF16 ? "bfloat16" : dtype == DType::kF16 ? "float16" : "float32";
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", s.hidden},
                        {"intermediate_size", s.intermediate},
                        {"num_hidden_layers", s.layers},
                        {"num_attention_heads", s.heads},
                        {"num_key_value_heads", s.kv_heads},
                        {"head_dim", hd},
                        {"vocab_size", s.vocab},
                        {"rms_norm_eps", 1e-5},
                        {"rope_theta", 500000.0},
                        {"max_position_embeddings", 8192},
                        {"hidden_act", "silu"},
                        {"tie_word_embeddings", s.tie_embeddings},
                        {"bos_token_id", 1},
                        {"eos_token_id", 2},
                        {"dtype", dt}};
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2) << "\n";
  std::ofstream(fs::path(dir) / "generation_config.json") << R"({"bos_token_id": 1, "eos_token_id": 2})" << "\n";
  return absl::OkStatus();
}

absl::Status SetTensorElement(const std::string& dir, const std::string& name, int64_t index, float value,
                              int64_t count) {
  std::string file;
  uint64_t begin = 0;
  DType dtype;
  {
    LLMC_ASSIGN_OR_RETURN(std::unique_ptr<ModelDir> m, ModelDir::Open(dir));
    const ModelTensor* t = m->Find(name);
    if (t == nullptr) return absl::NotFoundError(absl::StrCat(dir, ": no tensor ", name));
    if (t->info->dtype != DType::kF32 && t->info->dtype != DType::kBF16)
      return absl::InvalidArgumentError(absl::StrCat(name, ": only F32 and BF16 tensors can be set"));
    const uint64_t size = DTypeSize(t->info->dtype);
    if (index < 0 || count < 1 || static_cast<uint64_t>(index + count) * size > t->info->nbytes())
      return absl::OutOfRangeError(absl::StrCat(name, ": elements [", index, ", ", index + count, ") are out of range"));
    file = t->file->path();
    begin = t->info->begin + static_cast<uint64_t>(index) * size;
    dtype = t->info->dtype;
  }
  std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
  uint64_t header = 0;
  f.read(reinterpret_cast<char*>(&header), 8);
  f.seekp(static_cast<std::streamoff>(8 + header + begin));
  for (int64_t i = 0; i < count; ++i) {
    if (dtype == DType::kF32) {
      f.write(reinterpret_cast<const char*>(&value), 4);
    } else {
      const uint16_t b = FloatToBF16(value);
      f.write(reinterpret_cast<const char*>(&b), 2);
    }
  }
  f.flush();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", file));
  return absl::OkStatus();
}

}  // namespace llmc
