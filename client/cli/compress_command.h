// The `llmc` command-line tool's subcommands. Each Run* returns the process exit status.
#pragma once

#include <string>
#include <vector>

namespace llmc::cli {

struct CompressArgs {
  std::string model, output, scheme, recipe, algorithm = "rtn", max_shard_size = "5GB", observer, device = "cpu";
  std::string dataset, eval_text;
  int64_t eval_max_windows = 200;
  int num_samples = 0, seq_len = 0, seed = 42;
  bool calibration_flags_given = false;
  std::vector<std::string> ignore;
  bool ignore_given = false;
  int threads = 0;
  std::string moe_calibrate_all_experts;  // "", "true" or "false"
  bool overwrite = false, json = false, no_progress = false;
  // Several ranks on this host (one process each; docs/distributed.md).
  int ranks = 1;
  std::string calib_activations;  // --device cuda: fp32, bf16 or host ("": fp32)
  std::string precision;          // --device cuda: fp32, tf32 or bf16 ("": tf32)
  std::string comm;           // gloo or nccl ("": nccl with --device cuda, else gloo)
  int comm_timeout_s = 300;   // forming the ranks and each collective
  // Set on the processes of ranks > 0, which the first process starts with its own arguments plus these.
  int rank = 0;
  std::string rendezvous;
  std::vector<std::string> argv;  // this process's command line
};
int RunCompressCommand(const CompressArgs& args);

struct InspectArgs {
  std::string checkpoint;
  bool json = false, verbose = false;
};
int RunInspectCommand(const InspectArgs& args);

int RunSchemesCommand(bool json);
int RunAlgorithmsCommand(bool json);

}  // namespace llmc::cli
