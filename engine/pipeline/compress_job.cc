#include "engine/pipeline/compress_job.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/io_error.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "common/util.h"
#include "engine/io/checkpoint_layout.h"
#include "engine/io/model_dir.h"
#include "engine/quant/simd_kernels.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string ModuleClass(const std::string& tensor_name, size_t rank) {
  if (!absl::EndsWith(tensor_name, ".weight") || rank != 2) return "";
  for (const char* e : {"embed_tokens.", "wte.", "word_embeddings.", "embed_in.", "wpe.", "embed_positions."})
    if (absl::StrContains(tensor_name, e)) return "Embedding";
  return "Linear";
}

json CompressSummary::ToJson() const {
  json mods = json::array();
  for (const auto& m : modules)
    mods.push_back({{"name", m.name}, {"group", m.group}, {"format", m.format}, {"bytes_in", m.bytes_in}, {"bytes_out", m.bytes_out}});
  return {{"model", model_path},
          {"output", output_path},
          {"scheme", scheme},
          {"input_bytes", input_bytes},
          {"output_bytes", output_bytes},
          {"compression_ratio", output_bytes ? static_cast<double>(input_bytes) / output_bytes : 0.0},
          {"seconds", seconds},
          {"input_mb_per_s", seconds > 0 ? input_bytes / 1e6 / seconds : 0.0},
          {"modules_quantized", modules_quantized},
          {"modules_ignored", modules_ignored},
          {"fused_experts_split", fused_experts_split},
          {"warnings", warnings},
          {"shards", shards},
          {"threads", threads},
          {"peak_rss_bytes", peak_rss_bytes},
          {"method", method},
          {"modules", mods},
          {"solve", solver_report}};
}

bool LayerSolver::Owns(const std::string& tensor_name) const { return absl::StartsWith(tensor_name, LayersPrefix()); }

namespace {

// One unit of work: a quantized module (or fused set of modules sharing an NVFP4 global scale), or a plain
// tensor copied unchanged.
struct Item {
  // For a quantized module:
  std::string module;
  int group = -1;
  const ModelTensor* weight = nullptr;
  std::vector<OutputTensor> outputs;
  // For a copied tensor:
  const ModelTensor* copy = nullptr;
  // Where each output goes: (shard index, tensor index in that shard)
  std::vector<std::pair<int, int>> dest;
  uint64_t out_bytes = 0;
  // Produced by the LayerSolver (calibrated jobs); for a quantized module `outputs` includes its extras.
  bool deferred = false;
  // An extra tensor of the solver that has no input tensor (kv cache scales).
  std::optional<TensorSpec> extra;
  // One expert's Linear cut out of the fused 3-D experts tensor `weight` [experts, in, out_total] (Llama 4):
  // W [rows, cols] = weight[expert][:, col0 : col0 + rows]^T.
  struct ExpertSlice {
    int64_t expert = 0, col0 = 0, rows = 0, cols = 0;
  };
  std::optional<ExpertSlice> slice;
};

// The [rows, cols] weight an item quantizes: the checkpoint's bytes, or an expert's slice of a fused experts tensor
// transposed into `owned`.
struct ItemWeight {
  const uint8_t* data = nullptr;
  DType dtype = DType::kBF16;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> owned;
};

ItemWeight WeightOf(const Item& item) {
  const ModelTensor& t = *item.weight;
  ItemWeight w;
  w.dtype = t.info->dtype;
  const uint8_t* base = t.file->Data(*t.info).data();
  if (!item.slice) {
    w.data = base;
    w.rows = t.info->shape[0];
    w.cols = t.info->shape[1];
    return w;
  }
  const Item::ExpertSlice& s = *item.slice;
  const size_t es = DTypeSize(w.dtype);
  const int64_t in = t.info->shape[1], total = t.info->shape[2];
  w.rows = s.rows;
  w.cols = s.cols;
  w.owned.resize(static_cast<size_t>(s.rows * s.cols) * es);
  const uint8_t* e = base + static_cast<size_t>(s.expert * in * total) * es;
  for (int64_t c = 0; c < in; ++c)
    for (int64_t r = 0; r < s.rows; ++r)
      std::memcpy(w.owned.data() + (r * s.cols + c) * es, e + (c * total + s.col0 + r) * es, es);
  w.data = w.owned.data();
  return w;
}

// Whether `t` is Llama 4's fused experts tensor (feed_forward.experts.gate_up_proj [E, hidden, 2 * I], gate and
// up concatenated; feed_forward.experts.down_proj [E, I, hidden]), which vLLM's Llama 4 loader also reads as one
// Linear per expert (feed_forward.experts.N.{gate,up,down}_proj), the layout llm-compressor's Llama 4 examples
// write.
bool IsLlama4FusedExperts(const TensorInfo& t) {
  return t.shape.size() == 3 && (absl::EndsWith(t.name, ".feed_forward.experts.gate_up_proj") ||
                                 absl::EndsWith(t.name, ".feed_forward.experts.down_proj"));
}

// Modules whose NVFP4 global scales are fused: siblings of the same parent in one of these families.
std::string FusedKey(const std::string& module) {
  auto dot = module.rfind('.');
  if (dot == std::string::npos) return "";
  std::string parent = module.substr(0, dot), leaf = module.substr(dot + 1);
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") return parent + "#qkv";
  if (leaf == "gate_proj" || leaf == "up_proj") return parent + "#gate_up";
  if (leaf == "w1" || leaf == "w3") return parent + "#w13";
  return "";
}

class Job {
 public:
  Job(const CompressOptions& o, const QuantConfig& c) : opt_(o), cfg_(c) {}

  absl::StatusOr<CompressSummary> Run() {
    t0_ = NowSeconds();
    LLMC_RETURN_IF_ERROR(CheckPaths());
    LLMC_ASSIGN_OR_RETURN(model_, ModelDir::Open(opt_.model_path));
    if (model_->config().has_quantization_config)
      return absl::FailedPreconditionError(absl::StrCat(opt_.model_path, "/config.json has a quantization_config: ",
                                                        "the model is already quantized; compress the original model"));
    LLMC_ASSIGN_OR_RETURN(layout_, ResolveCheckpointLayout(*model_));
    LLMC_RETURN_IF_ERROR(Plan());
    absl::Status s = MakeStaging();
    if (s.ok()) s = Execute();
    if (s.ok()) s = Finalize();
    if (!s.ok()) {
      std::error_code ec;
      shards_.clear();
      if (!opt_.keep_staging) fs::remove_all(staging_, ec);
      return s;
    }
    summary_.seconds = NowSeconds() - t0_;
    summary_.peak_rss_bytes = PeakRssBytes();
    return summary_;
  }

 private:
  absl::Status CheckPaths() {
    std::error_code ec;
    fs::path out = fs::absolute(opt_.output_path, ec);
    fs::path in = fs::absolute(opt_.model_path, ec);
    out_ = out.lexically_normal();
    if (out_.filename().empty()) out_ = out_.parent_path();
    if (fs::exists(out_, ec)) {
      if (!opt_.overwrite)
        return absl::AlreadyExistsError(absl::StrCat(opt_.output_path, ": output already exists; pass --overwrite to replace it"));
      if (!fs::is_directory(out_, ec))
        return absl::FailedPreconditionError(absl::StrCat(opt_.output_path, ": exists and is not a directory; remove it first"));
    }
    fs::path inn = in.lexically_normal();
    if (fs::exists(inn, ec) && fs::exists(out_, ec) && fs::equivalent(inn, out_, ec))
      return absl::InvalidArgumentError(absl::StrCat(opt_.output_path, ": output is the model directory itself; choose another OUTPUT"));
    auto rel = out_.lexically_relative(inn);
    if (!rel.empty() && *rel.begin() != "..")
      return absl::InvalidArgumentError(absl::StrCat(opt_.output_path, ": output lies inside the model directory; choose another OUTPUT"));
    return absl::OkStatus();
  }

  // The config group of module `module` of class `cls`, or -1. A vision-language checkpoint's lm_head is also
  // ignored by the name "lm_head" (what transformers calls it in memory, and llmc's default ignore).
  int MatchModule(const std::string& module, const std::string& cls) const {
    if (layout_.multimodal && module == layout_.lm_head && cfg_.IsIgnored("lm_head", cls)) return -1;
    return cfg_.Match(module, cls);
  }

  absl::Status Plan() {
    summary_.model_path = opt_.model_label.empty() ? opt_.model_path : opt_.model_label;
    summary_.output_path = opt_.output_label.empty() ? opt_.output_path : opt_.output_label;
    summary_.scheme = cfg_.preset_name.empty() ? "custom" : cfg_.preset_name;
    // Which modules are Linear: every 2-D `.weight` that is not an embedding.
    bool has_lm_head = model_->Find(layout_.lm_head + ".weight") != nullptr;
    std::vector<int> group_modules(cfg_.groups().size(), 0);
    std::set<std::string> module_paths;  // every module of the model: each proper prefix of a tensor name
    for (const auto& t : model_->tensors()) {
      const std::string& name = t.info->name;
      std::string cls = ModuleClass(name, t.info->shape.size());
      Item item;
      if (!layout_.IsTextTensor(name)) {
        // A vision-language checkpoint's vision tower and projector: copied unchanged whatever the config says, and
        // kept unquantized for loaders by the ignore patterns of Finalize.
        item.copy = &t;
        if (!cls.empty())
          summary_.modules.push_back({name.substr(0, name.size() - 7), "", "dense", t.info->nbytes(), t.info->nbytes()});
        if (cls == "Linear") ++summary_.modules_ignored;
        items_.push_back(std::move(item));
        continue;
      }
      for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
        module_paths.insert(name.substr(0, dot));
      if (IsLlama4FusedExperts(*t.info)) {
        LLMC_ASSIGN_OR_RETURN(bool split, PlanExpertSplit(t, &group_modules));
        if (split) continue;
      }
      LLMC_RETURN_IF_ERROR(CheckFusedExperts(*t.info));
      if (!cls.empty()) {
        std::string module = name.substr(0, name.size() - 7);
        int g = MatchModule(module, cls);
        if (g >= 0 && cfg_.groups()[g].scheme.weights) {
          const auto& grp = cfg_.groups()[g];
          LLMC_ASSIGN_OR_RETURN(item.outputs, PlanQuantizedWeight(module, t.info->shape[0], t.info->shape[1], t.info->dtype,
                                                                  *grp.scheme.weights, grp.format));
          if (opt_.solver && opt_.solver->Owns(name)) {
            LLMC_ASSIGN_OR_RETURN(auto extra, opt_.solver->ExtraModuleTensors(module, g, t.info->shape[0], t.info->shape[1],
                                                                              t.info->dtype));
            for (auto& e : extra) item.outputs.push_back(std::move(e));
          } else if (grp.scheme.input_activations && !grp.scheme.input_activations->is_dynamic()) {
            return absl::InvalidArgumentError(absl::StrCat(module, ": static input activations need calibration, which ",
                                                           "runs for decoder layers only; add ", module, " to ignore"));
          }
          item.module = module;
          item.group = g;
          item.weight = &t;
          ++group_modules[g];
          ++summary_.modules_quantized;
          summary_.modules.push_back({module, grp.name, grp.format, t.info->nbytes(), 0});
        } else {
          if (cls == "Linear") {
            ignored_.push_back(module);
            ++summary_.modules_ignored;
          }
          item.copy = &t;
          summary_.modules.push_back({module, "", "dense", t.info->nbytes(), t.info->nbytes()});
        }
      } else {
        item.copy = &t;
      }
      item.deferred = opt_.solver && opt_.solver->Owns(name);
      items_.push_back(std::move(item));
    }
    if (opt_.solver) {
      // Each extra tensor goes right after the last item of its layer (so shards stay in layer order).
      for (auto& spec : opt_.solver->ExtraTensors()) {
        size_t pos = items_.size();
        auto dot = spec.name.find('.', opt_.solver->LayersPrefix().size());
        std::string prefix = spec.name.substr(0, dot + 1);
        for (size_t i = 0; i < items_.size(); ++i) {
          const std::string& n = items_[i].copy ? items_[i].copy->info->name : items_[i].module;
          if (!n.empty() && absl::StartsWith(n, prefix)) pos = i + 1;
        }
        Item extra;
        extra.deferred = true;
        extra.extra = spec;
        items_.insert(items_.begin() + pos, std::move(extra));
      }
    }
    if (layout_.tie_word_embeddings && !has_lm_head) {
      if (MatchModule(layout_.lm_head, "Linear") >= 0)
        return absl::InvalidArgumentError(absl::StrCat(opt_.model_path, ": ", layout_.lm_head, " is tied to the embeddings ",
                                                       "and cannot be quantized on its own; add lm_head to --ignore"));
      ignored_.push_back(layout_.lm_head);
      ++summary_.modules_ignored;
    }
    // No config group asks for attention quantization, and every one is applied to something.
    LLMC_RETURN_IF_ERROR(cfg_.CheckAttentionTargets(module_paths));
    for (size_t g = 0; g < group_modules.size(); ++g)
      if (group_modules[g] == 0)
        return absl::InvalidArgumentError(absl::StrCat(
            opt_.model_path, ": config group '", cfg_.groups()[g].name, "' (targets ",
            nlohmann::json(cfg_.groups()[g].scheme.targets).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), ") quantizes no module: its targets match no ",
            "Linear module, or every match is ignored or taken by a group with a more specific target",
            layout_.multimodal ? " (the vision tower and projector of a vision-language checkpoint are never quantized)" : "",
            "; fix its targets or remove the group"));
    if (summary_.modules_quantized == 0 && !opt_.solver)
      return absl::InvalidArgumentError(absl::StrCat(opt_.model_path, ": no module matches the targets of the scheme ",
                                                     "(after ignore); check targets and --ignore"));
    // Shards: consecutive items, a new shard when the next item would exceed the limit.
    std::vector<std::vector<TensorSpec>> shard_specs(1);
    uint64_t cur = 0;
    for (auto& item : items_) {
      std::vector<TensorSpec> specs;
      if (item.extra) {
        specs.push_back(*item.extra);
      } else if (item.copy) {
        specs.push_back({item.copy->info->name, item.copy->info->dtype, item.copy->info->shape});
      } else {
        for (const auto& o : item.outputs) specs.push_back({absl::StrCat(item.module, ".", o.suffix), o.dtype, o.shape});
      }
      uint64_t bytes = 0;
      for (const auto& s : specs) bytes += s.nbytes();
      if (cur > 0 && cur + bytes > opt_.max_shard_size) {
        shard_specs.emplace_back();
        cur = 0;
      }
      cur += bytes;
      item.out_bytes = bytes;
      int shard = static_cast<int>(shard_specs.size()) - 1;
      for (auto& s : specs) {
        item.dest.emplace_back(shard, static_cast<int>(shard_specs[shard].size()));
        shard_specs[shard].push_back(std::move(s));
      }
    }
    int n = static_cast<int>(shard_specs.size());
    for (int i = 0; i < n; ++i)
      shard_names_.push_back(n == 1 ? "model.safetensors" : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, n));
    shard_specs_ = std::move(shard_specs);
    summary_.shards = n;
    for (const auto& item : items_) {
      if (!item.deferred) continue;
      for (const auto& [shard, idx] : item.dest) deferred_[shard_specs_[shard][idx].name] = {shard, idx};
    }
    remaining_ = std::vector<std::atomic<int64_t>>(n);
    for (int i = 0; i < n; ++i) remaining_[i] = static_cast<int64_t>(shard_specs_[i].size());
    // NVFP4 fused sets.
    for (size_t i = 0; i < items_.size(); ++i) {
      const Item& it = items_[i];
      if (!it.weight || it.deferred) continue;
      const auto& w = *cfg_.groups()[it.group].scheme.weights;
      if (!w.is_fp4() || w.strategy != Strategy::kTensorGroup) continue;
      std::string key = FusedKey(it.module);
      if (!key.empty()) fused_[key].push_back(i);
    }
    return absl::OkStatus();
  }

  // Fused 3-D expert weights (GPT-OSS, Llama 4: experts.gate_up_proj [experts, hidden, 2 * intermediate],
  // experts.down_proj) are not Linear modules, so no group would quantize them: a job that targets Linear would
  // finish with the experts, most of the model, left in bf16. Quantizing them is not supported yet; the job fails
  // unless the ignore list names them, and then they are copied and listed in quantization_config.ignore.
  // Plans one quantized Linear per expert and projection of a Llama 4 fused experts tensor; false (nothing planned)
  // when the fused module is ignored (it is then copied as it is).
  absl::StatusOr<bool> PlanExpertSplit(const ModelTensor& t, std::vector<int>* group_modules) {
    const std::string& name = t.info->name;
    const std::string module = name.substr(0, name.rfind('.'));  // model.layers.L.feed_forward.experts
    if (opt_.solver && cfg_.groups().empty()) return PlanDenseExpertSplit(t);
    if (cfg_.groups().empty() || cfg_.IsIgnored(module, "") || cfg_.IsIgnored(name, "")) {
      // A calibrated solve runs (and quantizes) the experts as per-expert Linears, which a fused tensor kept as
      // it is cannot hold.
      if (opt_.solver && !cfg_.groups().empty())
        return absl::UnimplementedError(absl::StrCat(
            name, ": calibrated jobs quantize Llama 4's fused experts as per-expert Linears and cannot keep them ",
            "fused; remove '", module, "' from ignore, or use a data-free scheme (--algorithm rtn)"));
      return false;
    }
    const int64_t E = t.info->shape[0], in = t.info->shape[1], total = t.info->shape[2];
    struct Part {
      const char* leaf;
      int64_t col0, rows;
    };
    std::vector<Part> parts;
    if (absl::EndsWith(name, ".gate_up_proj")) {
      if (total % 2 != 0)
        return absl::InvalidArgumentError(absl::StrCat(name, ": gate_up_proj's last dimension ", total,
                                                       " is odd; it must hold gate and up halves"));
      parts = {{"gate_proj", 0, total / 2}, {"up_proj", total / 2, total / 2}};
    } else {
      parts = {{"down_proj", 0, total}};
    }
    for (int64_t e = 0; e < E; ++e)
      for (const Part& p : parts) {
        const std::string m = absl::StrCat(module, ".", e, ".", p.leaf);
        const int g = cfg_.Match(m, "Linear");
        if (g < 0 || !cfg_.groups()[g].scheme.weights)
          return absl::InvalidArgumentError(absl::StrCat(
              m, ": one expert of the fused tensor ", name, " is left out of quantization, which its fused layout ",
              "cannot hold; ignore the whole fused module ('", module, "') or none of its experts"));
        const auto& grp = cfg_.groups()[g];
        if (!opt_.solver && grp.scheme.input_activations && !grp.scheme.input_activations->is_dynamic())
          return absl::InvalidArgumentError(absl::StrCat(m, ": static input activations need calibration; use a ",
                                                         "calibrated algorithm or a dynamic scheme"));
        Item item;
        LLMC_ASSIGN_OR_RETURN(item.outputs, PlanQuantizedWeight(m, p.rows, in, t.info->dtype, *grp.scheme.weights,
                                                                grp.format));
        item.module = m;
        item.group = g;
        item.weight = &t;
        if (opt_.solver) {
          // The solver runs the expert as a Linear sliced from the fused tensor and emits its tensors by name.
          LLMC_ASSIGN_OR_RETURN(auto extra, opt_.solver->ExtraModuleTensors(m, g, p.rows, in, t.info->dtype));
          for (auto& x : extra) item.outputs.push_back(std::move(x));
          item.deferred = true;
        } else {
          item.slice = Item::ExpertSlice{e, p.col0, p.rows, in};
        }
        ++(*group_modules)[g];
        ++summary_.modules_quantized;
        summary_.modules.push_back({m, grp.name, grp.format, static_cast<uint64_t>(p.rows * in) *
                                                                 DTypeSize(t.info->dtype), 0});
        items_.push_back(std::move(item));
      }
    ++summary_.fused_experts_split;
    return true;
  }

  // A calibrated job without quantization (SparseGPT, Wanda alone): the solver runs every expert of the fused
  // tensor as its sliced Linear and writes it dense (pruned where the recipe prunes it) under the per-expert names.
  absl::StatusOr<bool> PlanDenseExpertSplit(const ModelTensor& t) {
    const std::string& name = t.info->name;
    const std::string module = name.substr(0, name.rfind('.'));
    const int64_t E = t.info->shape[0], in = t.info->shape[1], total = t.info->shape[2];
    const bool gate_up = absl::EndsWith(name, ".gate_up_proj");
    if (gate_up && total % 2 != 0)
      return absl::InvalidArgumentError(absl::StrCat(name, ": gate_up_proj's last dimension ", total,
                                                     " is odd; it must hold gate and up halves"));
    for (int64_t e = 0; e < E; ++e)
      for (const char* leaf : gate_up ? std::vector<const char*>{"gate_proj", "up_proj"}
                                      : std::vector<const char*>{"down_proj"}) {
        const std::string m = absl::StrCat(module, ".", e, ".", leaf);
        const int64_t rows = gate_up ? total / 2 : total;
        Item item;
        item.deferred = true;
        item.extra = TensorSpec{m + ".weight", t.info->dtype, {rows, in}};
        const uint64_t bytes = static_cast<uint64_t>(rows * in) * DTypeSize(t.info->dtype);
        summary_.modules.push_back({m, "", "dense", bytes, bytes});
        items_.push_back(std::move(item));
      }
    ++summary_.fused_experts_split;
    return true;
  }

  absl::Status CheckFusedExperts(const TensorInfo& t) {
    if (t.shape.size() < 3 || cfg_.groups().empty() || !absl::StrContains(t.name, "experts")) return absl::OkStatus();
    const std::string module = t.name.substr(0, t.name.rfind('.'));
    if (cfg_.IsIgnored(module, "") || cfg_.IsIgnored(t.name, "")) {
      if (std::find(ignored_.begin(), ignored_.end(), module) == ignored_.end()) ignored_.push_back(module);
      summary_.warnings.push_back(absl::StrCat(t.name, ": fused 3-D expert weights kept unquantized in ",
                                               DTypeName(t.dtype), " (the ignore list names them)"));
      return absl::OkStatus();
    }
    std::vector<std::string> dims;
    for (int64_t d : t.shape) dims.push_back(std::to_string(d));
    return absl::InvalidArgumentError(absl::StrCat(
        t.name, ": fused 3-D expert weights [", absl::StrJoin(dims, ", "), "] cannot be quantized: llmc writes ",
        "experts as per-expert Linears, and vLLM's loader for this family (GPT-OSS) reads only the fused tensors ",
        "(bf16 or mxfp4), so a split checkpoint would not load; to keep them in ", DTypeName(t.dtype), " add '",
        module, "' or 're:.*experts$' to ignore"));
  }

  absl::Status MakeStaging() {
    std::error_code ec;
    fs::path parent = out_.parent_path();
    fs::create_directories(parent, ec);
    if (ec && (ec.value() == ENOSPC || ec.value() == EDQUOT))
      return FileWriteError(ec.value(), "cannot create the output parent directory", parent.string());
    if (ec) return absl::PermissionDeniedError(absl::StrCat(parent.string(), ": cannot create output parent directory: ", ec.message()));
    staging_ = opt_.staging_dir.empty() ? parent / absl::StrCat(".", out_.filename().string(), ".llmc-staging-", getpid())
                                        : fs::path(opt_.staging_dir);
    const bool resume = opt_.solver && opt_.resume_from_block > 0;
    if (resume && !fs::is_directory(staging_, ec))
      return absl::FailedPreconditionError(absl::StrCat(staging_.string(), ": no staging directory to resume from"));
    if (!resume) {
      fs::remove_all(staging_, ec);
      fs::create_directories(staging_.parent_path(), ec);
      if (!fs::create_directory(staging_, ec) || ec) {
        if (ec.value() == ENOSPC || ec.value() == EDQUOT)
          return FileWriteError(ec.value(), "cannot create the staging directory", staging_.string());
        return absl::PermissionDeniedError(absl::StrCat(staging_.string(), ": cannot create staging directory: ", ec.message()));
      }
    }
    for (size_t i = 0; i < shard_specs_.size(); ++i) {
      const std::string path = (staging_ / shard_names_[i]).string();
      auto w = resume ? SafetensorsWriter::Reopen(path, shard_specs_[i]) : SafetensorsWriter::Create(path, shard_specs_[i]);
      if (!w.ok()) return w.status();
      summary_.output_bytes += (*w)->total_size();
      shards_.push_back(std::move(*w));
    }
    return absl::OkStatus();
  }

  bool Stopped() const { return failed_.load() || (opt_.cancel && opt_.cancel->load()); }

  // Counts `count` tensors of `shard` as complete; the last one closes the shard and hands it over.
  absl::Status TensorsDone(int shard, int64_t count) {
    if (remaining_.empty() || remaining_[shard].fetch_sub(count) != count) return absl::OkStatus();
    LLMC_RETURN_IF_ERROR(shards_[shard]->Close());
    if (opt_.on_file_complete)
      return opt_.on_file_complete(shard_names_[shard], (staging_ / shard_names_[shard]).string());
    return absl::OkStatus();
  }

  void Fail(absl::Status s) {
    std::lock_guard<std::mutex> lock(err_mu_);
    if (err_.ok()) err_ = std::move(s);
    failed_ = true;
  }

  absl::Status CopyTensor(const Item& item) {
    const ModelTensor& t = *item.copy;
    auto data = t.file->Data(*t.info);
    const uint64_t chunk = 16u << 20;
    bool is_float = t.info->dtype == DType::kBF16 || t.info->dtype == DType::kF16 || t.info->dtype == DType::kF32;
    for (uint64_t off = 0; off < data.size(); off += chunk) {
      if (Stopped()) return absl::OkStatus();
      uint64_t n = std::min<uint64_t>(chunk, data.size() - off);
      if (is_float) {
        const uint8_t* p = data.data() + off;
        bool finite = t.info->dtype == DType::kF32
                          ? simd::AllFinite32(reinterpret_cast<const uint32_t*>(p), n / 4)
                          : simd::AllFinite16(reinterpret_cast<const uint16_t*>(p), n / 2,
                                              t.info->dtype == DType::kBF16 ? 0x7f80 : 0x7c00);
        if (!finite)
          return absl::InvalidArgumentError(absl::StrCat(t.info->name, ": tensor contains NaN or Inf (in ", t.file->path(),
                                                         "); fix the checkpoint"));
      }
      auto [shard, idx] = item.dest[0];
      LLMC_RETURN_IF_ERROR(shards_[shard]->Write(idx, off, data.subspan(off, n)));
      t.file->Release(*t.info, off, n);
      bytes_done_ += n;
    }
    if (Stopped()) return absl::OkStatus();
    return TensorsDone(item.dest[0].first, 1);
  }

  // Rows per piece of a module: about piece_bytes of input, a multiple of what the format needs to keep the
  // pieces independent (whole tensor for per-tensor scales, 128-row blocks, packed zero-point rows).
  int64_t PieceRows(int64_t rows, int64_t cols, DType dtype, const QuantArgs& a, const std::string& format) const {
    const uint64_t row_bytes = static_cast<uint64_t>(cols) * DTypeSize(dtype);
    if (a.strategy == Strategy::kTensor) return rows;
    int64_t align = 1;
    if (a.strategy == Strategy::kBlock) align = (*a.block_structure)[0];
    if (format == "pack-quantized" && !a.symmetric) align = std::lcm(align, static_cast<int64_t>(32 / a.num_bits));
    int64_t want = static_cast<int64_t>(std::max<uint64_t>(1, opt_.piece_bytes / std::max<uint64_t>(1, row_bytes)));
    return std::max(align, want / align * align);
  }

  // max |w| of a module, read piece by piece so its pages leave memory as it goes.
  absl::StatusOr<float> AbsMax(const Item& item) {
    const ModelTensor& t = *item.weight;
    const ItemWeight iw = WeightOf(item);
    const int64_t rows = iw.rows, cols = iw.cols;
    const uint64_t row_bytes = static_cast<uint64_t>(cols) * DTypeSize(iw.dtype);
    const int64_t piece = std::max<int64_t>(1, opt_.piece_bytes / row_bytes);
    const uint8_t* base = iw.data;
    float amax = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += piece) {
      int64_t n = std::min(piece, rows - r0);
      LLMC_ASSIGN_OR_RETURN(float a, WeightAbsMax({item.module, base + r0 * row_bytes, iw.dtype, n, cols}));
      amax = std::max(amax, a);
      if (!item.slice) t.file->Release(*t.info, r0 * row_bytes, n * row_bytes);
    }
    return amax;
  }

  // Quantizes one module in row pieces (each piece's outputs are contiguous rows of the output tensors),
  // writing each piece at once and dropping its input pages: memory stays at about one piece per thread.
  absl::Status QuantizeItem(const Item& item, std::optional<float> global_scale) {
    const ModelTensor& t = *item.weight;
    const auto& grp = cfg_.groups()[item.group];
    const QuantArgs& a = *grp.scheme.weights;
    if (grp.format == "nvfp4-pack-quantized" && !global_scale) {
      LLMC_ASSIGN_OR_RETURN(float amax, AbsMax(item));
      global_scale = NvFp4GlobalScale(amax, t.info->dtype);
    }
    const ItemWeight iw = WeightOf(item);
    const int64_t rows = iw.rows, cols = iw.cols;
    const uint64_t row_bytes = static_cast<uint64_t>(cols) * DTypeSize(iw.dtype);
    const int64_t piece = PieceRows(rows, cols, iw.dtype, a, grp.format);
    const uint8_t* base = iw.data;
    std::vector<uint64_t> offsets(item.outputs.size(), 0);
    for (int64_t r0 = 0; r0 < rows; r0 += piece) {
      if (Stopped()) return absl::OkStatus();
      const int64_t n = std::min(piece, rows - r0);
      WeightView w{item.module, base + r0 * row_bytes, t.info->dtype, n, cols};
      LLMC_ASSIGN_OR_RETURN(auto bufs, QuantizeWeight(w, a, grp.format, global_scale));
      for (size_t i = 0; i < bufs.size(); ++i) {
        auto [shard, idx] = item.dest[i];
        const OutputTensor& out = item.outputs[i];
        if (out.suffix == "weight_shape") {
          if (r0 == 0) {
            int64_t shape[2] = {rows, cols};
            LLMC_RETURN_IF_ERROR(shards_[shard]->Write(idx, 0, absl::MakeConstSpan(reinterpret_cast<uint8_t*>(shape), 16)));
          }
          continue;
        }
        // A tensor whose size does not grow with rows (global scale) is written once.
        if (n < rows && bufs[i].size() == out.nbytes()) {
          if (r0 == 0) LLMC_RETURN_IF_ERROR(shards_[shard]->Write(idx, 0, absl::MakeConstSpan(bufs[i])));
          continue;
        }
        LLMC_RETURN_IF_ERROR(shards_[shard]->Write(idx, offsets[i], absl::MakeConstSpan(bufs[i])));
        offsets[i] += bufs[i].size();
      }
      if (!item.slice) t.file->Release(*t.info, r0 * row_bytes, n * row_bytes);
      bytes_done_ += n * row_bytes;
    }
    ++modules_done_;
    if (Stopped()) return absl::OkStatus();
    return TensorsDone(item.dest[0].first, static_cast<int64_t>(item.dest.size()));
  }

  // A fused NVFP4 set: the global scale from the max over all members, then each member.
  absl::Status QuantizeFused(const std::vector<size_t>& members) {
    float amax = 0;
    DType dt = DType::kBF16;
    for (size_t i : members) {
      dt = items_[i].weight->info->dtype;
      LLMC_ASSIGN_OR_RETURN(float a, AbsMax(items_[i]));
      amax = std::max(amax, a);
    }
    float g = NvFp4GlobalScale(amax, dt);
    for (size_t i : members) {
      if (Stopped()) return absl::OkStatus();
      LLMC_RETURN_IF_ERROR(QuantizeItem(items_[i], g));
    }
    return absl::OkStatus();
  }

  absl::Status Execute() {
    summary_.input_bytes = model_->total_tensor_bytes();
    int threads = opt_.threads > 0 ? opt_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    summary_.threads = threads;
    std::map<size_t, const std::vector<size_t>*> fused_first;  // first member index -> set
    std::vector<bool> in_fused(items_.size(), false);
    for (const auto& [k, v] : fused_) {
      fused_first[v.front()] = &v;
      for (size_t i : v) in_fused[i] = true;
    }
    int modules_total = 0;
    for (const auto& item : items_) modules_total += item.weight && !item.deferred;
    {
      ThreadPool pool(threads);
      for (size_t i = 0; i < items_.size(); ++i) {
        if (items_[i].deferred || (in_fused[i] && !fused_first.count(i))) continue;
        pool.Submit([this, i, &fused_first] {
          if (Stopped()) return;
          absl::Status s;
          if (auto f = fused_first.find(i); f != fused_first.end()) s = QuantizeFused(*f->second);
          else if (items_[i].copy) s = CopyTensor(items_[i]);
          else s = QuantizeItem(items_[i], std::nullopt);
          if (!s.ok()) Fail(std::move(s));
        });
      }
      // Report progress while the pool works.
      std::atomic<bool> done{false};
      std::thread waiter([&] {
        pool.Wait();
        done = true;
      });
      while (!done.load()) {
        if (opt_.on_progress)
          opt_.on_progress(DataFreeProgress(modules_total));
        for (int k = 0; k < 10 && !done.load(); ++k) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      waiter.join();
    }
    if (failed_) return err_;
    if (opt_.cancel && opt_.cancel->load()) return absl::CancelledError("compression cancelled; no output was written");
    if (opt_.on_progress) {
      opt_.on_progress(DataFreeProgress(modules_total));
    }
    if (opt_.solver) LLMC_RETURN_IF_ERROR(RunSolver());
    for (auto& s : shards_) LLMC_RETURN_IF_ERROR(s->Close());
    size_t mi = 0;
    for (const auto& item : items_) {
      if (item.extra || (item.copy && ModuleClass(item.copy->info->name, item.copy->info->shape.size()).empty())) continue;
      summary_.modules[mi++].bytes_out = item.out_bytes;
    }
    return absl::OkStatus();
  }

  // The progress of the data-free pass: input bytes and modules done.
  CompressProgress DataFreeProgress(int modules_total) const {
    CompressProgress p;
    p.bytes_done = bytes_done_.load();
    p.bytes_total = summary_.input_bytes;
    p.modules_done = modules_done_.load();
    p.modules_total = modules_total;
    return p;
  }

  // The decoder layer of a tensor name ("model.layers.7.x" -> 7), or -1.
  int LayerOf(const std::string& name) const {
    const std::string kPrefix = opt_.solver->LayersPrefix();
    if (!absl::StartsWith(name, kPrefix)) return -1;
    int layer = 0;
    size_t i = kPrefix.size();
    if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
    for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i) layer = layer * 10 + (name[i] - '0');
    return layer;
  }

  absl::Status RunSolver() {
    std::set<std::string> emitted;
    std::mutex mu;
    // Tensors of blocks finished before a resume are in the reopened shards already.
    for (const auto& [name, where] : deferred_) {
      int layer = LayerOf(name);
      if (layer >= 0 && layer < opt_.resume_from_block) {
        shards_[where.first]->MarkWritten(where.second);
        emitted.insert(name);
        LLMC_RETURN_IF_ERROR(TensorsDone(where.first, 1));
      }
    }
    SolverIo io;
    io.resume_from_block = opt_.resume_from_block;
    io.cancel = opt_.cancel;
    io.emit = [&](const std::string& name, absl::Span<const uint8_t> bytes) -> absl::Status {
      auto it = deferred_.find(name);
      if (it == deferred_.end()) return absl::InternalError(absl::StrCat("solver emitted an unplanned tensor ", name));
      auto [shard, idx] = it->second;
      const TensorSpec& spec = shard_specs_[shard][idx];
      if (bytes.size() != spec.nbytes())
        return absl::InternalError(absl::StrCat("solver emitted ", bytes.size(), " bytes for ", name, ", planned ", spec.nbytes()));
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!emitted.insert(name).second) return absl::InternalError(absl::StrCat("solver emitted ", name, " twice"));
      }
      LLMC_RETURN_IF_ERROR(shards_[shard]->Write(idx, 0, bytes));
      bytes_done_ += bytes.size();
      return TensorsDone(shard, 1);
    };
    io.read_back = [&](const std::string& name) -> absl::StatusOr<std::vector<uint8_t>> {
      auto it = deferred_.find(name);
      if (it == deferred_.end()) return absl::NotFoundError(absl::StrCat(name, ": not in the staged output"));
      return shards_[it->second.first]->Read(it->second.second);
    };
    io.block_done = [&](int layer) -> absl::Status {
      for (auto& s : shards_) LLMC_RETURN_IF_ERROR(s->Sync());
      if (opt_.on_block_done) opt_.on_block_done(layer);
      return absl::OkStatus();
    };
    const int modules_done = modules_done_.load();
    io.progress = [&](const CompressProgress& p) {
      if (!opt_.on_progress) return;
      CompressProgress q = p;
      q.bytes_done = bytes_done_.load();
      q.bytes_total = summary_.input_bytes;
      q.modules_done += modules_done;
      q.modules_total = summary_.modules_quantized;
      opt_.on_progress(q);
    };
    LLMC_RETURN_IF_ERROR(opt_.solver->Run(io));
    if (opt_.cancel && opt_.cancel->load()) return absl::CancelledError("compression cancelled; no output was written");
    for (const auto& [name, where] : deferred_)
      if (!emitted.count(name)) return absl::InternalError(absl::StrCat("the solver did not produce ", name));
    summary_.solver_report = opt_.solver->Report();
    return absl::OkStatus();
  }

  // Writes a file of the output into the staging directory and hands it over.
  absl::Status WriteOutputFile(const std::string& name, const std::string& text) {
    LLMC_RETURN_IF_ERROR(WriteFile(staging_ / name, text));
    if (opt_.on_file_complete) return opt_.on_file_complete(name, (staging_ / name).string());
    return absl::OkStatus();
  }

  absl::Status WriteFile(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return FileWriteError(errno ? errno : EIO, absl::StrCat("cannot write ", p.string()), p.string());
    return absl::OkStatus();
  }

  absl::Status Finalize() {
    // config.json with quantization_config (keys sorted, as transformers writes it).
    json config = model_->config_json();
    if (!cfg_.groups().empty()) config["quantization_config"] = cfg_.ToJson(IgnoreList());
    LLMC_RETURN_IF_ERROR(WriteOutputFile("config.json", config.dump(2) + "\n"));
    LLMC_RETURN_IF_ERROR(WriteOutputFile("recipe.yaml", opt_.recipe_yaml.empty() ? cfg_.RecipeYaml() : opt_.recipe_yaml));
    summary_.method = opt_.method.empty() ? absl::StrCat("RTN ", summary_.scheme) : opt_.method;
    summary_.seconds = NowSeconds() - t0_;
    summary_.peak_rss_bytes = PeakRssBytes();
    LLMC_RETURN_IF_ERROR(WriteOutputFile("compression_report.json", summary_.ToJson().dump(2) + "\n"));
    if (shards_.size() > 1) {
      json index;
      uint64_t total = 0;
      json wm = json::object();
      for (size_t s = 0; s < shard_specs_.size(); ++s)
        for (const auto& spec : shard_specs_[s]) {
          wm[spec.name] = shard_names_[s];
          total += spec.nbytes();
        }
      index["metadata"] = {{"total_size", total}};
      index["weight_map"] = wm;
      LLMC_RETURN_IF_ERROR(WriteOutputFile("model.safetensors.index.json", index.dump(2) + "\n"));
    }
    for (const auto& aux : model_->auxiliary_files()) {
      std::error_code ec;
      fs::copy_file(fs::path(opt_.model_path) / aux, staging_ / aux, fs::copy_options::overwrite_existing, ec);
      if (!ec) fs::permissions(staging_ / aux, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read, ec);
      if (ec) return FileWriteError(ec.value(), absl::StrCat("cannot copy ", aux, " from ", opt_.model_path, ": ", ec.message()),
                                    (staging_ / aux).string());
      if (opt_.on_file_complete) LLMC_RETURN_IF_ERROR(opt_.on_file_complete(aux, (staging_ / aux).string()));
    }
    // Make it durable, then visible.
    int dfd = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      fsync(dfd);
      ::close(dfd);
    }
    if (opt_.cancel && opt_.cancel->load()) return absl::CancelledError("compression cancelled; no output was written");
    std::error_code ec;
    fs::path old;
    if (fs::exists(out_, ec)) {
      old = out_.parent_path() / absl::StrCat(".", out_.filename().string(), ".llmc-old-", getpid());
      fs::rename(out_, old, ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot move the existing ", out_.string(), " aside: ", ec.message()));
    }
    fs::rename(staging_, out_, ec);
    if (ec) {
      std::error_code ec2;
      if (!old.empty()) fs::rename(old, out_, ec2);
      return absl::InternalError(absl::StrCat("cannot move the result into ", out_.string(), ": ", ec.message()));
    }
    if (!old.empty()) fs::remove_all(old, ec);
    return absl::OkStatus();
  }

  // quantization_config.ignore: the ignored modules by name; for a vision-language checkpoint, its non-text parts
  // and lm_head as patterns instead (they hold under the names transformers 4, 5 and vLLM give them), as
  // llm-compressor's vision-language examples write them.
  std::vector<std::string> IgnoreList() const {
    if (!layout_.multimodal) return ignored_;
    std::vector<std::string> out;
    bool lm_head_ignored = false;
    for (const auto& m : ignored_) {
      if (m == layout_.lm_head) {
        lm_head_ignored = true;
      } else {
        out.push_back(m);
      }
    }
    for (auto& p : layout_.IgnorePatterns(lm_head_ignored)) out.push_back(std::move(p));
    return out;
  }

  const CompressOptions& opt_;
  const QuantConfig& cfg_;
  std::unique_ptr<ModelDir> model_;
  CheckpointLayout layout_;
  fs::path out_, staging_;
  std::vector<Item> items_;
  std::vector<std::string> ignored_;
  std::map<std::string, std::vector<size_t>> fused_;
  std::vector<std::vector<TensorSpec>> shard_specs_;
  std::vector<std::string> shard_names_;
  std::vector<std::unique_ptr<SafetensorsWriter>> shards_;
  std::map<std::string, std::pair<int, int>> deferred_;  // solver-produced tensor -> (shard, index)
  std::vector<std::atomic<int64_t>> remaining_;           // tensors not yet complete, per shard
  double t0_ = 0;
  CompressSummary summary_;
  std::atomic<uint64_t> bytes_done_{0};
  std::atomic<int> modules_done_{0};
  std::atomic<bool> failed_{false};
  std::mutex err_mu_;
  absl::Status err_;
};

}  // namespace

absl::StatusOr<CompressSummary> RunCompress(const CompressOptions& options, const QuantConfig& config) {
  Job job(options, config);
  return job.Run();
}

}  // namespace llmc
