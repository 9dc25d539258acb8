// `llmc`: the command-line entry point. Parses flags and calls the library.
#include <CLI/CLI.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "client/cli/compress_command.h"
#include "client/cli/eval_command.h"
#include "client/cli/service_commands.h"
#include "client/cli/tokenize_command.h"
#include "engine/model/architecture.h"

int main(int argc, char** argv) {
  // Logs go to stderr: stdout carries the results (--json) that scripts parse.
  spdlog::set_default_logger(spdlog::stderr_color_mt("llmc"));
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug: phase timings of the GPU solves (docs/cli.md)
  CLI::App app{"llmc: compress Hugging Face LLMs into compressed-tensors checkpoints"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "llmc 0.1.0");

  const std::string architectures = llmc::SupportedArchitectureNames();
  llmc::cli::CompressArgs c;
  auto* compress = app.add_subcommand("compress", "Quantize MODEL into a compressed-tensors checkpoint at OUTPUT");
  compress->add_option("MODEL", c.model, "Hugging Face model directory (safetensors)")->required();
  compress->add_option("OUTPUT", c.output, "output directory (created; see --overwrite)")->required();
  compress->add_option("--scheme", c.scheme, "preset scheme, e.g. W4A16, FP8_DYNAMIC, NVFP4A16 (see `llmc schemes`)");
  compress->add_option("--recipe", c.recipe,
                       "llm-compressor recipe YAML (QuantizationModifier, GPTQModifier, AWQModifier, SmoothQuantModifier, "
                       "SparseGPTModifier, WandaPruningModifier; see `llmc algorithms`)");
  compress->add_option("--algorithm", c.algorithm,
                       "with --scheme: rtn (data-free), gptq, awq, smoothquant+gptq, sparsegpt or wanda (2:4 + RTN); "
                       "calibrated ones need --dataset and one of the architectures " + architectures)
      ->capture_default_str();
  auto* ign = compress->add_option("--ignore", c.ignore,
                                   "module to leave unquantized: exact name, re:REGEX or class name (repeatable; default lm_head)")
                 ->allow_extra_args(false);
  compress->add_option("--observer", c.observer, "weight observer: minmax (default), mse or imatrix_mse (calibrated; needs --dataset)");
  compress->add_option("--moe-calibrate-all-experts", c.moe_calibrate_all_experts,
                       "mixture-of-experts models, calibrated algorithms: true (default) runs every calibration token "
                       "through every expert for its statistics; false: each expert sees its routed tokens only");
  compress->add_option("--max-shard-size", c.max_shard_size, "largest output shard, e.g. 5GB, 500MB")->capture_default_str();
  compress->add_option("--threads", c.threads, "worker threads (default: one per core)");
  compress->add_option("--device", c.device, "cpu or cuda (data-free compression runs on the CPU)")->capture_default_str();
  compress->add_option("--calib-activations", c.calib_activations,
                       "--device cuda: calibration activations between blocks: fp32 (default), bf16 (half the GPU "
                       "memory) or host (bf16 in pinned host memory, streamed through the GPU)");
  compress->add_option("--precision", c.precision,
                       "--device cuda: calibration arithmetic: fp32 (exact IEEE GEMMs), tf32 (default: tensor cores, "
                       "fp32 activations) or bf16 (bf16 GEMM inputs and Hessian products, fp32 accumulation); the cpu "
                       "computes in fp32");
  compress->add_option("--dataset", c.dataset, "calibration data: plain text or JSONL (calibrated algorithms)");
  auto* ns = compress->add_option("--num-samples", c.num_samples, "calibration samples (default 128)");
  auto* sl = compress->add_option("--seq-len", c.seq_len, "calibration sequence length in tokens (default 512)");
  auto* sd = compress->add_option("--seed", c.seed, "calibration sampling seed")->capture_default_str();
  compress->add_option("--eval-text", c.eval_text, "also report perplexity before and after on this text file");
  compress->add_option("--eval-max-windows", c.eval_max_windows, "windows of 512 tokens for --eval-text")->capture_default_str();
  compress->add_flag("--overwrite", c.overwrite, "replace OUTPUT if it exists");
  compress->add_flag("--json", c.json, "print the summary as one JSON object");
  compress->add_flag("--no-progress", c.no_progress, "no progress bar");
  compress->add_option("--ranks", c.ranks,
                       "share the calibration over N processes on this host (one GPU each with --device cuda)")
      ->capture_default_str();
  compress->add_option("--comm", c.comm, "with --ranks: gloo (CPU, TCP) or nccl (GPUs); default nccl for cuda, else gloo");
  compress->add_option("--comm-timeout", c.comm_timeout_s,
                       "with --ranks: seconds a rank waits for the others (forming, and each collective)")
      ->capture_default_str();
  compress->add_option("--rank", c.rank, "(internal) this process's rank")->group("");
  compress->add_option("--rendezvous", c.rendezvous, "(internal) the ranks' rendezvous directory")->group("");

  llmc::cli::InspectArgs i;
  auto* inspect = app.add_subcommand("inspect", "Describe a checkpoint: schemes, per-module formats, sizes");
  inspect->add_option("CHECKPOINT", i.checkpoint, "model or compressed checkpoint directory")->required();
  inspect->add_flag("--json", i.json, "print one JSON object");
  inspect->add_flag("-v,--verbose", i.verbose, "list every module");

  llmc::cli::EvalArgs e;
  auto* eval = app.add_subcommand(
      "eval", "Perplexity of MODEL (original or compressed) on a text file; architectures: " + architectures);
  eval->add_option("MODEL", e.model, "model or compressed-tensors checkpoint directory")->required();
  eval->add_option("--text", e.text, "UTF-8 text file, tokenized whole without special tokens")->required();
  eval->add_option("--seq-len", e.seq_len, "tokens per window")->capture_default_str();
  eval->add_option("--max-windows", e.max_windows, "use the first N windows")->capture_default_str();
  eval->add_option("--device", e.device, "cpu or cuda")->capture_default_str();
  eval->add_option("--threads", e.threads, "CPU threads (default: one per core)");
  eval->add_option("--precision", e.precision,
                   "--device cuda: GEMM arithmetic: fp32 (IEEE, the CPU's numbers), tf32 or bf16")
      ->capture_default_str();
  eval->add_flag("--json", e.json, "print one JSON object");
  eval->add_option("--activations", e.activations,
                   "for checkpoints that quantize activations: both (perplexity as the checkpoint says, and "
                   "perplexity_weights_only with fp32 activations), quantized, or weights-only")
      ->capture_default_str();

  llmc::cli::TokenizeArgs t;
  auto* tokenize = app.add_subcommand("tokenize", "Token ids of a text, exactly as Hugging Face tokenizers");
  tokenize->add_option("MODEL", t.model, "model directory with tokenizer.json (or the file itself)")->required();
  auto* ttext = tokenize->add_option("--text", t.text, "text to tokenize");
  auto* tfile = tokenize->add_option("--file", t.file, "file whose whole content is tokenized");
  ttext->excludes(tfile);
  tokenize->add_flag("--json", t.json, "print {\"ids\": [...]}");
  tokenize->add_flag("--no-special", t.no_special, "leave out the special tokens (e.g. BOS) added by default");

  bool schemes_json = false;
  auto* schemes = app.add_subcommand("schemes", "List the preset schemes");
  schemes->add_flag("--json", schemes_json, "print JSON");
  bool algorithms_json = false;
  auto* algorithms = app.add_subcommand("algorithms", "List the compression algorithms and their recipe arguments");
  algorithms->add_flag("--json", algorithms_json, "print JSON");

  auto service_commands = llmc::cli::AddServiceCommands(app);  // submit, get, list, watch, cancel, serve

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (compress->parsed()) {
    c.ignore_given = ign->count() > 0;
    c.calibration_flags_given = ns->count() + sl->count() + sd->count() > 0;
    c.argv.assign(argv, argv + argc);
    return llmc::cli::RunCompressCommand(c);
  }
  if (inspect->parsed()) return llmc::cli::RunInspectCommand(i);
  if (eval->parsed()) return llmc::cli::RunEvalCommand(e);
  if (tokenize->parsed()) return llmc::cli::RunTokenizeCommand(t);
  if (schemes->parsed()) return llmc::cli::RunSchemesCommand(schemes_json);
  if (algorithms->parsed()) return llmc::cli::RunAlgorithmsCommand(algorithms_json);
  if (int rc = 1; llmc::cli::RunServiceCommand(*service_commands, &rc)) return rc;
  return 1;
}
