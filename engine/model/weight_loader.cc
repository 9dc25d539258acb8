#include "engine/model/weight_loader.h"

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {

namespace {

using json = nlohmann::json;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsDenseFloat(DType d) { return d == DType::kBF16 || d == DType::kF16 || d == DType::kF32; }

}  // namespace

bool ConvertToFloat(const void* data, DType dtype, int64_t n, float* out) {
  switch (dtype) {
    case DType::kBF16: {
      const auto* p = static_cast<const uint8_t*>(data);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = BF16ToFloat(h);
      }
      return true;
    }
    case DType::kF16: {
      const auto* p = static_cast<const uint8_t*>(data);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = F16ToFloat(h);
      }
      return true;
    }
    case DType::kF32:
      std::memcpy(out, data, static_cast<size_t>(n) * 4);
      return true;
    default:
      return false;
  }
}

absl::StatusOr<std::unique_ptr<WeightLoader>> WeightLoader::Create(const ModelDir* dir) {
  std::unique_ptr<WeightLoader> l(new WeightLoader(dir));
  const std::string source = (std::filesystem::path(dir->path()) / "config.json").string();
  const std::string& td = dir->config().torch_dtype;
  if (td == "float16") l->model_dtype_ = DType::kF16;
  if (td == "float32") l->model_dtype_ = DType::kF32;
  const json& cj = dir->config_json();
  auto qit = cj.find("quantization_config");
  if (qit == cj.end() || qit->is_null()) return l;
  const json& qc = *qit;
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": quantization_config ", what));
  };
  if (!qc.is_object()) return bad("must be an object");
  if (qc.value("quant_method", std::string("compressed-tensors")) != "compressed-tensors")
    return absl::UnimplementedError(
        absl::StrCat(source, ": quant_method '", qc["quant_method"].dump(),
                     "' is not supported; llmc evaluates compressed-tensors checkpoints"));
  if (auto it = qc.find("sparsity_config"); it != qc.end() && it->is_object() && !it->empty()) {
    std::string fmt = it->value("format", std::string("dense"));
    if (fmt != "dense")
      return absl::UnimplementedError(
          absl::StrCat(source, ": sparsity format '", fmt, "' is not supported by the llmc model runtime"));
  }
  auto groups_it = qc.find("config_groups");
  if (groups_it == qc.end() || !groups_it->is_object()) return bad("has no 'config_groups' object");
  std::string top_format = qc.value("format", std::string());
  std::vector<std::pair<std::string, QuantScheme>> groups;
  for (auto it = groups_it->begin(); it != groups_it->end(); ++it) {
    auto scheme = QuantScheme::FromJson(
        it.value(), absl::StrCat(source, ": quantization_config.config_groups.", it.key()));
    if (!scheme.ok()) return scheme.status();
    if (!scheme->format && !top_format.empty() && top_format != "mixed-precision")
      scheme->format = top_format;
    groups.emplace_back(it.key(), std::move(*scheme));
  }
  std::vector<std::string> ignore;
  if (auto it = qc.find("ignore"); it != qc.end() && !it->is_null()) {
    if (!it->is_array()) return bad("'ignore' must be a list");
    for (const auto& i : *it) {
      if (!i.is_string()) return bad("'ignore' must list strings");
      ignore.push_back(i.get<std::string>());
    }
  }
  auto cfg = QuantConfig::Create(std::move(groups), std::move(ignore));
  if (!cfg.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", cfg.status().message()));
  l->quant_ = std::move(*cfg);
  if (auto it = qc.find("kv_cache_scheme"); it != qc.end() && !it->is_null()) {
    auto kv = QuantArgs::FromJson(*it, absl::StrCat(source, ": quantization_config.kv_cache_scheme"), false);
    if (!kv.ok()) return kv.status();
    l->quant_->kv_cache_scheme = std::move(*kv);
  }
  // What the activations need, checked once so that evaluation fails before it starts.
  for (const ConfigGroup& g : l->quant_->groups()) {
    const std::pair<const char*, const std::optional<QuantArgs>*> acts[] = {
        {"input_activations", &g.scheme.input_activations}, {"output_activations", &g.scheme.output_activations}};
    for (const auto& [what, args] : acts) {
      if (!args->has_value()) continue;
      l->quantizes_activations_ = true;
      if (l->activation_support_.ok())
        l->activation_support_ = ActivationQuantizer::Check(
            **args, ActivationSite::kLinear,
            absl::StrCat(source, ": quantization_config.config_groups.", g.name, ".", what));
    }
  }
  if (l->quant_->kv_cache_scheme) {
    l->quantizes_activations_ = true;
    if (l->activation_support_.ok())
      l->activation_support_ = ActivationQuantizer::Check(*l->quant_->kv_cache_scheme, ActivationSite::kKvCache,
                                                          absl::StrCat(source, ": quantization_config.kv_cache_scheme"));
  }
  return l;
}

absl::StatusOr<const ModelTensor*> WeightLoader::Get(const std::string& name) const {
  const ModelTensor* t = dir_->Find(name);
  if (t == nullptr)
    return absl::NotFoundError(absl::StrCat(dir_->path(), ": tensor '", name,
                                            "' is missing; the checkpoint does not match its config.json"));
  return t;
}

absl::StatusOr<std::vector<float>> WeightLoader::LoadDense(const std::string& name,
                                                           const std::vector<int64_t>& shape) const {
  LLMC_ASSIGN_OR_RETURN(const ModelTensor* t, Get(name));
  if (!IsDenseFloat(t->info->dtype))
    return absl::InvalidArgumentError(absl::StrCat(dir_->path(), ": tensor '", name, "' has dtype ",
                                                   DTypeName(t->info->dtype), "; expected BF16, F16 or F32"));
  if (t->info->shape != shape)
    return absl::InvalidArgumentError(absl::StrCat(dir_->path(), ": tensor '", name, "' has shape ",
                                                   ShapeString(t->info->shape), " but config.json implies ",
                                                   ShapeString(shape)));
  std::vector<float> out(t->info->numel());
  auto data = t->file->Data(*t->info);
  ConvertToFloat(data.data(), t->info->dtype, static_cast<int64_t>(out.size()), out.data());
  t->file->Release(*t->info);
  return out;
}

const ConfigGroup* WeightLoader::GroupOf(const std::string& module) const {
  if (!quant_) return nullptr;
  int g = quant_->Match(module, "Linear");
  if (g < 0) return nullptr;
  const ConfigGroup& group = quant_->groups()[g];
  if (!group.scheme.weights || group.format == "dense") return nullptr;
  // A module the writer left dense (float `weight`, nothing packed) is read as such.
  const ModelTensor* w = dir_->Find(module + ".weight");
  if (w != nullptr && IsDenseFloat(w->info->dtype) && dir_->Find(module + ".weight_packed") == nullptr)
    return nullptr;
  return &group;
}

std::string WeightLoader::StorageOf(const std::string& module) const {
  const ConfigGroup* g = GroupOf(module);
  return g == nullptr ? "dense" : g->format;
}

absl::StatusOr<std::vector<float>> WeightLoader::LoadLinearWeight(const std::string& module,
                                                                  int64_t out_features,
                                                                  int64_t in_features) const {
  const ConfigGroup* group = GroupOf(module);
  if (group == nullptr) return LoadDense(module + ".weight", {out_features, in_features});
  const QuantArgs& args = *group->scheme.weights;
  // Scales of int/fp8 formats are stored in the model dtype; read it from the checkpoint when it says.
  DType dtype = model_dtype_;
  if (const ModelTensor* s = dir_->Find(module + ".weight_scale");
      s != nullptr && IsDenseFloat(s->info->dtype))
    dtype = s->info->dtype;
  auto plan = PlanQuantizedWeight(module, out_features, in_features, dtype, args, group->format);
  if (!plan.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(dir_->path(), ": ", plan.status().message(), " (config group ", group->name, ")"));
  std::vector<std::vector<uint8_t>> tensors;
  std::vector<const ModelTensor*> used;
  for (const OutputTensor& o : *plan) {
    const std::string name = absl::StrCat(module, ".", o.suffix);
    const ModelTensor* t = dir_->Find(name);
    if (t == nullptr)
      return absl::DataLossError(absl::StrCat(dir_->path(), ": tensor '", name, "' is missing; format ",
                                              group->format, " of config group ", group->name, " needs it"));
    if (t->info->dtype != o.dtype || t->info->shape != o.shape)
      return absl::DataLossError(
          absl::StrCat(dir_->path(), ": tensor '", name, "' is ", DTypeName(t->info->dtype), " ",
                       ShapeString(t->info->shape), " but format ", group->format, " for a [", out_features,
                       ", ", in_features, "] weight needs ", DTypeName(o.dtype), " ", ShapeString(o.shape)));
    auto data = t->file->Data(*t->info);
    tensors.emplace_back(data.begin(), data.end());
    used.push_back(t);
    if (o.suffix == "weight_shape") {
      int64_t shape[2];
      std::memcpy(shape, data.data(), sizeof(shape));
      if (shape[0] != out_features || shape[1] != in_features)
        return absl::DataLossError(absl::StrCat(dir_->path(), ": tensor '", name, "' says [", shape[0], ", ",
                                                shape[1], "] but config.json implies [", out_features, ", ",
                                                in_features, "]"));
    }
  }
  // GPTQ's activation ordering "group" stores the group of each column.
  std::vector<int32_t> g_idx;
  if (const ModelTensor* gi = dir_->Find(module + ".weight_g_idx"); gi != nullptr) {
    if (gi->info->dtype != DType::kI32 || gi->info->shape != std::vector<int64_t>{in_features})
      return absl::DataLossError(absl::StrCat(dir_->path(), ": tensor '", module, ".weight_g_idx' is ",
                                              DTypeName(gi->info->dtype), " ", ShapeString(gi->info->shape),
                                              " but must be I32 [", in_features, "]"));
    auto data = gi->file->Data(*gi->info);
    g_idx.resize(in_features);
    std::memcpy(g_idx.data(), data.data(), in_features * 4);
  }
  for (const ModelTensor* t : used) t->file->Release(*t->info);
  auto w = DequantizeWeight(out_features, in_features, dtype, args, group->format, tensors,
                            g_idx.empty() ? nullptr : g_idx.data());
  if (!w.ok())
    return absl::DataLossError(absl::StrCat(dir_->path(), ": ", module, ": ", w.status().message()));
  return std::move(*w);
}

absl::StatusOr<std::vector<float>> WeightLoader::LoadScales(const std::string& name,
                                                           const std::string& owner) const {
  const ModelTensor* t = dir_->Find(name);
  if (t == nullptr)
    return absl::DataLossError(absl::StrCat(dir_->path(), ": tensor '", name, "' is missing; ", owner,
                                            " needs it (static activation scale)"));
  if (!IsDenseFloat(t->info->dtype))
    return absl::DataLossError(absl::StrCat(dir_->path(), ": tensor '", name, "' has dtype ",
                                            DTypeName(t->info->dtype), "; expected BF16, F16 or F32"));
  return LoadDense(name, t->info->shape);
}

absl::StatusOr<std::shared_ptr<const ActivationQuantizer>> WeightLoader::LinearActivationQuant(
    const std::string& module, const std::string& which, int64_t cols) const {
  if (!quant_) return nullptr;
  const int g = quant_->Match(module, "Linear");
  if (g < 0) return nullptr;
  const ConfigGroup& group = quant_->groups()[g];
  const std::optional<QuantArgs>& args =
      which == "input" ? group.scheme.input_activations : group.scheme.output_activations;
  if (!args) return nullptr;
  const std::string where = absl::StrCat(dir_->path(), ": ", module, " ", which, "_activations (config group ",
                                         group.name, ")");
  LLMC_ASSIGN_OR_RETURN(ActivationQuantizer q,
                        ActivationQuantizer::Create(*args, ActivationSite::kLinear, model_dtype_, cols, where));
  if (!q.dynamic()) {
    LLMC_ASSIGN_OR_RETURN(std::vector<float> s, LoadScales(absl::StrCat(module, ".", which, "_scale"), where));
    if (s.size() != 1)
      return absl::DataLossError(absl::StrCat(where, ": tensor '", module, ".", which, "_scale' holds ", s.size(),
                                              " values; a per-tensor scale is one"));
    LLMC_RETURN_IF_ERROR(q.SetStaticScale(std::move(s)));
  }
  if (q.kind() == ActivationQuantizer::Kind::kNvFp4) {
    LLMC_ASSIGN_OR_RETURN(std::vector<float> gs,
                          LoadScales(absl::StrCat(module, ".", which, "_global_scale"), where));
    if (gs.size() != 1)
      return absl::DataLossError(absl::StrCat(where, ": tensor '", module, ".", which, "_global_scale' holds ",
                                              gs.size(), " values; expected one"));
    LLMC_RETURN_IF_ERROR(q.SetGlobalScale(gs[0]));
  }
  return std::make_shared<const ActivationQuantizer>(std::move(q));
}

absl::StatusOr<std::shared_ptr<const ActivationQuantizer>> WeightLoader::KvCacheQuant(const std::string& attn,
                                                                                      const std::string& which,
                                                                                      int64_t num_kv_heads,
                                                                                      int64_t head_dim) const {
  if (!quant_ || !quant_->kv_cache_scheme) return nullptr;
  const std::string where = absl::StrCat(dir_->path(), ": ", attn, " ", which, " cache (kv_cache_scheme)");
  LLMC_ASSIGN_OR_RETURN(ActivationQuantizer q,
                        ActivationQuantizer::Create(*quant_->kv_cache_scheme, ActivationSite::kKvCache, model_dtype_,
                                                    num_kv_heads * head_dim, where));
  const std::string name = absl::StrCat(attn, ".", which, "_scale");
  LLMC_ASSIGN_OR_RETURN(std::vector<float> s, LoadScales(name, where));
  const bool per_head = quant_->kv_cache_scheme->strategy == Strategy::kAttnHead;
  if (static_cast<int64_t>(s.size()) != (per_head ? num_kv_heads : 1))
    return absl::DataLossError(absl::StrCat(where, ": tensor '", name, "' holds ", s.size(), " values; expected ",
                                            per_head ? absl::StrCat(num_kv_heads, " (one per kv head)") : "one"));
  LLMC_RETURN_IF_ERROR(q.SetStaticScale(std::move(s)));
  return std::make_shared<const ActivationQuantizer>(std::move(q));
}

absl::StatusOr<const uint8_t*> WeightLoader::DenseRows(const std::string& name, int64_t rows, int64_t cols,
                                                       DType* dtype) const {
  LLMC_ASSIGN_OR_RETURN(const ModelTensor* t, Get(name));
  if (!IsDenseFloat(t->info->dtype))
    return absl::InvalidArgumentError(absl::StrCat(dir_->path(), ": tensor '", name, "' has dtype ",
                                                   DTypeName(t->info->dtype), "; expected BF16, F16 or F32"));
  if (t->info->shape != std::vector<int64_t>{rows, cols})
    return absl::InvalidArgumentError(absl::StrCat(dir_->path(), ": tensor '", name, "' has shape ",
                                                   ShapeString(t->info->shape), " but config.json implies [",
                                                   rows, ", ", cols, "]"));
  *dtype = t->info->dtype;
  return t->file->Data(*t->info).data();
}

absl::Status WeightLoader::CheckRowIds(int64_t rows, absl::Span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= rows)
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " at position ", i,
                                                     " is outside the vocabulary [0, ", rows, ") of ",
                                                     dir_->path()));
  return absl::OkStatus();
}

absl::Status WeightLoader::GatherRows(const std::string& name, int64_t rows, int64_t cols,
                                      absl::Span<const int32_t> ids, float* out) const {
  DType dtype;
  LLMC_ASSIGN_OR_RETURN(const uint8_t* base, DenseRows(name, rows, cols, &dtype));
  LLMC_RETURN_IF_ERROR(CheckRowIds(rows, ids));
  const size_t row_bytes = static_cast<size_t>(cols) * DTypeSize(dtype);
  for (size_t i = 0; i < ids.size(); ++i) ConvertToFloat(base + ids[i] * row_bytes, dtype, cols, out + i * cols);
  return absl::OkStatus();
}

}  // namespace llmc
