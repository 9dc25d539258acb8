// Post-processors of a tokenizer.json ("post_processor" section): they add the special tokens around an
// encoded single sequence when add_special_tokens is true.
//
// Supported types: TemplateProcessing (the "single" template), RobertaProcessing, BertProcessing, ByteLevel
// (adds nothing; it only trims offsets, which llmc does not report), Sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace llmc::tok {

// Immutable after parsing; Process may be called from many threads at once.
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Rewrites `ids` (one encoded sequence) in place when `add_special_tokens`; leaves it alone otherwise.
  virtual void Process(std::vector<int32_t>* ids, bool add_special_tokens) const = 0;
  // The ids this processor puts before / after the sequence, for bos_id / eos_id.
  virtual std::vector<int32_t> Prefix() const = 0;
  virtual std::vector<int32_t> Suffix() const = 0;
};

// Parses the "post_processor" JSON object (not null). `where` names the file and JSON path for errors.
absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const nlohmann::json& j,
                                                                  const std::string& where);

}  // namespace llmc::tok
