// A decoder block as a finished run stored it, for resuming a job: blocks before the resume point are not solved
// again, only propagated with the values the checkpoint holds for them, which gives exactly the activations the
// interrupted run propagated.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/quant_config.h"
#include "engine/model/causal_lm.h"
#include "engine/model/decoder_block.h"

namespace llmc {

// Reads back a staged output tensor by name (SolverIo::read_back).
using ReadBackFn = std::function<absl::StatusOr<std::vector<uint8_t>>(const std::string& tensor_name)>;

// Block `layer` of `lm` with the values stored for it: norms and biases as emitted, unquantized Linear weights as
// stored, quantized ones (per `config`) dequantized from their stored tensors (with weight_g_idx when present) and
// rounded to their dtype, as the solver propagated them. `model_dtype` stands in for tensors the model directory
// does not list. INTERNAL when a stored tensor's size does not match; read_back's errors as they come.
absl::StatusOr<std::unique_ptr<DecoderBlock>> LoadStoredBlock(const CausalLm& lm, const QuantConfig& config,
                                                              DType model_dtype, int layer,
                                                              const ReadBackFn& read_back);

}  // namespace llmc
