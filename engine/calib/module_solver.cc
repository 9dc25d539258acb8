#include "engine/calib/module_solver.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/algo/gptq.h"
#include "engine/quant/mse_grid.h"
#include "engine/quant/group_quantizer.h"
#include "engine/tensor/model_dtype.h"

namespace llmc {

using json = nlohmann::json;

ModuleSolver::ModuleSolver(const CompressionRecipe& recipe, const QuantConfig& config, BlockBackend* backend,
                           DType model_dtype, int threads, bool background)
    : recipe_(recipe), cfg_(config), backend_(backend), dtype_(model_dtype), threads_(threads) {
  const int hw = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (background) pool_ = std::make_unique<ThreadPool>(std::max(2, hw));
  finish_threads_ = std::clamp(hw / 4, 1, 8);
}

ModuleSolver::~ModuleSolver() { Wait(); }

absl::StatusOr<std::vector<OutputTensor>> ModuleSolver::ExtraTensors(const std::string& module, int group,
                                                                     int64_t cols, DType dtype) const {
  std::vector<OutputTensor> out;
  const ConfigGroup& g = cfg_.groups()[group];
  if (recipe_.gptq && g.scheme.weights) {
    LLMC_ASSIGN_OR_RETURN(ResolvedActOrder ro, ResolveActOrder(module, recipe_.gptq->actorder, *g.scheme.weights));
    if (ro.order == ActOrder::kGroup) out.push_back({"weight_g_idx", DType::kI32, {cols}});
  }
  const auto& in = g.scheme.input_activations;
  if (in && in->dynamic == "false") out.push_back({"input_scale", dtype, {1}});
  if (in && in->dynamic == "local") out.push_back({"input_global_scale", DType::kF32, {1}});
  return out;
}

absl::StatusOr<float> ModuleSolver::StaticInputScale(const std::string& module, const QuantArgs& in,
                                                     const GroupStats& st) const {
  std::string fmt = in.type == QuantType::kFloat ? "float-quantized" : "int-quantized";
  QuantArgs a = in;
  a.dynamic = "false";
  a.observer = "minmax";
  LLMC_ASSIGN_OR_RETURN(GroupQuantizer q, GroupQuantizer::Create(module, 1, 2, dtype_, a, fmt));
  float v[2] = {st.min, st.max};
  LLMC_RETURN_IF_ERROR(q.Observe(v, 2, 0, 2, 0));
  return q.params().scale[0];
}

absl::Status ModuleSolver::Solve(LinearWeight* lw, int group, DType wdtype, std::optional<float> gs,
                                 const GroupStats* st, const std::vector<uint8_t>* keep, const json& module_info,
                                 const EmitFn& emit, std::vector<std::string>* warnings) {
  const ConfigGroup& grp = cfg_.groups()[group];
  const QuantArgs& wa = *grp.scheme.weights;
  const int64_t rows = lw->out_features, cols = lw->in_features;
  double t0 = NowSeconds();
  auto info = std::make_shared<json>(module_info);
  (*info)["name"] = lw->name;
  auto orig = std::make_shared<std::vector<float>>(std::move(lw->weight));
  // imatrix_mse: E[x_c^2] of each input channel over its mean (the library's normalization), from the Hessian's
  // diagonal (sum x_c^2; the token count cancels).
  std::vector<float> importance;
  if (IsImatrixObserver(wa)) {
    if (st == nullptr || st->hessian == nullptr || st->tokens == 0)
      return absl::FailedPreconditionError(absl::StrCat(
          lw->name, ": the imatrix_mse observer needs calibration tokens through this module, and none reached it; ",
          "give more calibration data or use observer mse"));
    std::vector<float> d = st->hessian->DiagonalSum();
    double mean = 0;
    for (float v : d) mean += v;
    mean /= static_cast<double>(d.size());
    importance.resize(d.size());
    for (size_t c = 0; c < d.size(); ++c)
      importance[c] = static_cast<float>(d[c] / (mean + 1.17549435e-38));
    (*info)["observer"] = "imatrix_mse";
  }
  std::shared_ptr<std::vector<std::vector<uint8_t>>> bufs;
  std::shared_ptr<std::vector<float>> qw;  // the compressed values, in the model dtype
  std::shared_ptr<GroupQuantizer> quantizer;
  if (recipe_.gptq) {
    LLMC_ASSIGN_OR_RETURN(GroupQuantizer q, GroupQuantizer::Create(lw->name, rows, cols, wdtype, wa, grp.format, gs));
    if (!importance.empty()) q.SetImportance(importance);
    GptqOptions go;
    go.block_size = recipe_.gptq->block_size;
    go.dampening_frac = recipe_.gptq->dampening_frac;
    go.actorder = recipe_.gptq->actorder;
    go.weight_args = &wa;
    go.keep_mask = keep;
    go.num_threads = threads_;
    std::vector<float> storage = TakeBuffer(static_cast<size_t>(rows * cols));
    go.result_storage = &storage;
    // A module no calibration token reached (a mixture-of-experts expert no token was routed to, with
    // moe_calibrate_all_experts off) has no Hessian: GPTQ with an identity Hessian, which is round-to-nearest with the
    // weight-only observer's scales, keeps every output tensor (g_idx included) as GPTQ writes it.
    const bool no_tokens = st == nullptr || st->tokens == 0;
    absl::StatusOr<GptqResult> r;
    if (no_tokens) {
      std::vector<float> identity(static_cast<size_t>(cols * cols), 0.0f);
      for (int64_t c = 0; c < cols; ++c) identity[c * cols + c] = 1.0f;
      r = GptqQuantize(lw->name, orig->data(), rows, cols, identity.data(), 1, &q, go);
      warnings->push_back(absl::StrCat(lw->name, ": no calibration token was routed to this expert; quantized with ",
                                       "round-to-nearest (weight-only observer) instead of GPTQ"));
      (*info)["no_calibration_tokens"] = true;
    } else {
      r = backend_->Gptq(lw->name, orig->data(), rows, cols, st, &q, go);
    }
    if (!r.ok()) return r.status();
    if (r->fell_back_to_rtn) warnings->push_back(r->warning);
    (*info)["algorithm"] = no_tokens ? "rtn" : "gptq";
    (*info)["gptq_loss"] = r->loss;
    (*info)["fell_back_to_rtn"] = r->fell_back_to_rtn;
    if (r->dead_columns) (*info)["dead_columns"] = r->dead_columns;
    qw = std::make_shared<std::vector<float>>(std::move(r->weight));  // FakeQuant values: already in the dtype
    quantizer = std::make_shared<GroupQuantizer>(std::move(q));
  } else {
    auto bytes = ToDTypeBytes(*orig, wdtype);
    WeightView view{lw->name, bytes.data(), wdtype, rows, cols, importance.empty() ? nullptr : importance.data()};
    LLMC_ASSIGN_OR_RETURN(auto b, QuantizeWeight(view, wa, grp.format, gs));
    bufs = std::make_shared<std::vector<std::vector<uint8_t>>>(std::move(b));
    LLMC_ASSIGN_OR_RETURN(auto deq, DequantizeWeight(rows, cols, wdtype, wa, grp.format, *bufs));
    for (float& v : deq) v = RoundToDType(v, wdtype);
    qw = std::make_shared<std::vector<float>>(std::move(deq));
    (*info)["algorithm"] = "rtn";
  }
  lw->weight = TakeBuffer(qw->size());  // the block propagates with the compressed values
  ParallelCopy(lw->weight.data(), qw->data(), qw->size() * sizeof(float), threads_);
  (*info)["solve_seconds"] = NowSeconds() - t0;
  // Encoding, the report's error and the writes run beside the next solves (and the propagation).
  LLMC_ASSIGN_OR_RETURN(auto extras, ExtraTensors(lw->name, group, cols, wdtype));
  const std::string name = lw->name;
  int64_t batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch = batch_;
  }
  auto finish = [this, batch, name, rows, cols, wdtype, &wa, &grp, st, orig, qw, bufs, quantizer, info, extras,
                 emit]() -> absl::Status {
    // A large module (the last ones of a block are the MLP's, and the block's end waits for them) is encoded and
    // measured on several threads; the pool's other threads finish the block's smaller modules meanwhile.
    const int inner = rows * cols >= (int64_t{1} << 24) ? finish_threads_ : 1;
    std::vector<std::vector<uint8_t>> out;
    if (quantizer) {
      LLMC_ASSIGN_OR_RETURN(out, EncodeQuantizedWeight(name, qw->data(), wdtype, wa, grp.format, quantizer->params(),
                                                       inner));
    } else {
      out = std::move(*bufs);
    }
    LLMC_ASSIGN_OR_RETURN(auto plan, PlanQuantizedWeight(name, rows, cols, wdtype, wa, grp.format));
    // Relative error of the weight, ||W - Q||_F / ||W||_F (W as the model stores it), summed in fixed pieces so
    // the figure does not depend on the thread count.
    constexpr size_t kPiece = size_t{1} << 20;
    const size_t n = qw->size(), pieces = (n + kPiece - 1) / kPiece;
    std::vector<double> nums(pieces), dens(pieces);
    (void)ParallelFor(static_cast<int64_t>(pieces), inner, [&](int64_t p) {
      double a = 0, b = 0;
      for (size_t i = static_cast<size_t>(p) * kPiece; i < std::min(n, (static_cast<size_t>(p) + 1) * kPiece); ++i) {
        double w = RoundToDType((*orig)[i], wdtype);
        a += (w - (*qw)[i]) * (w - (*qw)[i]);
        b += w * w;
      }
      nums[p] = a;
      dens[p] = b;
      return absl::OkStatus();
    });
    double num = 0, den = 0;
    for (size_t p = 0; p < pieces; ++p) {
      num += nums[p];
      den += dens[p];
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
    ReturnBuffer(std::move(*orig));
    ReturnBuffer(std::move(*qw));
    std::lock_guard<std::mutex> lock(mu_);
    reports_[batch][name] = *info;
    return absl::OkStatus();
  };
  if (!pool_) return finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++writing_[batch];
  }
  pool_->Submit([this, batch, finish] {
    absl::Status s = finish();
    std::lock_guard<std::mutex> lock(mu_);
    if (!s.ok() && error_.ok()) error_ = s;
    if (--writing_[batch] == 0) writing_.erase(batch);
    written_.notify_all();
  });
  return absl::OkStatus();
}

std::vector<float> ModuleSolver::TakeBuffer(size_t n) {
  std::vector<float> v;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < spare_.size(); ++i) {
      if (spare_[i].size() != n) continue;
      v.swap(spare_[i]);
      spare_.erase(spare_.begin() + static_cast<std::ptrdiff_t>(i));
      spare_bytes_ -= n * sizeof(float);
      break;
    }
  }
  v.resize(n);
  return v;
}

void ModuleSolver::ReturnBuffer(std::vector<float> v) {
  const size_t bytes = v.size() * sizeof(float);
  if (bytes == 0 || v.capacity() != v.size()) return;  // only exact-size buffers are handed out again
  std::lock_guard<std::mutex> lock(mu_);
  if (spare_bytes_ + bytes > kMaxSpareBytes) return;
  spare_bytes_ += bytes;
  spare_.push_back(std::move(v));
}

void ModuleSolver::Wait() {
  if (pool_) pool_->Wait();
}

absl::Status ModuleSolver::Finish(json* modules) {
  Wait();
  std::lock_guard<std::mutex> lock(mu_);
  LLMC_RETURN_IF_ERROR(error_);
  for (auto& [batch, reports] : reports_)
    for (auto& [name, info] : reports) modules->push_back(std::move(info));
  reports_.clear();
  return absl::OkStatus();
}

int64_t ModuleSolver::Seal() {
  std::lock_guard<std::mutex> lock(mu_);
  return batch_++;
}

absl::Status ModuleSolver::Finish(int64_t batch, json* modules) {
  std::unique_lock<std::mutex> lock(mu_);
  written_.wait(lock, [&] { return writing_.count(batch) == 0; });
  LLMC_RETURN_IF_ERROR(error_);
  auto it = reports_.find(batch);
  if (it == reports_.end()) return absl::OkStatus();
  for (auto& [name, info] : it->second) modules->push_back(std::move(info));
  reports_.erase(it);
  return absl::OkStatus();
}

}  // namespace llmc
