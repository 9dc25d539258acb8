#include "client/cli/tokenize_command.h"

#include "client/cli/cli_errors.h"
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/model_dir.h"
#include "engine/tokenizer/tokenizer.h"

namespace llmc::cli {

namespace {


absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(model, ec)) return Tokenizer::FromFile(model);
  if (!std::filesystem::exists(model, ec))
    return absl::NotFoundError(absl::StrCat(model,
                                            ": no such directory; MODEL must be a Hugging Face model "
                                            "directory or a tokenizer.json"));
  return Tokenizer::FromModelDir(model);
}

}  // namespace

int RunTokenizeCommand(const TokenizeArgs& a) {
  if (a.text.empty() == a.file.empty())
    return Fail(absl::InvalidArgumentError("give exactly one of --text S or --file F"));
  std::string text = a.text;
  if (!a.file.empty()) {
    auto content = ReadTextFile(a.file, uint64_t{1} << 32);
    if (!content.ok()) return Fail(content.status());
    text = std::move(*content);
  }
  auto tokenizer = LoadTokenizer(a.model);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  auto ids = (*tokenizer)->Encode(text, /*add_special_tokens=*/!a.no_special);
  if (!ids.ok()) {
    const std::string what = a.file.empty() ? std::string("--text") : a.file;
    return Fail(absl::Status(ids.status().code(), absl::StrCat(what, ": ", ids.status().message())));
  }
  const std::string out = a.json ? absl::StrCat("{\"ids\":[", absl::StrJoin(*ids, ","), "]}\n")
                                 : absl::StrCat(absl::StrJoin(*ids, " "), "\n");
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0)
    return Fail(absl::UnavailableError("writing the ids to stdout failed"));
  return 0;
}

}  // namespace llmc::cli
