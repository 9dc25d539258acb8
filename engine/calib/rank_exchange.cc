#include "engine/calib/rank_exchange.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmc {

using json = nlohmann::json;

absl::Status ReduceCalibStats(Communicator* comm, BlockBackend* backend, CalibHooks* hooks, bool gather_captures) {
  if (comm->size() == 1) return absl::OkStatus();
  for (auto& [name, s] : hooks->stats()) {
    // Counts (exact in doubles up to 2^53) and the maxima first: every rank learns of a non-finite value together.
    double counts[3] = {static_cast<double>(s.tokens), 0, 0};
    if (s.hessian) counts[1] = static_cast<double>(s.hessian->num_samples()), counts[2] = s.hessian->num_tokens();
    LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(counts, 3)));
    s.tokens = static_cast<int64_t>(counts[0]);
    if (s.hessian) {
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(s.hessian->raw_sum()));
      s.hessian->set_counts(static_cast<int64_t>(counts[2]), static_cast<int64_t>(counts[1]));
    }
    float mm[3] = {-s.min, s.max, s.nonfinite ? 1.0f : 0.0f};
    LLMC_RETURN_IF_ERROR(comm->AllReduceMax(absl::MakeSpan(mm, 3)));
    s.min = -mm[0];
    s.max = mm[1];
    s.amax = std::max(mm[0], mm[1]);
    s.nonfinite = mm[2] != 0.0f;
    if (s.device_hessian) LLMC_RETURN_IF_ERROR(backend->ReduceDeviceStats(&s, comm));
    if (s.row_norm) {
      double rc[2] = {static_cast<double>(s.row_norm->num_tokens()), static_cast<double>(s.row_norm->num_samples())};
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(rc, 2)));
      LLMC_RETURN_IF_ERROR(comm->AllReduceSum(s.row_norm->raw_sum_squares()));
      s.row_norm->set_counts(static_cast<int64_t>(rc[0]), static_cast<int64_t>(rc[1]));
    }
    if (!s.channel_max.empty()) LLMC_RETURN_IF_ERROR(comm->AllReduceMax(absl::MakeSpan(s.channel_max)));
    if (!s.channel_abs_sum.empty()) LLMC_RETURN_IF_ERROR(comm->AllReduceSum(absl::MakeSpan(s.channel_abs_sum)));
    if (gather_captures) {
      // Whole sequences of the first length captured, in rank order.
      std::vector<float> all;
      int64_t all_tokens = 0, seq_len = 0;
      for (int r = 0; r < comm->size(); ++r) {
        std::string buf;
        if (r == comm->rank()) {
          buf.resize(2 * sizeof(int64_t) + s.captured.size() * sizeof(float));
          std::memcpy(buf.data(), &s.captured_seq_len, sizeof(int64_t));
          std::memcpy(buf.data() + sizeof(int64_t), &s.captured_tokens, sizeof(int64_t));
          if (!s.captured.empty())
            std::memcpy(buf.data() + 2 * sizeof(int64_t), s.captured.data(), s.captured.size() * sizeof(float));
        }
        LLMC_RETURN_IF_ERROR(BroadcastString(comm, &buf, r));
        int64_t len = 0, tokens = 0;
        if (buf.size() < 2 * sizeof(int64_t)) return absl::DataLossError(absl::StrCat(name, ": short capture from rank ", r));
        std::memcpy(&len, buf.data(), sizeof(int64_t));
        std::memcpy(&tokens, buf.data() + sizeof(int64_t), sizeof(int64_t));
        const size_t floats = (buf.size() - 2 * sizeof(int64_t)) / sizeof(float);
        if (tokens <= 0 || len <= 0 || floats % static_cast<size_t>(tokens) != 0 || tokens % len != 0)
          continue;  // nothing captured there
        if (seq_len == 0) seq_len = len;
        if (len != seq_len) continue;
        const float* src = reinterpret_cast<const float*>(buf.data() + 2 * sizeof(int64_t));
        all.insert(all.end(), src, src + floats);
        all_tokens += tokens;
      }
      s.captured = std::move(all);
      s.captured_tokens = all_tokens;
      s.captured_seq_len = seq_len;
    }
  }
  float kv[2] = {hooks->k_amax(), hooks->v_amax()};
  LLMC_RETURN_IF_ERROR(comm->AllReduceMax(absl::MakeSpan(kv, 2)));
  hooks->set_kv_amax(kv[0], kv[1]);
  return absl::OkStatus();
}

absl::Status SyncBlock(Communicator* comm, DecoderBlock* block, int root) {
  if (comm->size() == 1) return absl::OkStatus();
  for (LinearWeight* lw : block->linears()) {
    LLMC_RETURN_IF_ERROR(comm->Broadcast(absl::MakeSpan(lw->weight), root));
    LLMC_RETURN_IF_ERROR(comm->Broadcast(absl::MakeSpan(lw->bias), root));
  }
  for (std::vector<float>* v : {&block->input_norm, &block->post_attention_norm, &block->q_norm, &block->k_norm,
                                 &block->pre_feedforward_norm, &block->post_feedforward_norm})
    LLMC_RETURN_IF_ERROR(comm->Broadcast(absl::MakeSpan(*v), root));
  return absl::OkStatus();
}

std::vector<int> AssignOwners(const std::vector<double>& costs, int ranks) {
  std::vector<int> owner(costs.size(), 0);
  if (ranks <= 1) return owner;
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(ranks, 0.0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[r] += costs[i];
  }
  return owner;
}

double SolveCost(int64_t rows, int64_t cols, bool second_order) {
  const double r = static_cast<double>(rows), c = static_cast<double>(cols);
  return second_order ? r * c * c + c * c * c : r * c;
}

namespace {

// A little-endian byte writer and reader for a module result.
void PutU64(std::string* out, uint64_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof(v)); }
void PutBytes(std::string* out, const void* p, size_t n) {
  PutU64(out, n);
  out->append(static_cast<const char*>(p), n);
}

class Reader {
 public:
  explicit Reader(const std::string& s) : s_(s) {}
  bool U64(uint64_t* v) {
    if (s_.size() - pos_ < sizeof(*v)) return false;
    std::memcpy(v, s_.data() + pos_, sizeof(*v));
    pos_ += sizeof(*v);
    return true;
  }
  bool Bytes(std::string_view* v) {
    uint64_t n = 0;
    if (!U64(&n) || n > s_.size() - pos_) return false;
    *v = std::string_view(s_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == s_.size(); }

 private:
  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

absl::Status BroadcastModuleResult(Communicator* comm, ModuleResult* r, int root) {
  if (comm->size() == 1) return absl::OkStatus();
  std::string buf;
  if (comm->rank() == root) {
    PutBytes(&buf, r->weight.data(), r->weight.size() * sizeof(float));
    PutBytes(&buf, r->mask.data(), r->mask.size());
    const std::string info = r->info.dump();
    PutBytes(&buf, info.data(), info.size());
    PutU64(&buf, r->warnings.size());
    for (const auto& w : r->warnings) PutBytes(&buf, w.data(), w.size());
    PutU64(&buf, r->tensors.size());
    for (const auto& [name, bytes] : r->tensors) {
      PutBytes(&buf, name.data(), name.size());
      PutBytes(&buf, bytes.data(), bytes.size());
    }
  }
  LLMC_RETURN_IF_ERROR(BroadcastString(comm, &buf, root));
  if (comm->rank() == root) return absl::OkStatus();
  const auto bad = [&] { return absl::DataLossError(absl::StrCat("a module result from rank ", root, " does not parse")); };
  Reader in(buf);
  std::string_view v;
  uint64_t n = 0;
  if (!in.Bytes(&v) || v.size() % sizeof(float) != 0) return bad();
  r->weight.resize(v.size() / sizeof(float));
  if (!v.empty()) std::memcpy(r->weight.data(), v.data(), v.size());
  if (!in.Bytes(&v)) return bad();
  r->mask.assign(v.begin(), v.end());
  if (!in.Bytes(&v)) return bad();
  r->info = json::parse(v, nullptr, /*allow_exceptions=*/false);
  if (r->info.is_discarded()) return bad();
  if (!in.U64(&n)) return bad();
  r->warnings.clear();
  for (uint64_t i = 0; i < n; ++i) {
    if (!in.Bytes(&v)) return bad();
    r->warnings.emplace_back(v);
  }
  if (!in.U64(&n)) return bad();
  r->tensors.clear();
  for (uint64_t i = 0; i < n; ++i) {
    std::string_view name, bytes;
    if (!in.Bytes(&name) || !in.Bytes(&bytes)) return bad();
    r->tensors.emplace_back(std::string(name), std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
  if (!in.done()) return bad();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<json>> AllGatherJson(Communicator* comm, const json& mine) {
  std::vector<json> all;
  for (int r = 0; r < comm->size(); ++r) {
    std::string buf = r == comm->rank() ? mine.dump() : std::string();
    LLMC_RETURN_IF_ERROR(BroadcastString(comm, &buf, r));
    json j = json::parse(buf, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return absl::DataLossError(absl::StrCat("a report from rank ", r, " does not parse"));
    all.push_back(std::move(j));
  }
  return all;
}

absl::Status AgreeOnStatus(Communicator* comm, const absl::Status& mine) {
  if (comm->size() == 1) return mine;
  json j = {{"code", static_cast<int>(mine.code())}, {"message", std::string(mine.message()).substr(0, 4096)}};
  LLMC_ASSIGN_OR_RETURN(std::vector<json> all, AllGatherJson(comm, j));
  for (size_t r = 0; r < all.size(); ++r) {
    const int code = all[r].value("code", 2);
    if (code == 0) continue;
    if (static_cast<int>(r) == comm->rank()) return mine;
    const bool known = code > 0 && code <= 16;
    return absl::Status(known ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown,
                        absl::StrCat("rank ", r, ": ", all[r].value("message", std::string())));
  }
  return absl::OkStatus();
}

}  // namespace llmc
