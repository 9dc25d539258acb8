#include "engine/pipeline/inspect.h"

#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/format/quant_config.h"
#include "engine/format/quant_scheme.h"
#include "engine/io/checkpoint_layout.h"
#include "engine/io/model_dir.h"
#include "engine/pipeline/compress_job.h"

namespace llmc {

using json = nlohmann::json;

namespace {
// Tensor suffixes that belong to a quantized module's weight.
const char* kSuffixes[] = {"weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_global_scale",
                           "weight_g_idx", "input_scale", "input_global_scale", "input_zero_point", "weight"};

std::pair<std::string, std::string> SplitModule(const std::string& name) {
  for (const char* s : kSuffixes) {
    std::string suf = absl::StrCat(".", s);
    if (absl::EndsWith(name, suf)) return {name.substr(0, name.size() - suf.size()), s};
  }
  return {"", ""};
}
}  // namespace

absl::StatusOr<json> InspectCheckpoint(const std::string& path) {
  LLMC_ASSIGN_OR_RETURN(auto model, ModelDir::Open(path));
  json r;
  r["path"] = path;
  const auto& mc = model->config();
  r["architecture"] = mc.architectures.empty() ? json(nullptr) : json(mc.architectures[0]);
  r["num_hidden_layers"] = mc.num_hidden_layers;
  r["hidden_size"] = mc.hidden_size;
  // A vision-language checkpoint: its text decoder's shape, where its tensors are, and the parts kept as they are.
  // (Inspect reads any checkpoint: one whose layout llmc cannot resolve is shown without it.)
  absl::StatusOr<CheckpointLayout> layout = ResolveCheckpointLayout(*model);
  if (layout.ok() && layout->multimodal) {
    const json& tc = layout->text_config;
    r["text_architecture"] = layout->text_architecture;
    r["text_decoder"] = layout->decoder_prefix;
    r["num_hidden_layers"] = tc.value("num_hidden_layers", int64_t{0});
    r["hidden_size"] = tc.value("hidden_size", int64_t{0});
    r["other_parts"] = layout->other_parts;
  }
  json qc = model->config_json().value("quantization_config", json(nullptr));
  r["quantization"] = qc;
  // Config groups for per-module matching.
  std::optional<QuantConfig> cfg;
  if (qc.is_object() && qc.contains("config_groups") && qc["config_groups"].is_object()) {
    std::vector<std::pair<std::string, QuantScheme>> groups;
    for (auto it = qc["config_groups"].begin(); it != qc["config_groups"].end(); ++it) {
      auto s = QuantScheme::FromJson(it.value(), absl::StrCat("quantization_config.config_groups.", it.key()));
      if (!s.ok()) return s.status();
      groups.emplace_back(it.key(), *s);
    }
    std::vector<std::string> ignore;
    if (qc.contains("ignore") && qc["ignore"].is_array())
      for (const auto& i : qc["ignore"])
        if (i.is_string()) ignore.push_back(i.get<std::string>());
    auto c = QuantConfig::Create(groups, ignore);
    if (!c.ok()) return c.status();
    cfg = std::move(*c);
  }
  r["format"] = qc.is_object() ? qc.value("format", json("unknown")) : json("dense");
  json shards = json::array();
  uint64_t total = 0;
  for (const auto& s : model->shard_files()) {
    std::error_code ec;
    uint64_t size = std::filesystem::file_size(std::filesystem::path(path) / s, ec);
    shards.push_back({{"file", s}, {"bytes", size}});
    total += size;
  }
  r["shards"] = shards;
  r["total_bytes"] = total;
  r["tensors"] = model->tensors().size();
  std::map<std::string, json> modules;
  std::vector<std::string> order;
  std::map<std::string, uint64_t> dtype_bytes;
  for (const auto& t : model->tensors()) {
    dtype_bytes[std::string(DTypeName(t.info->dtype))] += t.info->nbytes();
    auto [mod, suffix] = SplitModule(t.info->name);
    if (mod.empty()) continue;
    if (suffix == "weight" && ModuleClass(t.info->name, t.info->shape.size()).empty()) continue;
    if (!modules.count(mod)) {
      order.push_back(mod);
      modules[mod] = {{"name", mod}, {"tensors", json::object()}, {"bytes", 0}};
    }
    json& m = modules[mod];
    m["tensors"][suffix] = {{"dtype", std::string(DTypeName(t.info->dtype))}, {"shape", t.info->shape}};
    m["bytes"] = m["bytes"].get<uint64_t>() + t.info->nbytes();
  }
  json mods = json::array();
  std::map<std::string, int> formats;
  for (const auto& name : order) {
    json& m = modules[name];
    std::string fmt = "dense", group;
    bool quantized = !(m["tensors"].size() == 1 && m["tensors"].contains("weight") &&
                       IsFloatingPoint(*ParseDType(m["tensors"]["weight"]["dtype"].get<std::string>())) &&
                       m["tensors"]["weight"]["dtype"] != "F8_E4M3");
    if (cfg && quantized) {
      int g = cfg->Match(name, "Linear");
      if (g < 0) g = cfg->Match(name, "Embedding");
      if (g >= 0) {
        fmt = cfg->groups()[g].format;
        group = cfg->groups()[g].name;
      } else {
        fmt = "unknown";
      }
    }
    m["format"] = fmt;
    m["group"] = group;
    formats[fmt]++;
    mods.push_back(m);
  }
  r["modules"] = mods;
  r["formats"] = formats;
  r["dtype_bytes"] = dtype_bytes;
  return r;
}

std::string RenderInspect(const json& r, bool verbose) {
  std::string out;
  absl::StrAppend(&out, "checkpoint   ", r["path"].get<std::string>(), "\n");
  if (!r["architecture"].is_null()) absl::StrAppend(&out, "architecture ", r["architecture"].get<std::string>(), "\n");
  if (r.contains("text_architecture"))
    absl::StrAppend(&out, "text decoder ", r["text_architecture"].get<std::string>(), " (", r["text_decoder"].get<std::string>(),
                    "*, ", r["num_hidden_layers"].get<int64_t>(), " layers); kept as is: ",
                    absl::StrJoin(r["other_parts"].get<std::vector<std::string>>(), ", "), "\n");
  absl::StrAppend(&out, "format       ", r["format"].get<std::string>(), "\n");
  absl::StrAppend(&out, "size         ", FormatBytes(r["total_bytes"].get<uint64_t>()), " in ", r["shards"].size(),
                  " shard(s), ", r["tensors"].get<uint64_t>(), " tensors\n");
  const json& qc = r["quantization"];
  if (qc.is_object() && qc.contains("config_groups")) {
    for (auto it = qc["config_groups"].begin(); it != qc["config_groups"].end(); ++it) {
      const json& g = it.value();
      std::string w = "none";
      if (g.contains("weights") && g["weights"].is_object()) {
        const json& a = g["weights"];
        w = absl::StrCat(a.value("type", "?"), a.value("num_bits", 0), " ", a.value("strategy", "?"));
        if (a.contains("group_size") && a["group_size"].is_number()) absl::StrAppend(&w, " ", a["group_size"].get<int>());
        absl::StrAppend(&w, a.value("symmetric", true) ? " sym" : " asym");
      }
      std::string in = "none";
      if (g.contains("input_activations") && g["input_activations"].is_object()) {
        const json& a = g["input_activations"];
        in = absl::StrCat(a.value("type", "?"), a.value("num_bits", 0), " ", a.value("strategy", "?"),
                          a["dynamic"].is_boolean() ? (a["dynamic"].get<bool>() ? " dynamic" : " static") : " local");
      }
      absl::StrAppend(&out, "group        ", it.key(), ": ", g.value("format", "?"), ", targets ", g["targets"].dump(),
                      ", weights ", w, ", inputs ", in, "\n");
    }
    if (qc.contains("ignore")) absl::StrAppend(&out, "ignore       ", qc["ignore"].dump(), "\n");
  }
  absl::StrAppend(&out, "modules     ");
  for (auto it = r["formats"].begin(); it != r["formats"].end(); ++it)
    absl::StrAppend(&out, " ", it.key(), ": ", it.value().get<int>());
  absl::StrAppend(&out, "\n");
  for (const auto& s : r["shards"])
    absl::StrAppend(&out, "shard        ", s["file"].get<std::string>(), "  ", FormatBytes(s["bytes"].get<uint64_t>()), "\n");
  if (verbose) {
    for (const auto& m : r["modules"]) {
      std::string tensors;
      for (auto it = m["tensors"].begin(); it != m["tensors"].end(); ++it)
        absl::StrAppend(&tensors, " ", it.key(), ":", it.value()["dtype"].get<std::string>(), it.value()["shape"].dump());
      absl::StrAppend(&out, absl::StrFormat("  %-48s %-22s %10s %s\n", m["name"].get<std::string>(),
                                            m["format"].get<std::string>(), FormatBytes(m["bytes"].get<uint64_t>()), tensors));
    }
  }
  return out;
}

}  // namespace llmc
