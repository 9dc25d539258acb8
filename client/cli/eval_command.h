// `llmc eval MODEL --text FILE [--seq-len 512] [--max-windows 200] [--device cpu|cuda] [--threads N]
// [--json]`: perplexity of an original or compressed-tensors checkpoint with the protocol of docs/DESIGN.md
// (the text tokenized whole without special tokens, non-overlapping windows of --seq-len tokens, the first
// --max-windows, exp of the mean NLL of the seq-len - 1 predicted tokens per window). The file is read as
// Python's open(FILE).read() reads it, which is how the reference numbers were made: line endings "\r\n" and
// "\r" become
// "\n" (wikitext2-test.txt has CRLF line endings; read raw, its perplexity would be ~7% higher).
// For a checkpoint whose quantization_config quantizes activations (W8A8, FP8, NVFP4, a kv cache), `perplexity`
// runs them fake-quantized as the library's readers do and `perplexity_weights_only` runs them in fp32
// (--activations both|quantized|weights-only; docs/cli.md).
// --device cuda runs the blocks, lm_head and the token NLLs on GPU 0 (engine/model/cuda_causal_lm.h; fp32 GEMMs,
// the CPU's perplexity to ~1e-6); the weights are still read and dequantized on the host, one block at a time.
#pragma once

#include <string>

namespace llmc::cli {

struct EvalArgs {
  std::string model, text;
  int seq_len = 512;
  int max_windows = 200;
  std::string device = "cpu";
  int threads = 0;  // 0: one per core
  bool json = false;
  // What to run for a checkpoint that quantizes activations: "both" (perplexity with activations quantized as
  // the checkpoint says, and perplexity_weights_only with fp32 activations: two passes), "quantized" (only the
  // first) or "weights-only" (only the second). A checkpoint that quantizes no activations runs one pass.
  std::string activations = "both";
  // --device cuda: "fp32" (the default: IEEE fp32 GEMMs, the CPU's numbers to ~1e-6), "tf32" or "bf16".
  std::string precision = "fp32";
};

// Prints the result (one JSON object with --json: at least perplexity, tokens, windows, seconds) on stdout
// and returns 0; on failure prints one line `llmc: error: ...` on stderr and returns 1.
int RunEvalCommand(const EvalArgs& args);

}  // namespace llmc::cli
