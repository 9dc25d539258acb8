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
  bool overwrite = false, json = false, no_progress = false;
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
