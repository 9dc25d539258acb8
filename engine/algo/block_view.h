// How the Linears of a decoder block are named and which of them read the same input tensor.
#pragma once

#include <string>

namespace llmc {

// The last component of a module name: "q_proj" for "model.layers.0.self_attn.q_proj".
std::string LinearLeaf(const std::string& module);
// The input tensor `module` reads, named after the Linears that share it: q/k/v read "<parent>qkv", gate/up read
// "<parent>gate_up", every other Linear its own input (the module name).
std::string InputGroup(const std::string& module);
// Whether the recipe target `pattern` (exact name or "re:" regex, TargetMatcher) names `module`; false for an
// invalid pattern.
bool MatchesTarget(const std::string& pattern, const std::string& module);

}  // namespace llmc
