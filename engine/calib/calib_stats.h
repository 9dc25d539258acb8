// What one calibration pass of a block collects (Wants) and what it collected for each input group (GroupStats):
// the statistics every algorithm of the pipeline reads. Input groups are the tensors the block's Linears read
// (InputGroup in engine/algo/block_view.h): q/k/v share one, gate/up another.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/algo/hessian.h"

namespace llmc {

// What calibration collects in one pass.
struct Wants {
  std::set<std::string> hessian;      // input groups
  std::set<std::string> row_norm;     // input groups (Wanda)
  std::set<std::string> channel_max;  // input groups (SmoothQuant)
  std::set<std::string> range;        // input groups (static activation scales)
  std::set<std::string> channel_mean; // input groups (AWQ: mean |x| per channel)
  std::set<std::string> capture;      // input groups whose inputs are kept (AWQ's search), up to capture_tokens
  int64_t capture_tokens = 0;
  bool kv = false;                    // k/v output ranges (kv cache scales)
  // Backends that keep Hessians in their own memory (the GPU) do so for GPTQ; false keeps them on the host (the
  // pruning solvers).
  bool device_hessian = true;
  bool empty() const {
    return hessian.empty() && row_norm.empty() && channel_max.empty() && range.empty() && channel_mean.empty() &&
           capture.empty() && !kv;
  }
};

// A Hessian sum a backend keeps in its own memory (the CUDA backend's device X^T X); only that backend reads it.
class DeviceHessian {
 public:
  virtual ~DeviceHessian() = default;
};

// The statistics of one input group.
struct GroupStats {
  std::unique_ptr<HessianAccumulator> hessian;
  std::unique_ptr<RowNormAccumulator> row_norm;
  std::vector<float> channel_max;
  std::vector<double> channel_abs_sum;  // AWQ
  std::vector<float> captured;          // [captured_tokens, cols] inputs kept for AWQ's search
  int64_t captured_tokens = 0, captured_seq_len = 0;
  std::unique_ptr<DeviceHessian> device_hessian;  // instead of `hessian` when the backend keeps it
  float amax = 0;  // max |x| over every element (static scales)
  float min = 0, max = 0;
  int64_t tokens = 0;
  bool nonfinite = false;
};

}  // namespace llmc
