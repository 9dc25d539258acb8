// The dependency rules of docs/architecture.md, checked on every source file: each folder includes only the
// folders its row allows (unit tests beside the code may also use the test-support library).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

namespace llmc {
namespace {

namespace fs = std::filesystem;

struct Rule {
  std::string folder;                 // a source folder, e.g. "server/"
  std::vector<std::string> allowed;   // include prefixes it may use (its own folder is always allowed)
};

// Longest folder first: engine/format/ is stricter than engine/.
const std::vector<Rule>& Rules() {
  static const std::vector<Rule> rules = {
      {"engine/tensor/", {"common/", "engine/tensor/"}},
      {"engine/format/", {"common/", "engine/tensor/", "engine/format/"}},
      {"common/", {}},
      {"engine/", {"common/", "engine/"}},
      {"storage/", {"common/"}},
      {"proto/", {"common/", "engine/format/", "engine/tensor/", "llmc/v1/"}},
      {"server/", {"common/", "proto/", "storage/", "engine/format/", "engine/tensor/", "llmc/v1/"}},
      {"worker/", {"common/", "proto/", "storage/", "engine/", "llmc/v1/"}},
      {"client/", {"common/", "proto/", "worker/job_io.h", "engine/", "storage/", "llmc/v1/"}},
  };
  return rules;
}

// Project folders: a quoted include starting with one of these is ours and subject to the rules.
const std::vector<std::string> kProjectFolders = {"common/", "engine/", "storage/", "proto/", "server/",
                                                  "worker/", "client/", "tests/", "bench/", "llmc/v1/"};

bool StartsWith(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

const Rule* RuleFor(const std::string& rel) {
  const Rule* best = nullptr;
  for (const auto& r : Rules())
    if (StartsWith(rel, r.folder) && (!best || r.folder.size() > best->folder.size())) best = &r;
  return best;
}

std::vector<std::string> QuotedIncludes(const fs::path& file) {
  static const std::regex inc(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, inc)) out.push_back(m[1]);
  return out;
}

TEST(LayoutTest, EveryFolderIncludesOnlyWhatItsRuleAllows) {
  const fs::path root(LLMC_SOURCE_DIR);
  std::vector<std::string> violations;
  int checked = 0;
  for (const auto& folder : {"common", "engine", "storage", "proto", "server", "worker", "client"}) {
    for (const auto& e : fs::recursive_directory_iterator(root / folder)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".cc" && ext != ".h" && ext != ".cu" && ext != ".cuh") continue;
      const std::string rel = e.path().lexically_relative(root).generic_string();
      const Rule* rule = RuleFor(rel);
      ASSERT_NE(rule, nullptr) << rel;
      const bool is_test = rel.find("_test.cc") != std::string::npos || rel.find("test_util") != std::string::npos;
      ++checked;
      for (const auto& inc : QuotedIncludes(e.path())) {
        bool ours = false;
        for (const auto& p : kProjectFolders) ours = ours || StartsWith(inc, p);
        if (!ours) continue;  // third-party ("absl/...") or a file beside it
        bool ok = StartsWith(inc, rule->folder);
        for (const auto& a : rule->allowed) ok = ok || StartsWith(inc, a);
        if (is_test && StartsWith(inc, "tests/support/")) ok = true;
        if (!ok) violations.push_back(rel + " includes \"" + inc + "\"");
      }
    }
  }
  EXPECT_GT(checked, 200);
  EXPECT_THAT(violations, ::testing::IsEmpty());
}

TEST(LayoutTest, ServerAndWorkerNeverIncludeEachOther) {
  const fs::path root(LLMC_SOURCE_DIR);
  for (const auto& [folder, other] : std::map<std::string, std::string>{{"server", "worker/"}, {"worker", "server/"}})
    for (const auto& e : fs::recursive_directory_iterator(root / folder))
      for (const auto& inc : QuotedIncludes(e.path()))
        EXPECT_FALSE(StartsWith(inc, other)) << e.path() << " includes " << inc;
}

}  // namespace
}  // namespace llmc
