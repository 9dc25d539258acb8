// libFuzzer target: config.json parsing (ParseModelConfig).
//
// Checks, besides the sanitizers and "no exception escapes": an accepted config has non-negative sizes and a
// rope_scaling that is null or an object; a rejected one is INVALID_ARGUMENT with a message naming the file.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/io/model_dir.h"

namespace {
void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_model_config: %s: %s\n", what, detail.c_str());
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = llmc::ParseModelConfig(text, "fuzz/config.json");
  if (!c.ok()) {
    if (c.status().code() != absl::StatusCode::kInvalidArgument)
      Fail("unexpected status code", c.status().ToString());
    if (c.status().message().find("fuzz/config.json") == absl::string_view::npos)
      Fail("error does not name the file", std::string(c.status().message()));
    return 0;
  }
  for (int64_t v : {c->hidden_size, c->num_hidden_layers, c->num_attention_heads, c->num_key_value_heads, c->head_dim,
                    c->intermediate_size, c->vocab_size}) {
    if (v < 0) Fail("negative size accepted", std::to_string(v));
  }
  if (!c->rope_scaling.is_null() && !c->rope_scaling.is_object()) Fail("rope_scaling", c->rope_scaling.dump());
  return 0;
}
