#include "engine/tokenizer/bpe_model.h"

#include <array>
#include <queue>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/unicode.h"

namespace llmc::tok {

// Word -> ids, sharded so that concurrent Encode calls rarely wait on each other. Bounded: once a shard is
// full, new words are computed but not stored (as HF's cache does).
class BpeCache {
 public:
  static constexpr size_t kShards = 16;
  static constexpr size_t kCapacityPerShard = 16384;
  // Words this long or longer are not cached (HF's MAX_LENGTH).
  static constexpr size_t kMaxWordBytes = 256;

  bool Get(absl::string_view word, std::vector<int32_t>* ids) const {
    const Shard& s = shards_[ShardOf(word)];
    absl::ReaderMutexLock lock(&s.mu);
    auto it = s.map.find(word);
    if (it == s.map.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return true;
  }

  void Put(absl::string_view word, std::vector<int32_t> ids) {
    Shard& s = shards_[ShardOf(word)];
    absl::MutexLock lock(&s.mu);
    if (s.map.size() >= kCapacityPerShard) return;
    s.map.emplace(word, std::move(ids));
  }

 private:
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map ABSL_GUARDED_BY(mu);
  };
  static size_t ShardOf(absl::string_view word) { return absl::Hash<absl::string_view>()(word) % kShards; }

  std::array<Shard, kShards> shards_;
};

namespace {

uint64_t PairKey(int32_t a, int32_t b) {
  return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
}

// One merge candidate: the symbol at `pos` with its right neighbour, at `rank`, giving `new_id`.
struct MergeCandidate {
  int32_t pos;
  int32_t rank;
  int32_t new_id;
};
// Lowest rank first, then leftmost (HF's `impl Ord for Merge`).
struct MergeAfter {
  bool operator()(const MergeCandidate& a, const MergeCandidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

}  // namespace

BpeModel::BpeModel() : cache_(std::make_unique<BpeCache>()) {}
BpeModel::~BpeModel() = default;

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& j,
                                                             const std::string& where) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  // Vocabulary.
  auto vit = j.find("vocab");
  if (vit == j.end() || !vit->is_object()) return FieldError(where, "vocab", "is missing or not an object");
  m->vocab_.reserve(vit->size());
  int64_t max_id = -1;
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    if (!it.value().is_number_unsigned() || it.value().get<uint64_t>() > INT32_MAX)
      return FieldError(where, "vocab",
                        absl::StrCat("entry \"", it.key(), "\" has id ", it.value().dump(),
                                     "; ids must be integers in [0, 2^31)"));
    const auto id = static_cast<int32_t>(it.value().get<uint64_t>());
    m->vocab_.emplace(it.key(), id);
    max_id = std::max<int64_t>(max_id, id);
  }
  m->id_to_token_.resize(max_id + 1);
  m->id_present_.assign(max_id + 1, false);
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    const auto id = static_cast<int32_t>(it.value().get<uint64_t>());
    if (m->id_present_[id]) continue;  // two tokens share an id: keep the first for decoding
    m->id_to_token_[id] = it.key();
    m->id_present_[id] = true;
  }

  // Options.
  auto dropout = j.find("dropout");
  if (dropout != j.end() && !dropout->is_null() && !(dropout->is_number() && dropout->get<double>() == 0.0))
    return FieldError(
        where, "dropout",
        absl::StrCat("is ", dropout->dump(), ": BPE dropout makes tokenization random; set it to null"));
  LLMC_ASSIGN_OR_RETURN(m->unk_token_, GetOptionalString(j, "unk_token", where));
  LLMC_ASSIGN_OR_RETURN(auto prefix, GetOptionalString(j, "continuing_subword_prefix", where));
  LLMC_ASSIGN_OR_RETURN(auto suffix, GetOptionalString(j, "end_of_word_suffix", where));
  m->continuing_subword_prefix_ = prefix.value_or("");
  m->end_of_word_suffix_ = suffix.value_or("");
  LLMC_ASSIGN_OR_RETURN(m->fuse_unk_, GetBool(j, "fuse_unk", false, where));
  LLMC_ASSIGN_OR_RETURN(m->byte_fallback_, GetBool(j, "byte_fallback", false, where));
  LLMC_ASSIGN_OR_RETURN(m->ignore_merges_, GetBool(j, "ignore_merges", false, where));
  m->byte_fallback_ids_.assign(256, -1);
  if (m->byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      if (auto id = m->TokenToId(absl::StrFormat("<0x%02X>", b))) m->byte_fallback_ids_[b] = *id;
    }
  }

  // Merges: rank = position in the list; a pair listed twice keeps its last rank (as HF's HashMap collect
  // does).
  auto mit = j.find("merges");
  if (mit == j.end() || mit->is_null()) return m;  // a vocabulary without merges is valid
  if (!mit->is_array()) return FieldError(where, "merges", "must be a list");
  m->merges_.reserve(mit->size());
  const size_t prefix_len = m->continuing_subword_prefix_.size();
  for (size_t rank = 0; rank < mit->size(); ++rank) {
    const nlohmann::json& e = (*mit)[rank];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        return FieldError(
            where, "merges",
            absl::StrCat("entry ", rank, " \"", s, "\" is not two tokens separated by one space"));
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return FieldError(
          where, "merges",
          absl::StrCat("entry ", rank, " is ", e.dump(), "; expected \"a b\" or [\"a\", \"b\"]"));
    }
    const std::string merged = a + b.substr(std::min(prefix_len, b.size()));
    const auto a_id = m->TokenToId(a), b_id = m->TokenToId(b), merged_id = m->TokenToId(merged);
    if (!a_id || !b_id || !merged_id) {
      const std::string& missing = !a_id ? a : !b_id ? b : merged;
      return FieldError(where, "merges",
                        absl::StrCat("entry ", rank, " (\"", a, "\", \"", b, "\") uses \"", missing,
                                     "\", which is not in the vocabulary; the file is corrupt or truncated"));
    }
    m->merges_[PairKey(*a_id, *b_id)] = {static_cast<int32_t>(rank), *merged_id};
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

absl::Status BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    if (auto id = TokenToId(word)) {
      ids->push_back(*id);
      return absl::OkStatus();
    }
  }
  const bool cacheable = word.size() < BpeCache::kMaxWordBytes;
  if (cacheable && cache_->Get(word, ids)) return absl::OkStatus();
  const size_t first = ids->size();
  LLMC_RETURN_IF_ERROR(MergeWord(word, ids));
  if (cacheable) cache_->Put(word, std::vector<int32_t>(ids->begin() + first, ids->end()));
  return absl::OkStatus();
}

absl::Status BpeModel::MergeWord(absl::string_view w, std::vector<int32_t>* ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&symbols](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, true});
  };
  int32_t pending_unk = -1;  // an unk id not yet added (it may still grow by fusion)
  std::string scratch;
  size_t i = 0;
  while (i < w.size()) {
    const size_t end = i + Utf8SequenceLength(static_cast<unsigned char>(w[i]));
    const bool is_first = i == 0, is_last = end >= w.size();
    absl::string_view s = w.substr(i, end - i);
    if ((!is_first && !continuing_subword_prefix_.empty()) || (is_last && !end_of_word_suffix_.empty())) {
      scratch.clear();
      if (!is_first) scratch.append(continuing_subword_prefix_);
      scratch.append(s.data(), s.size());
      if (is_last) scratch.append(end_of_word_suffix_);
      s = scratch;
    }
    i = end;
    if (auto id = TokenToId(s)) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_fallback_ids_[b] >= 0;
      if (all) {
        // As in HF, a pending unk is not flushed first.
        for (unsigned char b : s) add(byte_fallback_ids_[b]);
        continue;
      }
    }
    if (unk_token_) {
      auto unk_id = TokenToId(*unk_token_);
      if (!unk_id)
        return absl::FailedPreconditionError(absl::StrCat(
            "BPE unk_token \"", *unk_token_, "\" is not in the vocabulary; fix the tokenizer.json"));
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id;
    }
    // Without an unk_token the character is dropped, as HF does.
  }
  if (pending_unk >= 0) add(pending_unk);

  std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, MergeAfter> queue;
  auto consider = [&](int32_t pos, int32_t left, int32_t right) {
    auto it = merges_.find(PairKey(left, right));
    if (it != merges_.end()) queue.push({pos, it->second.first, it->second.second});
  };
  for (size_t k = 0; k + 1 < symbols.size(); ++k)
    consider(static_cast<int32_t>(k), symbols[k].id, symbols[k + 1].id);
  while (!queue.empty()) {
    const MergeCandidate top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next == -1) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    // Skip stale entries: the pair changed since this candidate was queued.
    auto it = merges_.find(PairKey(cur.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;
    cur.id = top.new_id;
    cur.next = right.next;
    symbols[next_pos].alive = false;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) consider(cur.prev, symbols[cur.prev].id, cur.id);
    if (cur.next >= 0) consider(top.pos, cur.id, symbols[cur.next].id);
  }
  for (const Symbol& s : symbols)
    if (s.alive) ids->push_back(s.id);
  return absl::OkStatus();
}

}  // namespace llmc::tok
