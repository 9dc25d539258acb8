// llmc-make-model DIR [--shape tiny|1b|8b] [--dtype bf16|f16|f32] [--seed N] [--max-shard-size 5GB]
// Writes a synthetic Llama-shaped checkpoint with random weights (for benchmarks and tests).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "tests/support/synthetic_model.h"
#include "common/util.h"

int main(int argc, char** argv) {
  CLI::App app{"Write a synthetic Llama-shaped Hugging Face checkpoint with random weights"};
  std::string dir, shape_name = "tiny", dtype_name = "bf16", shard = "5GB";
  uint64_t seed = 1;
  llmc::SyntheticLlamaShape shape;
  app.add_option("DIR", dir, "output directory")->required();
  app.add_option("--shape", shape_name, "tiny, 1b or 8b")->capture_default_str();
  app.add_option("--dtype", dtype_name, "bf16, f16 or f32")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--max-shard-size", shard, "shard size")->capture_default_str();
  app.add_option("--layers", shape.layers, "override the number of layers");
  CLI11_PARSE(app, argc, argv);
  int64_t layers_override = shape.layers;
  bool layers_given = app.count("--layers") > 0;
  if (!llmc::SyntheticShapeByName(shape_name, &shape)) {
    std::fprintf(stderr, "llmc-make-model: error: unknown shape '%s' (use tiny, 1b or 8b)\n", shape_name.c_str());
    return 1;
  }
  if (layers_given) shape.layers = layers_override;
  llmc::DType dt = dtype_name == "f16" ? llmc::DType::kF16 : dtype_name == "f32" ? llmc::DType::kF32 : llmc::DType::kBF16;
  auto bytes = llmc::ParseByteSize(shard);
  if (!bytes.ok()) {
    std::fprintf(stderr, "llmc-make-model: error: %s\n", std::string(bytes.status().message()).c_str());
    return 1;
  }
  auto s = llmc::WriteSyntheticLlama(dir, shape, dt, seed, *bytes);
  if (!s.ok()) {
    std::fprintf(stderr, "llmc-make-model: error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
