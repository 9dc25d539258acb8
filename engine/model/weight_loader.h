// Reads model tensors as fp32 for the CPU runtime: dense BF16/F16/F32 tensors converted, and Linear weights
// of compressed-tensors checkpoints dequantized per module (every format llmc writes: pack-quantized,
// int-quantized, float-quantized incl. block scales, nvfp4-pack-quantized, mxfp4-pack-quantized,
// mxfp8-quantized).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/format/quant_config.h"
#include "engine/io/model_dir.h"
#include "engine/quant/activation_quantizer.h"

namespace llmc {

// Thread-safe after Create (all methods are const and only read the memory-mapped checkpoint).
class WeightLoader {
 public:
  // `dir` must outlive the loader. Parses config.json's `quantization_config` when present; fails with a
  // message naming config.json when it is malformed or uses something llmc cannot read (sparsity
  // compression).
  static absl::StatusOr<std::unique_ptr<WeightLoader>> Create(const ModelDir* dir);

  bool compressed() const { return quant_.has_value(); }

  // fp32 copy of the dense floating-point tensor `name` (BF16, F16 or F32) whose shape must equal `shape`.
  // Errors name the tensor: missing, other dtype, other shape. Drops the tensor's pages from the resident set
  // afterwards.
  absl::StatusOr<std::vector<float>> LoadDense(const std::string& name,
                                               const std::vector<int64_t>& shape) const;

  // Whether the checkpoint holds a tensor called `name`.
  bool Has(const std::string& name) const { return dir_->Find(name) != nullptr; }

  // The weight of Linear module `module` as fp32 [out_features, in_features]: `<module>.weight` when the
  // module is stored dense, else dequantized from the tensors of its config group's format (the group is
  // QuantConfig::Match(module, "Linear")). Errors name the module and the tensor at fault.
  absl::StatusOr<std::vector<float>> LoadLinearWeight(const std::string& module, int64_t out_features,
                                                      int64_t in_features) const;

  // The storage of `module`: "dense" or the compressed-tensors format its weight is read from.
  std::string StorageOf(const std::string& module) const;

  // Activation quantization (docs/formats.md, "Activations at evaluation"). OK when the checkpoint quantizes no
  // activations or only ones llmc evaluates; otherwise the first refused scheme's error, naming config.json and
  // the config group (or kv_cache_scheme).
  const absl::Status& activation_support() const { return activation_support_; }
  // Whether a config group quantizes the input or output activations of some Linear, or kv_cache_scheme is set.
  bool quantizes_activations() const { return quantizes_activations_; }

  // The fake quantization of Linear `module`'s activations `which` ("input" or "output") of `cols` values per
  // token, as its config group says (targets/ignore resolved like the weights), with the static
  // `<module>.<which>_scale` or `<module>.<which>_global_scale` read from the checkpoint; null when the module's
  // group has no such activations. Errors name the module, the config group and the tensor at fault.
  absl::StatusOr<std::shared_ptr<const ActivationQuantizer>> LinearActivationQuant(const std::string& module,
                                                                                   const std::string& which,
                                                                                   int64_t cols) const;

  // The kv-cache fake quantization of attention module `attn` (e.g. "model.layers.3.self_attn") for
  // `which` = "k" or "v", over rows of num_kv_heads * head_dim values, from kv_cache_scheme and the static
  // `<attn>.k_scale` / `<attn>.v_scale` (one value, or one per kv head); null when there is no kv_cache_scheme.
  absl::StatusOr<std::shared_ptr<const ActivationQuantizer>> KvCacheQuant(const std::string& attn,
                                                                          const std::string& which,
                                                                          int64_t num_kv_heads,
                                                                          int64_t head_dim) const;

  // Rows `ids` of the dense 2-D tensor `name` [rows, cols] as fp32 into out [ids.size(), cols] (embedding
  // lookup). Fails naming the tensor if it is not [rows, cols] of a float dtype, or naming the id out of
  // range.
  absl::Status GatherRows(const std::string& name, int64_t rows, int64_t cols, absl::Span<const int32_t> ids,
                          float* out) const;

  // The stored bytes of the dense 2-D tensor `name` [rows, cols] (BF16, F16 or F32, row-major, in the mapped
  // file) for code that gathers rows itself; *dtype gets its dtype. GatherRows's checks and errors.
  absl::StatusOr<const uint8_t*> DenseRows(const std::string& name, int64_t rows, int64_t cols, DType* dtype) const;
  // OK when every id lies in [0, rows); else GatherRows's error naming the first id outside.
  absl::Status CheckRowIds(int64_t rows, absl::Span<const int32_t> ids) const;

 private:
  explicit WeightLoader(const ModelDir* dir) : dir_(dir) {}
  absl::StatusOr<const ModelTensor*> Get(const std::string& name) const;
  // The config group's weight args + format for `module`, or nullopt when the module is read dense.
  const ConfigGroup* GroupOf(const std::string& module) const;

  const ModelDir* dir_;
  std::optional<QuantConfig> quant_;
  DType model_dtype_ = DType::kBF16;  // scale dtype fallback for int/fp8 formats; activation arithmetic
  absl::Status activation_support_;
  bool quantizes_activations_ = false;
  // The values of static scale tensor `name` (BF16/F16/F32, any shape) as fp32; errors name `owner`.
  absl::StatusOr<std::vector<float>> LoadScales(const std::string& name, const std::string& owner) const;
};

// Converts n elements of a BF16, F16 or F32 buffer to fp32. Returns false for other dtypes.
bool ConvertToFloat(const void* data, DType dtype, int64_t n, float* out);

}  // namespace llmc
