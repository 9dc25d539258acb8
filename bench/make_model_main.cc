// llmc-make-model DIR [--shape tiny|1b|8b] [--dtype bf16|f16|f32] [--seed N] [--max-shard-size 5GB]
//                 [--layers N] [--hidden N] [--intermediate N] [--heads N] [--kv-heads N] [--vocab N]
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
  // Overrides of the named shape's sizes.
  llmc::SyntheticLlamaShape over;
  app.add_option("--layers", over.layers, "override the number of layers");
  app.add_option("--hidden", over.hidden, "override the hidden size");
  app.add_option("--intermediate", over.intermediate, "override the MLP size");
  app.add_option("--heads", over.heads, "override the attention heads");
  app.add_option("--kv-heads", over.kv_heads, "override the key/value heads");
  app.add_option("--vocab", over.vocab, "override the vocabulary size");
  CLI11_PARSE(app, argc, argv);
  if (!llmc::SyntheticShapeByName(shape_name, &shape)) {
    std::fprintf(stderr, "llmc-make-model: error: unknown shape '%s' (use tiny, 1b or 8b)\n", shape_name.c_str());
    return 1;
  }
  if (app.count("--layers")) shape.layers = over.layers;
  if (app.count("--hidden")) shape.hidden = over.hidden;
  if (app.count("--intermediate")) shape.intermediate = over.intermediate;
  if (app.count("--heads")) shape.heads = over.heads;
  if (app.count("--kv-heads")) shape.kv_heads = over.kv_heads;
  if (app.count("--vocab")) shape.vocab = over.vocab;
  if (shape.layers < 1 || shape.hidden < 1 || shape.intermediate < 1 || shape.heads < 1 || shape.kv_heads < 1 ||
      shape.vocab < 1 || shape.hidden % shape.heads != 0 || shape.heads % shape.kv_heads != 0) {
    std::fprintf(stderr, "llmc-make-model: error: sizes must be positive, hidden a multiple of heads and heads of "
                         "kv-heads\n");
    return 1;
  }
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
