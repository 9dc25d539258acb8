#include "engine/calib/sequential_solver.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/algo/awq.h"
#include "engine/algo/block_view.h"
#include "engine/algo/gptq.h"
#include "engine/algo/smoothquant.h"
#include "engine/calib/block_backend.h"
#include "engine/calib/calib_hooks.h"
#include "engine/calib/decoder_block_view.h"
#include "engine/calib/module_solver.h"
#include "engine/calib/pruning.h"
#include "engine/calib/rank_exchange.h"
#include "engine/calib/stored_block.h"
#include "engine/model/causal_lm.h"
#include "engine/model/moe.h"
#include "engine/quant/simd_kernels.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/model_dtype.h"
#include "engine/tokenizer/tokenizer.h"

namespace llmc {

using json = nlohmann::json;

class SequentialSolver::Impl {
 public:
  Impl(const SequentialOptions& o, const CompressionRecipe& r, const QuantConfig& c) : opt_(o), recipe_(r), cfg_(c) {
    metered_ = std::make_unique<MeteredCommunicator>(o.comm ? o.comm : &single_);
    comm_ = metered_.get();
    writes_ = comm_->rank() == 0;
  }

  absl::Status Init() {
    const double t_open = NowSeconds();
    CausalLmOptions lo;
    lo.threads = opt_.threads;
    lo.max_chunk_tokens = opt_.max_chunk_tokens;
    LLMC_ASSIGN_OR_RETURN(lm_, CausalLm::Open(opt_.model_path, lo));
    LLMC_RETURN_IF_ERROR(ResolveMoeOption());
    const double t_tokenize = NowSeconds();
    setup_["open_s"] = t_tokenize - t_open;
    LLMC_ASSIGN_OR_RETURN(auto docs, LoadDocuments(opt_.dataset));
    LLMC_ASSIGN_OR_RETURN(auto tok, Tokenizer::FromModelDir(opt_.model_path));
    EncodeFn enc = [&](absl::string_view text) { return tok->Encode(text, /*add_special_tokens=*/false); };
    LLMC_ASSIGN_OR_RETURN(CalibrationSamples cs, BuildCalibrationSamples(docs, enc, opt_.calibration));
    for (auto& w : cs.warnings) warnings_.push_back(w);
    setup_["tokenize_s"] = NowSeconds() - t_tokenize;
    // This rank's shard of the samples, grouped by length (a batch holds equal-length sequences).
    std::map<size_t, std::vector<int32_t>> by_len;
    std::map<size_t, int64_t> count;
    for (size_t i = 0; i < cs.samples.size(); ++i) {
      if (static_cast<int>(i % comm_->size()) != comm_->rank()) continue;
      const auto& s = cs.samples[i];
      if (s.empty()) continue;
      by_len[s.size()].insert(by_len[s.size()].end(), s.begin(), s.end());
      ++count[s.size()];
      num_tokens_ += s.size();
      ++num_samples_;
    }
    // The counts of every rank: the N of the Hessians, and a rank without a sample stops them all.
    double totals[2] = {static_cast<double>(num_samples_), static_cast<double>(num_tokens_)};
    float fewest = -static_cast<float>(num_samples_);
    LLMC_RETURN_IF_ERROR(comm_->AllReduceSum(absl::MakeSpan(totals, 2)));
    LLMC_RETURN_IF_ERROR(comm_->AllReduceMax(absl::MakeSpan(&fewest, 1)));
    total_samples_ = static_cast<int64_t>(totals[0]);
    total_tokens_ = static_cast<int64_t>(totals[1]);
    if (total_samples_ == 0)
      return absl::InvalidArgumentError(absl::StrCat(opt_.dataset, ": no calibration samples; give more text"));
    if (fewest == 0.0f)
      return absl::InvalidArgumentError(absl::StrCat(opt_.dataset, ": ", total_samples_, " calibration samples for ",
                                                     comm_->size(), " ranks; every rank needs at least one: use fewer ",
                                                     "ranks or more samples"));
    // Embedded when the backend asks, a slice of sequences at a time where it keeps them off the host.
    CalibBatches batches;
    auto ids_by_len = std::make_shared<std::vector<std::vector<int32_t>>>();
    for (auto& [len, ids] : by_len) {
      max_len_ = std::max<int64_t>(max_len_, len);
      batches.shapes.emplace_back(count[len], static_cast<int64_t>(len));
      ids_by_len->push_back(std::move(ids));
    }
    CausalLm* lm = lm_.get();
    batches.embed = [lm, ids_by_len, shapes = batches.shapes](size_t b, int64_t first,
                                                              int64_t n) -> absl::StatusOr<HiddenStates> {
      const int64_t len = shapes[b].second;
      const std::vector<int32_t>& all = (*ids_by_len)[b];
      if (first < 0 || n < 0 || (first + n) * len > static_cast<int64_t>(all.size()))
        return absl::InternalError("calibration sequences out of range");
      return lm->Embed(absl::MakeConstSpan(all).subspan(first * len, n * len), n, len);
    };
    batches.token_ids = [ids_by_len](size_t b) { return absl::MakeConstSpan((*ids_by_len)[b]); };
    // Model dtype: the dtype of the first decoder Linear weight.
    const std::string first = lm_->spec().layout.LayerPrefix(0) +
                              (lm_->spec().fused_projections ? "self_attn.qkv_proj.weight" : "self_attn.q_proj.weight");
    const ModelTensor* t = lm_->dir().Find(first);
    if (!t) return absl::InvalidArgumentError(absl::StrCat(opt_.model_path, ": no ", first));
    dtype_ = t->info->dtype;
    BlockBackendOptions bo;
    bo.device = opt_.device;
    bo.gemm_precision = opt_.gemm_precision;
    bo.activations = opt_.calib_activations;
    bo.max_chunk_tokens = opt_.max_chunk_tokens;
    bo.num_samples = total_samples_;
    const double t_backend = NowSeconds();
    LLMC_ASSIGN_OR_RETURN(backend_, CreateBlockBackend(bo, lm_.get(), std::move(batches)));
    setup_["embed_s"] = NowSeconds() - t_backend;  // the backend's start and the embedding of every sample
    // Solved modules are encoded and written beside the next solves while the blocks run off the host.
    module_solver_ = std::make_unique<ModuleSolver>(recipe_, cfg_, backend_.get(), dtype_, opt_.threads,
                                                    opt_.background_writes.value_or(backend_->runs_off_host()));
    return CheckRecipe();
  }

  // moe_calibrate_all_experts: on by default for MoE models, an error elsewhere.
  absl::Status ResolveMoeOption() {
    const ModelSpec& spec = lm_->spec();
    if (!spec.moe.enabled()) {
      if (opt_.moe_calibrate_all_experts)
        return absl::InvalidArgumentError(absl::StrCat(
            "moe_calibrate_all_experts: ", opt_.model_path, " (", spec.arch->name,
            ") is not a mixture-of-experts model; leave the option out"));
      return absl::OkStatus();
    }
    all_experts_ = opt_.moe_calibrate_all_experts.value_or(true);
    if (!all_experts_ && comm_->size() > 1)
      return absl::UnimplementedError(absl::StrCat(
          "moe_calibrate_all_experts false on ", comm_->size(), " ranks: each rank would route its samples to other ",
          "experts and the statistics reductions need the same experts on every rank; run on one rank or leave the ",
          "option on"));
    return absl::OkStatus();
  }

  // The errors a run would hit late, raised now.
  absl::Status CheckRecipe() {
    for (const auto& g : cfg_.groups()) {
      const auto& in = g.scheme.input_activations;
      if (!in || (in->is_dynamic() && in->dynamic != "local")) continue;
      if (in->dynamic == "local" && !in->is_fp4())
        return absl::InvalidArgumentError(absl::StrCat(g.name, ".input_activations: dynamic local is for fp4 (NVFP4) only"));
      if (in->dynamic == "false" && in->strategy != Strategy::kTensor)
        return absl::InvalidArgumentError(absl::StrCat(g.name, ".input_activations: static activations need strategy tensor; ",
                                                       "use dynamic: true for per-token scales"));
      if (in->dynamic == "false" && !in->symmetric)
        return absl::InvalidArgumentError(absl::StrCat(g.name, ".input_activations: static asymmetric activations are not ",
                                                       "supported; use symmetric: true"));
    }
    if (recipe_.sparsity) LLMC_RETURN_IF_ERROR(CheckSparsity(*recipe_.sparsity));
    if (cfg_.kv_cache_scheme && lm_->spec().fused_projections)
      return absl::UnimplementedError(absl::StrCat(
          "kv_cache_scheme: ", lm_->spec().arch->name,
          " computes k and v in the fused qkv_proj; llmc does not calibrate a kv cache scheme for it (remove "
          "kv_cache_scheme)"));
    if (recipe_.smoothquant) {
      smoothquant_ = *recipe_.smoothquant;
      LLMC_ASSIGN_OR_RETURN(smoothquant_->mappings,
                            FamilySmoothMappings(smoothquant_->mappings, lm_->spec(), "SmoothQuantModifier"));
      LLMC_RETURN_IF_ERROR(CheckMappings(smoothquant_->mappings, "SmoothQuantModifier"));
      LLMC_RETURN_IF_ERROR(
          CheckMoeSmoothMappings(smoothquant_->mappings, smoothquant_->ignore,
                                 /*routers_balanced_when_ignored=*/false, lm_->spec(), "SmoothQuantModifier"));
    }
    if (recipe_.awq) {
      awq_ = *recipe_.awq;
      LLMC_ASSIGN_OR_RETURN(awq_->mappings, FamilySmoothMappings(awq_->mappings, lm_->spec(), "AWQModifier"));
      LLMC_RETURN_IF_ERROR(CheckMappings(awq_->mappings, "AWQModifier"));
      LLMC_RETURN_IF_ERROR(CheckMoeSmoothMappings(awq_->mappings, awq_->ignore, /*routers_balanced_when_ignored=*/true,
                                                  lm_->spec(), "AWQModifier"));
    }
    return absl::OkStatus();
  }

  // A smoothing mapping whose smooth layer or balance layers match no module of any decoder layer would smooth
  // nothing: an error, not a silent no-op. (A mixture-of-experts model's mappings for its sparse and its dense
  // layers each match some layers only.)
  absl::Status CheckMappings(const std::vector<SmoothMapping>& mappings, const char* modifier) const {
    std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> layers;  // modules, linears
    const std::string all = lm_->spec().layout.LayersPrefix();
    for (const auto& t : lm_->dir().tensors()) {
      const std::string& n = t.info->name;
      if (!absl::StartsWith(n, all) || !absl::EndsWith(n, ".weight")) continue;
      const size_t dot = n.find('.', all.size());
      if (dot == std::string::npos) continue;
      auto& [modules, linears] = layers[n.substr(0, dot + 1)];
      modules.push_back(n.substr(0, n.size() - 7));
      if (t.info->shape.size() == 2) linears.push_back(modules.back());
    }
    for (size_t i = 0; i < mappings.size(); ++i) {
      const SmoothMapping& m = mappings[i];
      bool any_smooth = false, resolves = false;
      for (const auto& [prefix, names] : layers) {
        bool smooth = false, balance = false;
        for (const auto& name : names.first) smooth |= MatchesTarget(m.smooth, name);
        for (const auto& name : names.second)
          for (const auto& b : m.balance) balance |= MatchesTarget(b, name);
        any_smooth |= smooth;
        resolves |= smooth && balance;
      }
      if (resolves) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          modifier, ".mappings[", i, "]: ",
          !any_smooth ? absl::StrCat("the smooth layer '", m.smooth, "' matches no module")
                      : absl::StrCat("no balance layer of [", absl::StrJoin(m.balance, ", "), "] matches a Linear"),
          " of a decoder layer (", lm_->spec().layout.LayerPrefix(0), "...) beside its smooth layer, so the mapping ",
          "would smooth nothing; fix its patterns"));
    }
    return absl::OkStatus();
  }

  // --- planning ---------------------------------------------------------------------------------------------

  absl::StatusOr<std::vector<OutputTensor>> ExtraModuleTensors(const std::string& module, int group, int64_t cols,
                                                                DType dtype) const {
    return module_solver_->ExtraTensors(module, group, cols, dtype);
  }

  std::string LayersPrefix() const { return lm_->spec().layout.LayersPrefix(); }

  std::vector<TensorSpec> ExtraTensors() const {
    std::vector<TensorSpec> out;
    if (!cfg_.kv_cache_scheme) return out;
    for (int64_t l = 0; l < lm_->spec().num_layers; ++l)
      for (const char* n : {"k_scale", "v_scale"})
        out.push_back({absl::StrCat(lm_->spec().layout.LayerPrefix(l), "self_attn.", n), dtype_, {1}});
    return out;
  }

  // --- the run ----------------------------------------------------------------------------------------------

  absl::Status Run(const SolverIo& io) {
    const auto& progress = io.progress;
    const int64_t layers = lm_->spec().num_layers;
    // Rank 0 holds the output and knows where it resumes.
    int64_t resume = io.resume_from_block;
    LLMC_RETURN_IF_ERROR(BroadcastInt(comm_, &resume, 0));
    if (resume < 0 || resume > layers)
      return absl::InvalidArgumentError(absl::StrCat("resume block ", resume, " outside [0, ", layers, "]"));
    t_start_ = NowSeconds();
    // A finished block's commit -- waiting for its modules still being written on the pool, then its durability
    // point (io.block_done: flushing the output to disk, recording the block as done) -- runs on its own thread
    // while the next block computes. One is in flight at a time, so blocks are recorded in order and a resume point
    // is never ahead of what is on disk. The block's report gets the commit's duration (commit_s) and how long the
    // next block then waited for it (commit_wait_s).
    struct Committed {
      json modules = json::array();
      double seconds = 0;
    };
    std::future<absl::StatusOr<Committed>> commit;
    size_t commit_entry = 0;
    auto wait_commit = [&]() -> absl::Status {
      if (!commit.valid()) return absl::OkStatus();
      const double t = NowSeconds();
      absl::StatusOr<Committed> c = commit.get();
      LLMC_RETURN_IF_ERROR(c.status());
      for (json& m : c->modules) modules_.push_back(std::move(m));
      json& blk = blocks_[commit_entry];
      blk["commit_s"] = c->seconds;
      blk["commit_wait_s"] = NowSeconds() - t;
      if (std::getenv("LLMC_VERBOSE")) std::fprintf(stderr, "llmc: block %s\n", blk.dump().c_str());
      return absl::OkStatus();
    };
    for (int64_t l = 0; l < layers; ++l) {
      if (io.cancel && io.cancel->load()) return absl::CancelledError("compression cancelled");
      if (l < resume) {
        LLMC_RETURN_IF_ERROR(ReplayLayer(static_cast<int>(l), io));
        continue;
      }
      LLMC_RETURN_IF_ERROR(RunLayer(static_cast<int>(l), io.emit, progress, io.cancel));
      if (io.cancel && io.cancel->load()) return absl::CancelledError("compression cancelled");
      LLMC_RETURN_IF_ERROR(wait_commit());
      commit_entry = blocks_.size() - 1;
      commit = std::async(std::launch::async, [this, &io, l, batch = sealed_batch_,
                                               hooks = std::move(sealed_hooks_)]() -> absl::StatusOr<Committed> {
        const double t = NowSeconds();
        Committed c;
        if (batch >= 0) LLMC_RETURN_IF_ERROR(module_solver_->Finish(batch, &c.modules));
        if (io.block_done) LLMC_RETURN_IF_ERROR(io.block_done(static_cast<int>(l)));
        c.seconds = NowSeconds() - t;
        return c;
      });
      sealed_batch_ = -1;
    }
    LLMC_RETURN_IF_ERROR(wait_commit());
    if (progress) {
      CompressProgress p;
      p.blocks_done = p.blocks_total = static_cast<int>(layers);
      p.modules_done = modules_done_;
      p.stage = "done";
      progress(p);
    }
    seconds_ = NowSeconds() - t_start_;
    // Every rank's figures, for rank 0's report.
    if (comm_->size() > 1) {
      const CommStats& c = metered_->stats();
      json mine = {{"rank", comm_->rank()},          {"samples", num_samples_},       {"tokens", num_tokens_},
                   {"seconds", seconds_},            {"calibrate_s", totals_.calibrate}, {"solve_s", totals_.solve},
                   {"propagate_s", totals_.propagate}, {"modules_solved", modules_solved_},
                   {"communication", {{"seconds", c.seconds}, {"bytes", c.bytes}, {"calls", c.calls}}}};
      LLMC_ASSIGN_OR_RETURN(std::vector<json> all, AllGatherJson(comm_, mine));
      ranks_ = all;
    }
    return absl::OkStatus();
  }

  json Report() const {
    json j;
    j["method"] = recipe_.Describe();
    j["calibration"] = {{"dataset", opt_.dataset},
                        {"samples", total_samples_},
                        {"tokens", total_tokens_},
                        {"seq_len", opt_.calibration.seq_len},
                        {"seed", opt_.calibration.seed},
                        {"ranks", comm_->size()}};
    if (recipe_.gptq)
      j["gptq"] = {{"block_size", recipe_.gptq->block_size},
                   {"dampening_frac", recipe_.gptq->dampening_frac},
                   {"actorder", recipe_.gptq->actorder}};
    if (recipe_.smoothquant) j["smoothquant"] = {{"smoothing_strength", recipe_.smoothquant->smoothing_strength}};
    if (recipe_.sparsity)
      j["sparsity"] = {{"method", recipe_.sparsity->method},
                       {"sparsity", recipe_.sparsity->sparsity},
                       {"mask_structure", recipe_.sparsity->mask_structure}};
    j["world_size"] = comm_->size();
    if (!ranks_.empty()) j["ranks"] = ranks_;
    const CommStats& c = metered_->stats();
    j["communication"] = {{"seconds", c.seconds}, {"bytes", c.bytes}, {"calls", c.calls}};
    j["modules"] = modules_;
    j["blocks"] = blocks_;
    j["seconds"] = seconds_;
    j["setup"] = setup_;
    j["peak_rss_bytes"] = PeakRssBytes();
    j["device"] = opt_.device;
    backend_->Report(&j);
    if (lm_->spec().moe.enabled())
      j["moe"] = {{"calibrate_all_experts", all_experts_},
                  {"experts", lm_->spec().moe.num_experts},
                  {"experts_per_token", lm_->spec().moe.top_k},
                  {"modules_without_tokens", experts_without_tokens_}};
    j["warnings"] = warnings_;
    return j;
  }

  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  using Stats = std::map<std::string, GroupStats>;

  // Runs `block` over a copy of every batch with hooks collecting `wants`.
  absl::StatusOr<std::unique_ptr<CalibHooks>> Calibrate(const DecoderBlock& block, const Wants& wants) {
    auto hooks = std::make_unique<CalibHooks>(wants, lm_->spec(), &lm_->Rope(max_len_, block.layer), &block, lm_->context());
    hooks->set_see_all_experts(all_experts_);
    LLMC_RETURN_IF_ERROR(backend_->Calibrate(block, wants, hooks.get()));
    // Statistics of all ranks' samples before any solve.
    LLMC_RETURN_IF_ERROR(ReduceCalibStats(comm_, backend_.get(), hooks.get(), !wants.capture.empty()));
    for (auto& [name, s] : hooks->stats()) {
      if (s.nonfinite)
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": NaN or Inf in the calibration activations (block ", block.layer,
            "); the model overflows on this data in fp32; check the checkpoint or use other calibration data"));
      s.amax = std::max(-s.min, s.max);
    }
    return hooks;
  }

  static const GroupStats* Find(const Stats& s, const std::string& module) {
    auto it = s.find(InputGroup(module));
    return it == s.end() ? nullptr : &it->second;
  }

  // --- one block ----------------------------------------------------------------------------------------------

  absl::Status RunLayer(int L, const EmitFn& emit, const std::function<void(const CompressProgress&)>& progress,
                        const std::atomic<bool>* cancel) {
    const int layers = static_cast<int>(lm_->spec().num_layers);
    auto report = [&](const std::string& stage) {
      if (!progress) return;
      CompressProgress p;
      p.blocks_done = L;
      p.blocks_total = layers;
      p.modules_done = modules_done_;
      p.stage = absl::StrCat(stage, " block ", L + 1, "/", layers);
      if (comm_->size() > 1) absl::StrAppend(&p.stage, " (", comm_->size(), " ranks)");
      progress(p);
    };
    json blk = {{"layer", L}};
    const double comm_at_start = metered_->stats().seconds;
    double t = NowSeconds();
    report("load");
    std::unique_ptr<DecoderBlock> block;
    if (prefetch_layer_ == L) {
      prefetch_layer_ = -1;
      auto r = prefetch_.get();
      if (!r.ok()) return r.status();
      block = std::move(*r);
      blk["prefetched"] = true;
    } else {
      LLMC_ASSIGN_OR_RETURN(block, LoadCheckedBlock(L));
    }
    blk["load_s"] = NowSeconds() - t;
    // Load (read, convert, dequantize, check) block L+1 on the host while the GPU works on block L. Only where
    // nothing else uses the runtime's CPU thread pool meanwhile (kv cache and AWQ observers do).
    if (backend_->runs_off_host() && !cfg_.kv_cache_scheme && !recipe_.awq && L + 1 < layers) {
      prefetch_layer_ = L + 1;
      prefetch_ = std::async(std::launch::async, [this, next = L + 1] { return LoadCheckedBlock(next); });
    }

    // 1. Smoothing (SmoothQuant) from the block's input statistics.
    if (recipe_.smoothquant) {
      t = NowSeconds();
      report("smooth");
      Wants w;
      std::vector<std::string> linears;
      for (const LinearWeight* lw : block->linears()) linears.push_back(lw->name);
      for (const std::string& m : SmoothQuantInputs(*smoothquant_, linears)) w.channel_max.insert(InputGroup(m));
      LLMC_ASSIGN_OR_RETURN(auto hooks, Calibrate(*block, w));
      DecoderBlockView view(block.get(), lm_.get(), &hooks->stats(), &cfg_, dtype_);
      LLMC_RETURN_IF_ERROR(ApplySmoothQuant(*smoothquant_, &view));
      blk["smooth_s"] = NowSeconds() - t;
    }
    if (recipe_.awq) {
      t = NowSeconds();
      report("awq");
      LLMC_RETURN_IF_ERROR(RunAwq(block.get(), &blk));
      blk["awq_s"] = NowSeconds() - t;
    }
    if (cancel && cancel->load()) return absl::OkStatus();

    // 2. Pruning (SparseGPT / Wanda).
    std::map<std::string, std::vector<uint8_t>> keep;  // pruned modules' masks (GPTQ keeps their zeros)
    if (recipe_.sparsity) {
      t = NowSeconds();
      report("prune");
      const SparsityParams& sp = *recipe_.sparsity;
      Wants w;
      w.device_hessian = false;  // SparseGPT solves on the host
      for (const LinearWeight* lw : block->linears())
        if (SparsityTargets(sp, lw->name)) (sp.method == "wanda" ? w.row_norm : w.hessian).insert(InputGroup(lw->name));
      LLMC_ASSIGN_OR_RETURN(auto hooks, Calibrate(*block, w));
      std::vector<LinearWeight*> targets;
      std::vector<double> costs;
      for (LinearWeight* lw : block->linears())
        if (SparsityTargets(sp, lw->name)) {
          targets.push_back(lw);
          costs.push_back(SolveCost(lw->out_features, lw->in_features, sp.method != "wanda"));
        }
      // Each module is pruned by its owner rank, which hands the result to the others.
      const std::vector<int> owner = AssignOwners(costs, comm_->size());
      std::vector<ModuleResult> results(targets.size());
      absl::Status pruned;
      for (size_t i = 0; i < targets.size() && pruned.ok(); ++i) {
        if (owner[i] != comm_->rank()) continue;
        LinearWeight* lw = targets[i];
        const GroupStats* st = Find(hooks->stats(), lw->name);
        if (!st || st->tokens == 0)
          return absl::FailedPreconditionError(absl::StrCat(
              lw->name, ": no calibration token reached this module (an expert no token was routed to), so it ",
              "cannot be pruned from statistics; leave moe_calibrate_all_experts on or add it to the ignore list"));
        double t0 = NowSeconds();
        auto pr = PruneModule(sp, lw, st->hessian.get(), st->row_norm.get(), opt_.threads);
        if (!pr.ok()) {
          pruned = pr.status();
          break;
        }
        results[i].mask = std::move(pr->mask);
        results[i].info = {{"method", sp.method}, {"loss", pr->loss},
                           {"sparsity", pr->sparsity}, {"seconds", NowSeconds() - t0}};
        ++modules_solved_;
      }
      LLMC_RETURN_IF_ERROR(AgreeOnStatus(comm_, pruned));
      for (size_t i = 0; i < targets.size(); ++i) {
        LinearWeight* lw = targets[i];
        ModuleResult& r = results[i];
        if (comm_->size() > 1) {
          if (owner[i] == comm_->rank()) r.weight = std::move(lw->weight);
          LLMC_RETURN_IF_ERROR(BroadcastModuleResult(comm_, &r, owner[i]));
          lw->weight = std::move(r.weight);
        }
        keep[lw->name] = std::move(r.mask);
        module_info_[lw->name]["prune"] = std::move(r.info);
      }
      blk["prune_s"] = NowSeconds() - t;
    }
    if (cancel && cancel->load()) return absl::OkStatus();

    // 3. Calibration for quantization: Hessians (GPTQ), static input ranges, kv cache ranges.
    Wants qw;
    for (const LinearWeight* lw : block->linears()) {
      int g = cfg_.Match(lw->name, "Linear");
      if (g < 0 || !cfg_.groups()[g].scheme.weights) continue;
      if (recipe_.gptq) qw.hessian.insert(InputGroup(lw->name));
      if (cfg_.groups()[g].scheme.weights->observer == "imatrix_mse") {
        // imatrix_mse's channel importance is the Hessian's diagonal, read on the host.
        qw.hessian.insert(InputGroup(lw->name));
        qw.device_hessian = false;
      }
      const auto& in = cfg_.groups()[g].scheme.input_activations;
      if (in && (in->dynamic == "false" || in->dynamic == "local")) qw.range.insert(InputGroup(lw->name));
    }
    qw.kv = cfg_.kv_cache_scheme.has_value();
    std::unique_ptr<CalibHooks> qhooks;
    // Modules still being written read qhooks' statistics: they must be done before it goes, on every return path.
    struct WaitForModules {
      ModuleSolver* solver;
      ~WaitForModules() {
        if (solver) solver->Wait();
      }
    } wait_for_modules{module_solver_.get()};
    if (!qw.empty()) {
      t = NowSeconds();
      report("calibrate");
      LLMC_ASSIGN_OR_RETURN(qhooks, Calibrate(*block, qw));
      blk["calibrate_s"] = NowSeconds() - t;
      totals_.calibrate += NowSeconds() - t;
    }
    if (cancel && cancel->load()) return absl::OkStatus();

    // 4. Solve each module and emit its tensors.
    t = NowSeconds();
    report("solve");
    std::map<std::string, float> fused_amax;  // NVFP4 global scales over q/k/v and gate/up
    for (const LinearWeight* lw : block->linears()) {
      int g = cfg_.Match(lw->name, "Linear");
      if (g < 0 || !cfg_.groups()[g].scheme.weights) continue;
      const QuantArgs& wa = *cfg_.groups()[g].scheme.weights;
      if (!wa.is_fp4() || wa.strategy != Strategy::kTensorGroup) continue;
      float a = 0;
      for (float v : lw->weight) a = std::max(a, std::fabs(RoundToDType(v, dtype_)));
      if (!std::isfinite(a)) return absl::InvalidArgumentError(absl::StrCat(lw->name, ": weight contains NaN or Inf"));
      float& f = fused_amax[InputGroup(lw->name)];
      f = std::max(f, a);
    }
    if (comm_->size() > 1) {
      LLMC_RETURN_IF_ERROR(SolveShared(block.get(), fused_amax, qhooks.get(), keep, emit));
    } else {
      LLMC_RETURN_IF_ERROR(SolveAll(block.get(), fused_amax, qhooks.get(), keep, emit, cancel));
      if (cancel && cancel->load()) return absl::OkStatus();
    }
    if (cfg_.kv_cache_scheme && writes_) {
      const std::string p = lm_->spec().layout.LayerPrefix(L) + "self_attn.";
      auto scale = [&](float amax) {
        float s = RoundToDType(amax / kF8E4M3Max, dtype_);
        return std::vector<float>{s == 0.0f ? 1.0f : s};
      };
      LLMC_RETURN_IF_ERROR(emit(p + "k_scale", ToDTypeBytes(scale(qhooks->k_amax()), dtype_)));
      LLMC_RETURN_IF_ERROR(emit(p + "v_scale", ToDTypeBytes(scale(qhooks->v_amax()), dtype_)));
    }
    blk["solve_s"] = NowSeconds() - t;
    totals_.solve += NowSeconds() - t;
    // The solves are done with the Hessians (and the other per-channel sums): free them (on the device too) before
    // the propagation. What the modules still being written read -- token counts and ranges -- stays.
    if (qhooks)
      for (auto& [group, st] : qhooks->stats()) {
        st.hessian.reset();
        st.device_hessian.reset();
        st.row_norm.reset();
        st.captured = std::vector<float>();
      }
    if (cancel && cancel->load()) return absl::OkStatus();

    // 5. Propagate with the compressed weights.
    t = NowSeconds();
    report("propagate");
    LLMC_RETURN_IF_ERROR(backend_->Propagate(*block));
    blk["propagate_s"] = NowSeconds() - t;
    totals_.propagate += NowSeconds() - t;
    backend_->ReportBlock(&blk);

    // 6. The block's other tensors: norms and biases (as modified by smoothing), anything else as stored. With one
    // rank the modules still being finished (packed, measured, written) on the pool are left to the block's commit,
    // which waits for them beside the next block (Run); their statistics go with it. Several ranks have finished
    // theirs in SolveShared.
    t = NowSeconds();
    if (writes_) LLMC_RETURN_IF_ERROR(EmitRest(L, *block, emit));
    if (comm_->size() == 1) {
      sealed_batch_ = module_solver_->Seal();
      sealed_hooks_ = std::move(qhooks);
      wait_for_modules.solver = nullptr;
    } else {
      LLMC_RETURN_IF_ERROR(module_solver_->Finish(&modules_));
    }
    blk["finish_s"] = NowSeconds() - t;
    if (comm_->size() > 1) blk["communicate_s"] = metered_->stats().seconds - comm_at_start;
    blk["rss_bytes"] = PeakRssBytes();
    blocks_.push_back(blk);
    return absl::OkStatus();
  }

  // Block L as the runtime loads it, refused when a weight, bias or norm is not finite (the error names it).
  absl::StatusOr<std::unique_ptr<DecoderBlock>> LoadCheckedBlock(int L) const {
    LLMC_ASSIGN_OR_RETURN(std::unique_ptr<DecoderBlock> block, lm_->LoadBlock(L));
    auto finite = [](const std::vector<float>& v) {
      return simd::AllFinite32(reinterpret_cast<const uint32_t*>(v.data()), static_cast<int64_t>(v.size()));
    };
    for (const LinearWeight* lw : block->linears())
      for (const std::vector<float>* v : {&lw->weight, &lw->bias})
        if (!finite(*v))
          return absl::InvalidArgumentError(absl::StrCat(lw->name, (v == &lw->weight ? ".weight" : ".bias"),
                                                         ": contains NaN or Inf; fix the checkpoint or ignore the module"));
    for (const std::vector<float>* v : {&block->input_norm, &block->post_attention_norm, &block->q_norm, &block->k_norm,
                                        &block->pre_feedforward_norm, &block->post_feedforward_norm})
      if (!finite(*v))
        return absl::InvalidArgumentError(absl::StrCat(lm_->spec().layout.LayerPrefix(L),
                                                       ": a norm weight contains NaN or Inf; fix the checkpoint"));
    return block;
  }

  // AWQ's search on `block`, scaled in place on every rank; its choices go to blk["awq"].
  absl::Status RunAwq(DecoderBlock* block, json* blk) {
    Wants w;
    // Each rank captures its share of the inputs the search runs on; rank 0 searches on all of them.
    w.capture_tokens = (kAwqCaptureTokens + comm_->size() - 1) / comm_->size();
    std::vector<std::string> norms, linears;
    const std::map<std::string, GroupStats> none;
    DecoderBlockView names(block, lm_.get(), &none, &cfg_, dtype_);
    for (const auto& [n, v] : names.norms()) norms.push_back(n);
    std::vector<std::string> routers;
    for (const LinearWeight* lw : block->linears()) {
      linears.push_back(lw->name);
      if (IsMoeRouter(lw->name)) routers.push_back(lw->name);
    }
    for (const std::string& m : AwqInputs(*awq_, norms, linears, routers)) {
      w.channel_mean.insert(InputGroup(m));
      w.capture.insert(InputGroup(m));
    }
    LLMC_ASSIGN_OR_RETURN(auto hooks, Calibrate(*block, w));
    absl::Status searched;
    if (writes_) {
      DecoderBlockView view(block, lm_.get(), &hooks->stats(), &cfg_, dtype_, backend_->awq_device_loss());
      auto chosen = ApplyAwq(*awq_, &view);
      searched = chosen.status();
      json awq = json::array();
      if (chosen.ok())
        for (const AwqChoice& c : *chosen)
          awq.push_back({{"smooth", c.smooth}, {"balance", c.balance}, {"ratio", c.ratio}, {"duo_scaling", c.duo},
                         {"loss", c.loss}, {"initial_loss", c.initial_loss}, {"on_device", c.on_device}});
      (*blk)["awq"] = awq;
    }
    // The other ranks take the scaled block from rank 0.
    LLMC_RETURN_IF_ERROR(AgreeOnStatus(comm_, searched));
    return SyncBlock(comm_, block, 0);
  }

  // A block finished before a resume: its weights as stored (dequantized, norms and biases as emitted) give
  // exactly the activations the interrupted run propagated.
  absl::Status ReplayLayer(int L, const SolverIo& io) {
    std::unique_ptr<DecoderBlock> block;
    if (writes_) {
      // Rank 0 reads the staged output; the other ranks take the block from it.
      if (!io.read_back) return absl::InternalError("resume without a way to read the staged output");
      LLMC_ASSIGN_OR_RETURN(block, LoadStoredBlock(*lm_, cfg_, dtype_, L, io.read_back));
    } else {
      LLMC_ASSIGN_OR_RETURN(block, lm_->LoadBlock(L));
    }
    LLMC_RETURN_IF_ERROR(SyncBlock(comm_, block.get(), 0));
    LLMC_RETURN_IF_ERROR(backend_->Propagate(*block));
    json blk = {{"layer", L}, {"resumed", true}};
    blocks_.push_back(blk);
    return absl::OkStatus();
  }

  // One rank: every module solved here, its tensors emitted as they are encoded.
  absl::Status SolveAll(DecoderBlock* block, const std::map<std::string, float>& fused_amax, CalibHooks* qhooks,
                        const std::map<std::string, std::vector<uint8_t>>& keep, const EmitFn& emit,
                        const std::atomic<bool>* cancel) {
    for (LinearWeight* lw : block->linears()) {
      if (cancel && cancel->load()) return absl::OkStatus();
      LLMC_ASSIGN_OR_RETURN(std::optional<Planned> p, Plan(*lw, fused_amax));
      if (!p) {
        LLMC_RETURN_IF_ERROR(emit(lw->name + ".weight", ToDTypeBytes(lw->weight, WeightDType(*lw))));
        continue;
      }
      const GroupStats* st = qhooks ? Find(qhooks->stats(), lw->name) : nullptr;
      NoteExpertTokens(*lw, st, qhooks != nullptr);
      auto kit = keep.find(lw->name);
      LLMC_RETURN_IF_ERROR(module_solver_->Solve(lw, p->group, p->wdtype, p->global_scale, st,
                                                 kit == keep.end() ? nullptr : &kit->second, module_info_[lw->name],
                                                 emit, &warnings_));
      ++modules_done_;
      ++modules_solved_;
    }
    return absl::OkStatus();
  }

  // Several ranks: each module is solved by its owner (balanced by solve cost), which broadcasts the compressed
  // values (every rank propagates with them), the module's tensors (rank 0 writes them) and its report entry.
  absl::Status SolveShared(DecoderBlock* block, const std::map<std::string, float>& fused_amax, CalibHooks* qhooks,
                           const std::map<std::string, std::vector<uint8_t>>& keep, const EmitFn& emit) {
    std::vector<LinearWeight*> mods;
    std::vector<Planned> plans;
    std::vector<double> costs;
    for (LinearWeight* lw : block->linears()) {
      LLMC_ASSIGN_OR_RETURN(std::optional<Planned> p, Plan(*lw, fused_amax));
      if (!p) {
        if (writes_) LLMC_RETURN_IF_ERROR(emit(lw->name + ".weight", ToDTypeBytes(lw->weight, WeightDType(*lw))));
        continue;
      }
      mods.push_back(lw);
      plans.push_back(*p);
      costs.push_back(SolveCost(lw->out_features, lw->in_features, recipe_.gptq.has_value()));
    }
    const std::vector<int> owner = AssignOwners(costs, comm_->size());
    std::vector<ModuleResult> results(mods.size());
    std::mutex mu;  // the pool threads emit into `results`
    absl::Status solved;
    for (size_t i = 0; i < mods.size() && solved.ok(); ++i) {
      if (owner[i] != comm_->rank()) continue;
      LinearWeight* lw = mods[i];
      ModuleResult* r = &results[i];
      EmitFn keep_tensor = [&mu, r](const std::string& name, absl::Span<const uint8_t> bytes) {
        std::lock_guard<std::mutex> lock(mu);
        r->tensors.emplace_back(name, std::vector<uint8_t>(bytes.begin(), bytes.end()));
        return absl::OkStatus();
      };
      const GroupStats* st = qhooks ? Find(qhooks->stats(), lw->name) : nullptr;
      NoteExpertTokens(*lw, st, qhooks != nullptr);
      auto kit = keep.find(lw->name);
      solved = module_solver_->Solve(lw, plans[i].group, plans[i].wdtype, plans[i].global_scale, st,
                                     kit == keep.end() ? nullptr : &kit->second, module_info_[lw->name], keep_tensor,
                                     &r->warnings);
      ++modules_solved_;
    }
    json entries = json::array();
    absl::Status finished = module_solver_->Finish(&entries);
    if (solved.ok()) solved = finished;
    // Every rank learns of a failed solve (and its message) before any broadcast waits for it.
    LLMC_RETURN_IF_ERROR(AgreeOnStatus(comm_, solved));
    std::map<std::string, json> by_name;
    for (json& e : entries) {
      const std::string name = e.value("name", "");
      by_name[name] = std::move(e);
    }
    std::vector<json> block_modules;
    for (size_t i = 0; i < mods.size(); ++i) {
      ModuleResult& r = results[i];
      if (owner[i] == comm_->rank()) {
        r.weight = std::move(mods[i]->weight);
        r.info = std::move(by_name[mods[i]->name]);
      }
      LLMC_RETURN_IF_ERROR(BroadcastModuleResult(comm_, &r, owner[i]));
      mods[i]->weight = std::move(r.weight);
      if (writes_)
        for (const auto& [name, bytes] : r.tensors) LLMC_RETURN_IF_ERROR(emit(name, bytes));
      for (auto& w : r.warnings) warnings_.push_back(std::move(w));
      block_modules.push_back(std::move(r.info));
      r = ModuleResult();
      ++modules_done_;
    }
    // The report lists a block's modules in name order, as one rank does.
    std::sort(block_modules.begin(), block_modules.end(),
              [](const json& a, const json& b) { return a.value("name", "") < b.value("name", ""); });
    for (json& e : block_modules) modules_.push_back(std::move(e));
    return absl::OkStatus();
  }

  // MoE models: the calibration tokens each solved module saw (the report's `calibration_tokens`), and the experts
  // that saw none.
  void NoteExpertTokens(const LinearWeight& lw, const GroupStats* st, bool calibrated) {
    if (!lm_->spec().moe.enabled() || !calibrated) return;
    const int64_t n = st ? st->tokens : 0;
    module_info_[lw.name]["calibration_tokens"] = n;
    if (n == 0) experts_without_tokens_.push_back(lw.name);
  }

  // How a Linear is quantized: its config group, stored dtype and fused NVFP4 global scale; nullopt when it stays
  // as it is.
  struct Planned {
    int group = -1;
    DType wdtype = DType::kBF16;
    std::optional<float> global_scale;
  };
  DType WeightDType(const LinearWeight& lw) const {
    const ModelTensor* src = lm_->dir().Find(lw.name + ".weight");
    return src ? src->info->dtype : dtype_;
  }
  absl::StatusOr<std::optional<Planned>> Plan(const LinearWeight& lw, const std::map<std::string, float>& fused_amax) const {
    int g = cfg_.Match(lw.name, "Linear");
    if (g < 0 || !cfg_.groups()[g].scheme.weights) return std::optional<Planned>();
    Planned p;
    p.group = g;
    p.wdtype = WeightDType(lw);
    if (auto it = fused_amax.find(InputGroup(lw.name)); it != fused_amax.end())
      p.global_scale = NvFp4GlobalScale(it->second, p.wdtype);
    return std::optional<Planned>(p);
  }

  absl::Status EmitRest(int L, const DecoderBlock& block, const EmitFn& emit) {
    const std::string p = lm_->spec().layout.LayerPrefix(L);
    std::map<std::string, const std::vector<float>*> values = {
        {p + "input_layernorm.weight", &block.input_norm},
        {p + "post_attention_layernorm.weight", &block.post_attention_norm},
    };
    if (!block.q_norm.empty()) values[p + "self_attn.q_norm.weight"] = &block.q_norm;
    if (!block.k_norm.empty()) values[p + "self_attn.k_norm.weight"] = &block.k_norm;
    if (!block.pre_feedforward_norm.empty()) values[p + "pre_feedforward_layernorm.weight"] = &block.pre_feedforward_norm;
    if (!block.post_feedforward_norm.empty())
      values[p + "post_feedforward_layernorm.weight"] = &block.post_feedforward_norm;
    std::set<const std::vector<float>*> norms;
    for (const auto& [name, v] : values) norms.insert(v);
    std::set<std::string> linear_weights;
    for (const LinearWeight* lw : block.linears()) {
      linear_weights.insert(lw->name + ".weight");
      if (!lw->bias.empty()) values[lw->name + ".bias"] = &lw->bias;
    }
    // Llama 4's fused expert tensors were run and solved as per-expert Linears (emitted under their own names).
    const bool split_experts = lm_->spec().moe.style == MoeStyle::kLlama4 && block.moe.active();
    for (const auto& t : lm_->dir().tensors()) {
      const std::string& name = t.info->name;
      if (!absl::StartsWith(name, p) || linear_weights.count(name)) continue;
      if (split_experts && (name == MoeFusedExpertsName(p, "gate_up_proj") || name == MoeFusedExpertsName(p, "down_proj")))
        continue;
      if (auto it = values.find(name); it != values.end()) {
        // Norms are held as their effective scale: the checkpoint stores it less the family's offset.
        const float offset = norms.count(it->second) ? lm_->spec().norm_offset : 0.0f;
        if (offset != 0.0f) {
          std::vector<float> stored(*it->second);
          for (float& v : stored) v -= offset;
          LLMC_RETURN_IF_ERROR(emit(name, ToDTypeBytes(stored, t.info->dtype)));
          continue;
        }
        LLMC_RETURN_IF_ERROR(emit(name, ToDTypeBytes(*it->second, t.info->dtype)));
      } else {
        LLMC_RETURN_IF_ERROR(emit(name, t.file->Data(*t.info)));
      }
    }
    return absl::OkStatus();
  }

  SequentialOptions opt_;
  const CompressionRecipe& recipe_;
  // The recipe's smoothing parameters with the mappings resolved for the model's family (FamilySmoothMappings).
  std::optional<SmoothQuantParams> smoothquant_;
  std::optional<AwqParams> awq_;
  const QuantConfig& cfg_;
  SingleRank single_;
  std::unique_ptr<MeteredCommunicator> metered_;  // counts this rank's collectives
  Communicator* comm_;                            // metered_
  bool writes_ = true;                            // rank 0 emits the output
  int64_t total_samples_ = 0, total_tokens_ = 0;  // over every rank
  int modules_solved_ = 0;                        // by this rank
  struct {
    double calibrate = 0, solve = 0, propagate = 0;
  } totals_;
  json ranks_ = json::array();                    // every rank's figures (after a run on several ranks)
  std::unique_ptr<CausalLm> lm_;
  std::unique_ptr<BlockBackend> backend_;  // holds this rank's activations
  // The last block's modules still being written (ModuleSolver batch, -1: none) and the statistics they read: the
  // block's commit waits for them (Run). Declared before module_solver_, whose destructor waits for the pool, so
  // that they outlive any module still being written.
  int64_t sealed_batch_ = -1;
  std::unique_ptr<CalibHooks> sealed_hooks_;
  std::unique_ptr<ModuleSolver> module_solver_;
  int64_t max_len_ = 0;
  int64_t num_tokens_ = 0, num_samples_ = 0;
  DType dtype_ = DType::kBF16;
  std::vector<std::string> warnings_;
  std::map<std::string, json> module_info_;
  json modules_ = json::array(), blocks_ = json::array();
  int modules_done_ = 0;
  bool all_experts_ = false;                       // MoE: every expert sees every calibration token
  std::vector<std::string> experts_without_tokens_;  // MoE, option off: modules solved without statistics
  // The next block, loading on the host while the GPU runs this one.
  std::future<absl::StatusOr<std::unique_ptr<DecoderBlock>>> prefetch_;
  int prefetch_layer_ = -1;
  double t_start_ = 0, seconds_ = 0;
  nlohmann::json setup_ = nlohmann::json::object();  // Init's phases: open_s, tokenize_s, embed_s
};

SequentialSolver::SequentialSolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SequentialSolver::~SequentialSolver() = default;

absl::StatusOr<std::unique_ptr<SequentialSolver>> SequentialSolver::Create(const SequentialOptions& options,
                                                                           const CompressionRecipe& recipe,
                                                                           const QuantConfig& config) {
  if (options.device != "cuda" && !options.calib_activations.empty() && options.calib_activations != "fp32")
    return absl::InvalidArgumentError(absl::StrCat("calibration activations '", options.calib_activations,
                                                   "': the cpu keeps them in fp32; bf16 and host apply to --device cuda"));
  auto impl = std::make_unique<Impl>(options, recipe, config);
  LLMC_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<SequentialSolver>(new SequentialSolver(std::move(impl)));
}

absl::StatusOr<std::vector<OutputTensor>> SequentialSolver::ExtraModuleTensors(const std::string& module, int group,
                                                                             int64_t rows, int64_t cols,
                                                                             DType dtype) const {
  return impl_->ExtraModuleTensors(module, group, cols, dtype);
}
std::vector<TensorSpec> SequentialSolver::ExtraTensors() const { return impl_->ExtraTensors(); }
std::string SequentialSolver::LayersPrefix() const { return impl_->LayersPrefix(); }
absl::Status SequentialSolver::Run(const SolverIo& io) { return impl_->Run(io); }
json SequentialSolver::Report() const { return impl_->Report(); }
const std::vector<std::string>& SequentialSolver::warnings() const { return impl_->warnings(); }

}  // namespace llmc
