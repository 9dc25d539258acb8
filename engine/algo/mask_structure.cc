#include "engine/algo/mask_structure.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace llmc {

absl::StatusOr<MaskStructure> ParseMaskStructure(absl::string_view where, absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  MaskStructure s;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &s.n) || !absl::SimpleAtoi(parts[1], &s.m) || s.n < 0 ||
      s.m < 0 || (s.n > 0 && (s.m == 0 || s.n > s.m)))
    return absl::InvalidArgumentError(absl::StrCat(where, ": mask_structure '", text,
                                                   "' is not of the form N:M with 0 < N <= M (e.g. 2:4), or 0:0 "
                                                   "for unstructured sparsity"));
  if (s.n == 0) s.m = 0;
  return s;
}

}  // namespace llmc
