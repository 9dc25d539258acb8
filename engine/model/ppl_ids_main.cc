// llmc_ppl_ids MODEL IDS.bin [--seq-len N] [--max-windows N] [--threads N]
// Perplexity (the `llmc eval` protocol) of a file of little-endian int32 token ids, printed as one JSON
// object with the throughput. For measurements without a tokenizer; `llmc eval` is the user-facing command.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/util.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL IDS.bin [--seq-len N] [--max-windows N] [--threads N]\n", argv[0]);
    return 2;
  }
  llmc::PerplexityOptions o;
  llmc::CausalLmOptions lo;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    long v = std::strtol(argv[i + 1], nullptr, 10);
    if (flag == "--seq-len")
      o.seq_len = v;
    else if (flag == "--max-windows")
      o.max_windows = v;
    else if (flag == "--threads")
      lo.threads = static_cast<int>(v);
    else {
      std::fprintf(stderr, "llmc_ppl_ids: error: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "llmc_ppl_ids: error: %s: cannot open\n", argv[2]);
    return 1;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  double t0 = llmc::NowSeconds();
  auto lm = llmc::CausalLm::Open(argv[1], lo);
  if (!lm.ok()) {
    std::fprintf(stderr, "llmc_ppl_ids: error: %s\n", std::string(lm.status().message()).c_str());
    return 1;
  }
  double t_open = llmc::NowSeconds() - t0;
  auto r = llmc::ComputePerplexity(**lm, ids, o);
  if (!r.ok()) {
    std::fprintf(stderr, "llmc_ppl_ids: error: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  nlohmann::json j = {{"perplexity", r->perplexity},
                      {"mean_nll", r->mean_nll},
                      {"windows", r->windows},
                      {"tokens", r->tokens},
                      {"seconds", r->seconds},
                      {"open_seconds", t_open},
                      {"tokens_per_second", r->tokens / r->seconds},
                      {"threads", (*lm)->context()->threads()},
                      {"peak_rss_bytes", llmc::PeakRssBytes()}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
