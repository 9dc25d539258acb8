#include "engine/algo/block_view.h"

#include "engine/format/quant_config.h"

namespace llmc {

std::string LinearLeaf(const std::string& module) {
  auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

std::string InputGroup(const std::string& module) {
  const std::string leaf = LinearLeaf(module);
  const std::string parent = module.substr(0, module.size() - leaf.size());
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj" || leaf == "qkv_proj") return parent + "qkv";
  if (leaf == "gate_proj" || leaf == "up_proj" || leaf == "gate_up_proj") return parent + "gate_up";
  if (leaf == "w1" || leaf == "w3") return parent + "w1_w3";  // Mixtral experts' gate and up
  return module;
}

bool MatchesTarget(const std::string& pattern, const std::string& module) {
  auto m = TargetMatcher::Create(pattern);
  return m.ok() && m->Matches(module, "");
}

}  // namespace llmc
