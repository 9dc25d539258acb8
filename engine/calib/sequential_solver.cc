#include "engine/calib/sequential_solver.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "common/util.h"
#include "engine/algo/awq.h"
#include "engine/algo/block_view.h"
#include "engine/algo/gptq.h"
#include "engine/algo/smoothquant.h"
#include "engine/calib/block_backend.h"
#include "engine/calib/calib_hooks.h"
#include "engine/calib/decoder_block_view.h"
#include "engine/calib/pruning.h"
#include "engine/model/causal_lm.h"
#include "engine/quant/group_quantizer.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/model_dtype.h"
#include "engine/tokenizer/tokenizer.h"

namespace llmc {

using json = nlohmann::json;

class SequentialSolver::Impl {
 public:
  Impl(const SequentialOptions& o, const CompressionRecipe& r, const QuantConfig& c) : opt_(o), recipe_(r), cfg_(c) {
    comm_ = o.comm ? o.comm : &single_;
  }

  absl::Status Init() {
    CausalLmOptions lo;
    lo.threads = opt_.threads;
    lo.max_chunk_tokens = opt_.max_chunk_tokens;
    LLMC_ASSIGN_OR_RETURN(lm_, CausalLm::Open(opt_.model_path, lo));
    LLMC_ASSIGN_OR_RETURN(auto docs, LoadDocuments(opt_.dataset));
    LLMC_ASSIGN_OR_RETURN(auto tok, Tokenizer::FromModelDir(opt_.model_path));
    EncodeFn enc = [&](absl::string_view text) { return tok->Encode(text, /*add_special_tokens=*/false); };
    LLMC_ASSIGN_OR_RETURN(CalibrationSamples cs, BuildCalibrationSamples(docs, enc, opt_.calibration));
    for (auto& w : cs.warnings) warnings_.push_back(w);
    // This rank's shard of the samples, grouped by length (a batch holds equal-length sequences).
    std::map<size_t, std::vector<int32_t>> by_len;
    std::vector<HiddenStates> batches;
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
    if (num_samples_ == 0)
      return absl::InvalidArgumentError(absl::StrCat(opt_.dataset, ": no calibration samples; give more text"));
    for (auto& [len, ids] : by_len) {
      LLMC_ASSIGN_OR_RETURN(HiddenStates x, lm_->Embed(ids, count[len], static_cast<int64_t>(len)));
      max_len_ = std::max<int64_t>(max_len_, len);
      batches.push_back(std::move(x));
    }
    // Model dtype: the dtype of the first decoder Linear weight.
    const ModelTensor* t = lm_->dir().Find("model.layers.0.self_attn.q_proj.weight");
    if (!t) return absl::InvalidArgumentError(absl::StrCat(opt_.model_path, ": no model.layers.0.self_attn.q_proj.weight"));
    dtype_ = t->info->dtype;
    BlockBackendOptions bo;
    bo.device = opt_.device;
    bo.gemm_precision = opt_.gemm_precision;
    bo.max_chunk_tokens = opt_.max_chunk_tokens;
    bo.num_samples = num_samples_;
    LLMC_ASSIGN_OR_RETURN(backend_, CreateBlockBackend(bo, lm_.get(), std::move(batches)));
    // Encode and write solved modules beside the solves while the blocks run off the host.
    if (backend_->runs_off_host())
      finisher_ = std::make_unique<ThreadPool>(
          std::max(2, opt_.threads > 0 ? opt_.threads : static_cast<int>(std::thread::hardware_concurrency())));
    return CheckRecipe();
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
    return absl::OkStatus();
  }

  // --- planning ---------------------------------------------------------------------------------------------

  absl::StatusOr<std::vector<OutputTensor>> Extras(const std::string& module, int group, int64_t rows, int64_t cols,
                                                 DType dtype) const {
    std::vector<OutputTensor> out;
    const ConfigGroup& g = cfg_.groups()[group];
    if (recipe_.gptq && g.scheme.weights) {
      LLMC_ASSIGN_OR_RETURN(ResolvedActOrder ro, ResolveActOrder(module, recipe_.gptq->actorder, *g.scheme.weights));
      if (ro.order == ActOrder::kGroup) out.push_back({"weight_g_idx", DType::kI32, {cols}});
    }
    const auto& in = g.scheme.input_activations;
    if (in && in->dynamic == "false") out.push_back({"input_scale", dtype, {1}});
    if (in && in->dynamic == "local") out.push_back({"input_global_scale", DType::kF32, {1}});
    (void)rows;
    return out;
  }

  std::vector<TensorSpec> ExtraTensors() const {
    std::vector<TensorSpec> out;
    if (!cfg_.kv_cache_scheme) return out;
    for (int64_t l = 0; l < lm_->spec().num_layers; ++l)
      for (const char* n : {"k_scale", "v_scale"})
        out.push_back({absl::StrCat("model.layers.", l, ".self_attn.", n), dtype_, {1}});
    return out;
  }

  // --- the run ----------------------------------------------------------------------------------------------

  absl::Status Run(const SolverIo& io) {
    const auto& progress = io.progress;
    const int64_t layers = lm_->spec().num_layers;
    if (io.resume_from_block < 0 || io.resume_from_block > layers)
      return absl::InvalidArgumentError(absl::StrCat("resume block ", io.resume_from_block, " outside [0, ", layers, "]"));
    t_start_ = NowSeconds();
    for (int64_t l = 0; l < layers; ++l) {
      if (io.cancel && io.cancel->load()) return absl::CancelledError("compression cancelled");
      if (l < io.resume_from_block) {
        LLMC_RETURN_IF_ERROR(ReplayLayer(static_cast<int>(l), io));
        continue;
      }
      LLMC_RETURN_IF_ERROR(RunLayer(static_cast<int>(l), io.emit, progress, io.cancel));
      if (io.cancel && io.cancel->load()) return absl::CancelledError("compression cancelled");
      if (io.block_done) LLMC_RETURN_IF_ERROR(io.block_done(static_cast<int>(l)));
    }
    if (progress) {
      CompressProgress p;
      p.blocks_done = p.blocks_total = static_cast<int>(layers);
      p.modules_done = modules_done_;
      p.stage = "done";
      progress(p);
    }
    seconds_ = NowSeconds() - t_start_;
    return absl::OkStatus();
  }

  json Report() const {
    json j;
    j["method"] = recipe_.Describe();
    j["calibration"] = {{"dataset", opt_.dataset},
                        {"samples", num_samples_},
                        {"tokens", num_tokens_},
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
    j["modules"] = modules_;
    j["blocks"] = blocks_;
    j["seconds"] = seconds_;
    j["peak_rss_bytes"] = PeakRssBytes();
    j["device"] = opt_.device;
    backend_->Report(&j);
    j["warnings"] = warnings_;
    return j;
  }

  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  using Stats = std::map<std::string, GroupStats>;

  // Runs `block` over a copy of every batch with hooks collecting `wants`.
  absl::StatusOr<std::unique_ptr<CalibHooks>> Calibrate(const DecoderBlock& block, const Wants& wants) {
    auto hooks = std::make_unique<CalibHooks>(wants, lm_->spec(), &lm_->Rope(max_len_), &block, lm_->context());
    LLMC_RETURN_IF_ERROR(backend_->Calibrate(block, wants, hooks.get()));
    // Statistics of all ranks' samples before any solve.
    for (auto& [name, s] : hooks->stats()) {
      if (s.nonfinite)
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": NaN or Inf in the calibration activations (block ", block.layer,
            "); the model overflows on this data in fp32; check the checkpoint or use other calibration data"));
      if (s.hessian) LLMC_RETURN_IF_ERROR(ReduceHessian(s.hessian.get()));
      if (!s.channel_max.empty()) LLMC_RETURN_IF_ERROR(comm_->AllReduceMax(absl::MakeSpan(s.channel_max)));
      float mm[2] = {-s.min, s.max};
      LLMC_RETURN_IF_ERROR(comm_->AllReduceMax(absl::MakeSpan(mm, 2)));
      s.min = -mm[0];
      s.max = mm[1];
      s.amax = std::max(mm[0], mm[1]);
    }
    return hooks;
  }

  absl::Status ReduceHessian(HessianAccumulator* h) {
    if (comm_->size() == 1) return absl::OkStatus();
    return absl::UnimplementedError("multi-rank Hessian reduction needs the NCCL communicator");
  }

  static const GroupStats* Find(const Stats& s, const std::string& module) {
    auto it = s.find(InputGroup(module));
    return it == s.end() ? nullptr : &it->second;
  }

  // Scale of a static input (per-tensor, symmetric) from its observed range, as the library's observer
  // computes qparams: stored in the model dtype.
  absl::StatusOr<float> StaticInputScale(const std::string& module, const QuantArgs& in, const GroupStats& st) {
    std::string fmt = in.type == QuantType::kFloat ? "float-quantized" : "int-quantized";
    QuantArgs a = in;
    a.dynamic = "false";
    a.observer = "minmax";
    LLMC_ASSIGN_OR_RETURN(GroupQuantizer q, GroupQuantizer::Create(module, 1, 2, dtype_, a, fmt));
    float v[2] = {st.min, st.max};
    LLMC_RETURN_IF_ERROR(q.Observe(v, 2, 0, 2, 0));
    return q.params().scale[0];
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
      progress(p);
    };
    json blk = {{"layer", L}};
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
      LLMC_ASSIGN_OR_RETURN(block, lm_->LoadBlock(L));
    }
    blk["load_s"] = NowSeconds() - t;
    // Load (read, convert, dequantize) block L+1 on the host while the GPU works on block L. Only where nothing
    // else uses the runtime's CPU thread pool meanwhile (kv cache and AWQ observers do).
    if (backend_->runs_off_host() && !cfg_.kv_cache_scheme && !recipe_.awq && L + 1 < layers) {
      prefetch_layer_ = L + 1;
      prefetch_ = std::async(std::launch::async, [this, next = L + 1] { return lm_->LoadBlock(next); });
    }
    for (const LinearWeight* lw : block->linears())
      for (const std::vector<float>* v : {&lw->weight, &lw->bias})
        for (float x : *v)
          if (!std::isfinite(x))
            return absl::InvalidArgumentError(absl::StrCat(lw->name, (v == &lw->weight ? ".weight" : ".bias"),
                                                           ": contains NaN or Inf; fix the checkpoint or ignore the module"));
    for (const std::vector<float>* v : {&block->input_norm, &block->post_attention_norm, &block->q_norm, &block->k_norm})
      for (float x : *v)
        if (!std::isfinite(x))
          return absl::InvalidArgumentError(absl::StrCat("model.layers.", L, ": a norm weight contains NaN or Inf; fix the checkpoint"));

    // 1. Smoothing (SmoothQuant) from the block's input statistics.
    if (recipe_.smoothquant) {
      t = NowSeconds();
      report("smooth");
      Wants w;
      std::vector<std::string> linears;
      for (const LinearWeight* lw : block->linears()) linears.push_back(lw->name);
      for (const std::string& m : SmoothQuantInputs(*recipe_.smoothquant, linears)) w.channel_max.insert(InputGroup(m));
      LLMC_ASSIGN_OR_RETURN(auto hooks, Calibrate(*block, w));
      DecoderBlockView view(block.get(), lm_.get(), &hooks->stats(), &cfg_, dtype_);
      LLMC_RETURN_IF_ERROR(ApplySmoothQuant(*recipe_.smoothquant, &view));
      blk["smooth_s"] = NowSeconds() - t;
    }
    if (recipe_.awq) {
      t = NowSeconds();
      report("awq");
      Wants w;
      w.capture_tokens = kAwqCaptureTokens;
      for (const std::string& m : AwqInputs(absl::StrCat("model.layers.", block->layer, "."))) {
        w.channel_mean.insert(InputGroup(m));
        w.capture.insert(InputGroup(m));
      }
      LLMC_ASSIGN_OR_RETURN(auto hooks, Calibrate(*block, w));
      DecoderBlockView view(block.get(), lm_.get(), &hooks->stats(), &cfg_, dtype_);
      LLMC_ASSIGN_OR_RETURN(std::vector<AwqChoice> chosen, ApplyAwq(*recipe_.awq, &view));
      json awq = json::array();
      for (const AwqChoice& c : chosen)
        awq.push_back({{"smooth", c.smooth}, {"balance", c.balance}, {"ratio", c.ratio}, {"loss", c.loss}});
      blk["awq"] = awq;
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
      for (LinearWeight* lw : block->linears()) {
        if (!SparsityTargets(sp, lw->name)) continue;
        const GroupStats* st = Find(hooks->stats(), lw->name);
        if (!st) return absl::InternalError(absl::StrCat(lw->name, ": no calibration statistics"));
        double t0 = NowSeconds();
        LLMC_ASSIGN_OR_RETURN(PruneResult pr, PruneModule(sp, lw, st->hessian.get(),
                                                          st->row_norm.get(), opt_.threads));
        keep[lw->name] = std::move(pr.mask);
        module_info_[lw->name]["prune"] = {{"method", sp.method}, {"loss", pr.loss},
                                           {"sparsity", pr.sparsity}, {"seconds", NowSeconds() - t0}};
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
      const auto& in = cfg_.groups()[g].scheme.input_activations;
      if (in && (in->dynamic == "false" || in->dynamic == "local")) qw.range.insert(InputGroup(lw->name));
    }
    qw.kv = cfg_.kv_cache_scheme.has_value();
    std::unique_ptr<CalibHooks> qhooks;
    // Module finishers read qhooks' statistics: they must be done before it goes, on every return path.
    struct WaitFinisher {
      ThreadPool* pool;
      ~WaitFinisher() {
        if (pool) pool->Wait();
      }
    } wait_finisher{finisher_.get()};
    if (!qw.empty()) {
      t = NowSeconds();
      report("calibrate");
      LLMC_ASSIGN_OR_RETURN(qhooks, Calibrate(*block, qw));
      blk["calibrate_s"] = NowSeconds() - t;
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
    for (LinearWeight* lw : block->linears()) {
      if (cancel && cancel->load()) return absl::OkStatus();
      const ModelTensor* src = lm_->dir().Find(lw->name + ".weight");
      const DType wdtype = src ? src->info->dtype : dtype_;
      int g = cfg_.Match(lw->name, "Linear");
      if (g < 0 || !cfg_.groups()[g].scheme.weights) {
        LLMC_RETURN_IF_ERROR(emit(lw->name + ".weight", ToDTypeBytes(lw->weight, wdtype)));
        continue;
      }
      const ConfigGroup& grp = cfg_.groups()[g];
      std::optional<float> gs;
      if (auto it = fused_amax.find(InputGroup(lw->name)); it != fused_amax.end()) gs = NvFp4GlobalScale(it->second, wdtype);
      const GroupStats* st = qhooks ? Find(qhooks->stats(), lw->name) : nullptr;
      auto kit = keep.find(lw->name);
      LLMC_RETURN_IF_ERROR(SolveModule(lw, grp, wdtype, gs, st, kit == keep.end() ? nullptr : &kit->second, emit));
      ++modules_done_;
    }
    if (cfg_.kv_cache_scheme) {
      const std::string p = absl::StrCat("model.layers.", L, ".self_attn.");
      auto scale = [&](float amax) {
        float s = RoundToDType(amax / kF8E4M3Max, dtype_);
        return std::vector<float>{s == 0.0f ? 1.0f : s};
      };
      LLMC_RETURN_IF_ERROR(emit(p + "k_scale", ToDTypeBytes(scale(qhooks->k_amax()), dtype_)));
      LLMC_RETURN_IF_ERROR(emit(p + "v_scale", ToDTypeBytes(scale(qhooks->v_amax()), dtype_)));
    }
    blk["solve_s"] = NowSeconds() - t;
    if (cancel && cancel->load()) return absl::OkStatus();

    // 5. Propagate with the compressed weights.
    t = NowSeconds();
    report("propagate");
    LLMC_RETURN_IF_ERROR(backend_->Propagate(*block));
    blk["propagate_s"] = NowSeconds() - t;
    backend_->ReportBlock(&blk);

    // 6. The block's other tensors: norms and biases (as modified by smoothing), anything else as stored.
    LLMC_RETURN_IF_ERROR(FinishModules());
    LLMC_RETURN_IF_ERROR(EmitRest(L, *block, emit));
    blk["rss_bytes"] = PeakRssBytes();
    if (std::getenv("LLMC_VERBOSE")) std::fprintf(stderr, "llmc: block %d %s\n", L, blk.dump().c_str());
    blocks_.push_back(blk);
    return absl::OkStatus();
  }

  // A block finished before a resume: its weights as stored (dequantized, norms and biases as emitted) give
  // exactly the activations the interrupted run propagated.
  absl::Status ReplayLayer(int L, const SolverIo& io) {
    if (!io.read_back) return absl::InternalError("resume without a way to read the staged output");
    LLMC_ASSIGN_OR_RETURN(std::unique_ptr<DecoderBlock> block, lm_->LoadBlock(L));
    const std::string p = absl::StrCat("model.layers.", L, ".");
    auto floats = [&](const std::string& name, DType dtype, std::vector<float>* out) -> absl::Status {
      LLMC_ASSIGN_OR_RETURN(auto bytes, io.read_back(name));
      if (bytes.size() != out->size() * DTypeSize(dtype))
        return absl::InternalError(absl::StrCat(name, ": staged size does not match"));
      for (size_t i = 0; i < out->size(); ++i) (*out)[i] = LoadAsFloat(bytes.data(), dtype, i);
      return absl::OkStatus();
    };
    auto tensor_dtype = [&](const std::string& name) {
      const ModelTensor* t = lm_->dir().Find(name);
      return t ? t->info->dtype : dtype_;
    };
    LLMC_RETURN_IF_ERROR(floats(p + "input_layernorm.weight", tensor_dtype(p + "input_layernorm.weight"), &block->input_norm));
    LLMC_RETURN_IF_ERROR(floats(p + "post_attention_layernorm.weight", tensor_dtype(p + "post_attention_layernorm.weight"),
                                &block->post_attention_norm));
    for (LinearWeight* lw : block->linears()) {
      const DType wd = tensor_dtype(lw->name + ".weight");
      if (!lw->bias.empty()) LLMC_RETURN_IF_ERROR(floats(lw->name + ".bias", tensor_dtype(lw->name + ".bias"), &lw->bias));
      int g = cfg_.Match(lw->name, "Linear");
      if (g < 0 || !cfg_.groups()[g].scheme.weights) {
        LLMC_RETURN_IF_ERROR(floats(lw->name + ".weight", wd, &lw->weight));
        continue;
      }
      const ConfigGroup& grp = cfg_.groups()[g];
      const QuantArgs& wa = *grp.scheme.weights;
      LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight(lw->name, lw->out_features, lw->in_features, wd, wa, grp.format));
      std::vector<std::vector<uint8_t>> bufs;
      for (const auto& o : plan) {
        LLMC_ASSIGN_OR_RETURN(auto b, io.read_back(absl::StrCat(lw->name, ".", o.suffix)));
        bufs.push_back(std::move(b));
      }
      std::vector<int32_t> g_idx;
      if (auto gi = io.read_back(lw->name + ".weight_g_idx"); gi.ok()) {
        g_idx.resize(lw->in_features);
        std::memcpy(g_idx.data(), gi->data(), std::min<size_t>(gi->size(), g_idx.size() * 4));
      }
      LLMC_ASSIGN_OR_RETURN(lw->weight, DequantizeStored(*lw, wd, wa, grp.format, bufs, g_idx));
    }
    LLMC_RETURN_IF_ERROR(backend_->Propagate(*block));
    json blk = {{"layer", L}, {"resumed", true}};
    blocks_.push_back(blk);
    return absl::OkStatus();
  }

  // The values a stored quantized weight stands for, rounded to the model dtype (as the solver propagated them).
  absl::StatusOr<std::vector<float>> DequantizeStored(const LinearWeight& lw, DType wd, const QuantArgs& wa,
                                                      const std::string& format,
                                                      const std::vector<std::vector<uint8_t>>& bufs,
                                                      const std::vector<int32_t>& g_idx) {
    LLMC_ASSIGN_OR_RETURN(auto deq, DequantizeWeight(lw.out_features, lw.in_features, wd, wa, format, bufs,
                                                     g_idx.empty() ? nullptr : g_idx.data()));
    for (float& v : deq) v = RoundToDType(v, wd);
    return deq;
  }

  absl::Status SolveModule(LinearWeight* lw, const ConfigGroup& grp, DType wdtype, std::optional<float> gs,
                           const GroupStats* st, const std::vector<uint8_t>* keep, const EmitFn& emit) {
    const QuantArgs& wa = *grp.scheme.weights;
    const int64_t rows = lw->out_features, cols = lw->in_features;
    double t0 = NowSeconds();
    auto info = std::make_shared<json>(module_info_[lw->name]);
    (*info)["name"] = lw->name;
    auto orig = std::make_shared<std::vector<float>>(std::move(lw->weight));
    std::shared_ptr<std::vector<std::vector<uint8_t>>> bufs;
    std::shared_ptr<std::vector<float>> qw;  // the compressed values, in the model dtype
    std::shared_ptr<GroupQuantizer> quantizer;
    if (recipe_.gptq) {
      LLMC_ASSIGN_OR_RETURN(GroupQuantizer q, GroupQuantizer::Create(lw->name, rows, cols, wdtype, wa, grp.format, gs));
      GptqOptions go;
      go.block_size = recipe_.gptq->block_size;
      go.dampening_frac = recipe_.gptq->dampening_frac;
      go.actorder = recipe_.gptq->actorder;
      go.weight_args = &wa;
      go.keep_mask = keep;
      go.num_threads = opt_.threads;
      auto r = backend_->Gptq(lw->name, orig->data(), rows, cols, st, &q, go);
      if (!r.ok()) return r.status();
      if (r->fell_back_to_rtn) AddWarning(r->warning);
      (*info)["algorithm"] = "gptq";
      (*info)["gptq_loss"] = r->loss;
      (*info)["fell_back_to_rtn"] = r->fell_back_to_rtn;
      if (r->dead_columns) (*info)["dead_columns"] = r->dead_columns;
      qw = std::make_shared<std::vector<float>>(std::move(r->weight));  // FakeQuant values: already in the dtype
      quantizer = std::make_shared<GroupQuantizer>(std::move(q));
    } else {
      auto bytes = ToDTypeBytes(*orig, wdtype);
      WeightView view{lw->name, bytes.data(), wdtype, rows, cols};
      LLMC_ASSIGN_OR_RETURN(auto b, QuantizeWeight(view, wa, grp.format, gs));
      bufs = std::make_shared<std::vector<std::vector<uint8_t>>>(std::move(b));
      LLMC_ASSIGN_OR_RETURN(auto deq, DequantizeWeight(rows, cols, wdtype, wa, grp.format, *bufs));
      for (float& v : deq) v = RoundToDType(v, wdtype);
      qw = std::make_shared<std::vector<float>>(std::move(deq));
      (*info)["algorithm"] = "rtn";
    }
    lw->weight = *qw;  // the block propagates with the compressed values
    (*info)["solve_seconds"] = NowSeconds() - t0;
    // Encoding, the report's error and the writes run beside the next solves (and the propagation).
    LLMC_ASSIGN_OR_RETURN(auto extras, Extras(lw->name, static_cast<int>(&grp - cfg_.groups().data()), rows, cols, wdtype));
    const std::string name = lw->name;
    auto finish = [this, name, rows, cols, wdtype, &wa, &grp, st, orig, qw, bufs, quantizer, info, extras,
                   emit]() -> absl::Status {
      std::vector<std::vector<uint8_t>> out;
      if (quantizer) {
        LLMC_ASSIGN_OR_RETURN(out, EncodeQuantizedWeight(name, qw->data(), wdtype, wa, grp.format, quantizer->params()));
      } else {
        out = std::move(*bufs);
      }
      LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight(name, rows, cols, wdtype, wa, grp.format));
      // Relative error of the weight, ||W - Q||_F / ||W||_F (W as the model stores it).
      double num = 0, den = 0;
      for (size_t i = 0; i < qw->size(); ++i) {
        double w = RoundToDType((*orig)[i], wdtype);
        num += (w - (*qw)[i]) * (w - (*qw)[i]);
        den += w * w;
      }
      (*info)["relative_weight_error"] = den > 0 ? std::sqrt(num / den) : 0.0;
      for (const auto& e : extras) {
        if (e.suffix == "weight_g_idx") {
          if (out.size() <= plan.size()) return absl::InternalError(absl::StrCat(name, ": g_idx missing"));
          plan.push_back(e);
          continue;
        }
        const QuantArgs& in = *grp.scheme.input_activations;
        if (!st || st->tokens == 0)
          return absl::FailedPreconditionError(absl::StrCat(name, ": saw no calibration tokens; cannot set its static ",
                                                            "input scale; give more calibration data or ignore the module"));
        if (e.suffix == "input_scale") {
          LLMC_ASSIGN_OR_RETURN(float s, StaticInputScale(name, in, *st));
          out.push_back(ToDTypeBytes({s}, wdtype));
          (*info)["input_amax"] = st->amax;
        } else if (e.suffix == "input_global_scale") {
          float g = 448.0f * 6.0f / std::max(st->amax, 1.17549435e-38f);
          std::vector<uint8_t> b(4);
          std::memcpy(b.data(), &g, 4);
          out.push_back(std::move(b));
          (*info)["input_amax"] = st->amax;
        }
        plan.push_back(e);
      }
      if (out.size() != plan.size()) return absl::InternalError(absl::StrCat(name, ": output count mismatch"));
      for (size_t i = 0; i < plan.size(); ++i) LLMC_RETURN_IF_ERROR(emit(absl::StrCat(name, ".", plan[i].suffix), out[i]));
      std::lock_guard<std::mutex> lock(report_mu_);
      module_reports_[name] = *info;
      return absl::OkStatus();
    };
    if (!finisher_) return finish();
    finisher_->Submit([this, finish] {
      absl::Status s = finish();
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(report_mu_);
        if (finish_error_.ok()) finish_error_ = s;
      }
    });
    return absl::OkStatus();
  }

  // Waits for the modules of the current block to be encoded and written.
  absl::Status FinishModules() {
    if (finisher_) finisher_->Wait();
    std::lock_guard<std::mutex> lock(report_mu_);
    LLMC_RETURN_IF_ERROR(finish_error_);
    for (auto& [name, info] : module_reports_) modules_.push_back(std::move(info));
    module_reports_.clear();
    return absl::OkStatus();
  }

  void AddWarning(const std::string& w) {
    std::lock_guard<std::mutex> lock(report_mu_);
    warnings_.push_back(w);
  }

  absl::Status EmitRest(int L, const DecoderBlock& block, const EmitFn& emit) {
    const std::string p = absl::StrCat("model.layers.", L, ".");
    std::map<std::string, const std::vector<float>*> values = {
        {p + "input_layernorm.weight", &block.input_norm},
        {p + "post_attention_layernorm.weight", &block.post_attention_norm},
    };
    if (!block.q_norm.empty()) values[p + "self_attn.q_norm.weight"] = &block.q_norm;
    if (!block.k_norm.empty()) values[p + "self_attn.k_norm.weight"] = &block.k_norm;
    std::set<std::string> linear_weights;
    for (const LinearWeight* lw : block.linears()) {
      linear_weights.insert(lw->name + ".weight");
      if (!lw->bias.empty()) values[lw->name + ".bias"] = &lw->bias;
    }
    for (const auto& t : lm_->dir().tensors()) {
      const std::string& name = t.info->name;
      if (!absl::StartsWith(name, p) || linear_weights.count(name)) continue;
      if (auto it = values.find(name); it != values.end()) {
        LLMC_RETURN_IF_ERROR(emit(name, ToDTypeBytes(*it->second, t.info->dtype)));
      } else {
        LLMC_RETURN_IF_ERROR(emit(name, t.file->Data(*t.info)));
      }
    }
    return absl::OkStatus();
  }

  // --- pruning --------------------------------------------------------------------------------------------------

  bool SparsityTargets(const SparsityParams& sp, const std::string& name) const {
    bool t = false;
    for (const auto& p : sp.targets) t |= p == "Linear" || MatchesTarget(p, name);
    for (const auto& p : sp.ignore) t &= !MatchesTarget(p, name);
    return t;
  }

  SequentialOptions opt_;
  const CompressionRecipe& recipe_;
  const QuantConfig& cfg_;
  SingleRank single_;
  Communicator* comm_;
  std::unique_ptr<CausalLm> lm_;
  std::unique_ptr<BlockBackend> backend_;  // holds this rank's activations
  int64_t max_len_ = 0;
  int64_t num_tokens_ = 0, num_samples_ = 0;
  DType dtype_ = DType::kBF16;
  std::vector<std::string> warnings_;
  std::map<std::string, json> module_info_;
  json modules_ = json::array(), blocks_ = json::array();
  int modules_done_ = 0;
  // The next block, loading on the host while the GPU runs this one.
  std::future<absl::StatusOr<std::unique_ptr<DecoderBlock>>> prefetch_;
  int prefetch_layer_ = -1;
  // Encodes and writes solved modules beside the solves (backends that run off the host; else each module is
  // finished inline).
  std::unique_ptr<ThreadPool> finisher_;
  std::mutex report_mu_;
  absl::Status finish_error_;
  std::map<std::string, json> module_reports_;
  double t_start_ = 0, seconds_ = 0;
};

absl::Status ResolveRecipe(CompressionRecipe* recipe) {
  if (!recipe->gptq || !recipe->quant) return absl::OkStatus();
  QuantConfig& cfg = *recipe->quant;
  std::vector<std::pair<std::string, QuantScheme>> groups;
  for (const auto& g : cfg.groups()) {
    QuantScheme s = g.scheme;
    if (s.weights) {
      LLMC_ASSIGN_OR_RETURN(ResolvedActOrder ro, ResolveActOrder(g.name, recipe->gptq->actorder, *s.weights));
      s.weights->actorder = ro.config_value;
    }
    groups.emplace_back(g.name, std::move(s));
  }
  LLMC_ASSIGN_OR_RETURN(QuantConfig next, QuantConfig::Create(std::move(groups), cfg.ignore()));
  next.preset_name = cfg.preset_name;
  next.kv_cache_scheme = cfg.kv_cache_scheme;
  cfg = std::move(next);
  return absl::OkStatus();
}

SequentialSolver::SequentialSolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SequentialSolver::~SequentialSolver() = default;

absl::StatusOr<std::unique_ptr<SequentialSolver>> SequentialSolver::Create(const SequentialOptions& options,
                                                                           const CompressionRecipe& recipe,
                                                                           const QuantConfig& config) {
  auto impl = std::make_unique<Impl>(options, recipe, config);
  LLMC_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<SequentialSolver>(new SequentialSolver(std::move(impl)));
}

absl::StatusOr<std::vector<OutputTensor>> SequentialSolver::ExtraModuleTensors(const std::string& module, int group,
                                                                             int64_t rows, int64_t cols,
                                                                             DType dtype) const {
  return impl_->Extras(module, group, rows, cols, dtype);
}
std::vector<TensorSpec> SequentialSolver::ExtraTensors() const { return impl_->ExtraTensors(); }
absl::Status SequentialSolver::Run(const SolverIo& io) { return impl_->Run(io); }
json SequentialSolver::Report() const { return impl_->Report(); }
const std::vector<std::string>& SequentialSolver::warnings() const { return impl_->warnings(); }

}  // namespace llmc
