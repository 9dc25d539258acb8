// The calibrated pipeline end to end on the fixture model (../shared): every recipe writes a complete
// checkpoint that the runtime loads back, GPTQ beats RTN on the calibration objective, and errors are clear.
#include "engine/calib/sequential_solver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cblas.h>
#include <openssl/evp.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/format/job_recipe.h"
#include "engine/pipeline/run_job.h"
#include "tests/support/synthetic_model.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/support/test_paths.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::HaveShared;
using testing::Shared;
using testing::TempDir;

constexpr char kFixture[] = "models/llmc-fixture-llama";

class SequentialSolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveShared(kFixture)) GTEST_SKIP() << "needs ../shared/" << kFixture;
    model_ = Shared(kFixture);
    dataset_ = Shared("data/calibration.txt");
  }

  // Compresses the fixture with `recipe_yaml` into tmp/name; returns the summary.
  absl::StatusOr<CompressSummary> Compress(const std::string& recipe_yaml, const std::string& name, int samples = 8,
                                           int seq_len = 128, const std::string& model = "",
                                           std::optional<bool> background_writes = std::nullopt) {
    auto recipe = ParseCompressionRecipe(recipe_yaml, "test.yaml");
    if (!recipe.ok()) return recipe.status();
    if (auto s = ResolveRecipe(&*recipe); !s.ok()) return s;
    recipes_.push_back(std::make_unique<CompressionRecipe>(std::move(*recipe)));
    const CompressionRecipe& r = *recipes_.back();
    static const QuantConfig kEmpty;
    const QuantConfig& cfg = r.quant ? *r.quant : kEmpty;
    SequentialOptions so;
    so.model_path = model.empty() ? model_ : model;
    so.background_writes = background_writes;
    so.dataset = dataset_;
    so.calibration.num_samples = samples;
    so.calibration.seq_len = seq_len;
    so.threads = 2;
    auto solver = SequentialSolver::Create(so, r, cfg);
    if (!solver.ok()) return solver.status();
    CompressOptions o;
    o.model_path = so.model_path;
    o.output_path = tmp_.path() + "/" + name;
    o.solver = solver->get();
    o.recipe_yaml = r.yaml;
    o.method = r.Describe();
    o.threads = 2;
    return RunCompress(o, cfg);
  }

  double Perplexity(const std::string& dir, int64_t windows = 8) {
    auto lm = CausalLm::Open(dir);
    EXPECT_TRUE(lm.ok()) << lm.status();
    auto tok = Tokenizer::FromModelDir(model_);
    auto text = ReadTextFile(Shared("data/eval.txt"), 1 << 30);
    auto ids = (*tok)->Encode(text->substr(0, 200000), false);
    PerplexityOptions po;
    po.max_windows = windows;
    auto r = ComputePerplexity(**lm, *ids, po);
    EXPECT_TRUE(r.ok()) << r.status();
    return r->perplexity;
  }

  std::string model_, dataset_;
  TempDir tmp_;
  std::vector<std::unique_ptr<CompressionRecipe>> recipes_;
};

TEST_F(SequentialSolverTest, GptqW4A16WritesALoadableCheckpointWithAReport) {
  auto s = Compress("GPTQModifier: {scheme: W4A16, ignore: [lm_head], actorder: group}\n", "gptq");
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string out = tmp_.path() + "/gptq";
  auto dir = ModelDir::Open(out);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_NE(dir->get()->Find("model.layers.0.self_attn.q_proj.weight_g_idx"), nullptr);
  EXPECT_NE(dir->get()->Find("model.layers.5.mlp.down_proj.weight_packed"), nullptr);
  EXPECT_EQ(dir->get()->config_json()["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"], "group");
  // The report: one entry per quantized module with GPTQ's loss, one per block with timings.
  std::ifstream f(out + "/compression_report.json");
  nlohmann::json rep = nlohmann::json::parse(f);
  EXPECT_EQ(rep["method"], "GPTQ W4A16");
  ASSERT_EQ(rep["solve"]["modules"].size(), 6u * 7u);
  for (const auto& m : rep["solve"]["modules"]) {
    EXPECT_EQ(m["algorithm"], "gptq");
    EXPECT_GT(m["gptq_loss"].get<double>(), 0.0);
    EXPECT_GT(m["relative_weight_error"].get<double>(), 0.0);
    EXPECT_LT(m["relative_weight_error"].get<double>(), 0.5);
  }
  EXPECT_EQ(rep["solve"]["blocks"].size(), 6u);
  for (const auto& b : rep["solve"]["blocks"])  // every phase of every block, timed
    for (const char* phase : {"load_s", "calibrate_s", "solve_s", "propagate_s", "finish_s", "commit_s", "commit_wait_s"}) {
      ASSERT_TRUE(b.contains(phase)) << phase << " in block " << b.dump();
      EXPECT_GE(b[phase].get<double>(), 0.0) << phase;
    }
  EXPECT_EQ(rep["solve"]["calibration"]["samples"], 8);
  for (const char* phase : {"open_s", "tokenize_s", "embed_s"}) {  // the setup before the first block, timed
    ASSERT_TRUE(rep["solve"]["setup"].contains(phase)) << phase;
    EXPECT_GE(rep["solve"]["setup"][phase].get<double>(), 0.0) << phase;
  }
  EXPECT_GT(rep["solve"]["setup"]["tokenize_s"].get<double>(), 0.0);
  // The runtime reads it back and it is still a language model.
  // (Reading weight_g_idx wrongly costs about 35% here.)
  double ppl = Perplexity(out);
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 1.15 * Perplexity(model_));
}

TEST_F(SequentialSolverTest, GptqBeatsRtnOnHeldOutText) {
  auto g = Compress("GPTQModifier: {scheme: W4A16, ignore: [lm_head]}\n", "gptq", 32, 256);
  ASSERT_TRUE(g.ok()) << g.status();
  auto r = Compress("QuantizationModifier: {scheme: W4A16, ignore: [lm_head], kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}}\n", "rtn", 4, 64);
  ASSERT_TRUE(r.ok()) << r.status();
  double base = Perplexity(model_, 16), gptq = Perplexity(tmp_.path() + "/gptq", 16),
         rtn = Perplexity(tmp_.path() + "/rtn", 16);
  EXPECT_LT(gptq, rtn) << "bf16 " << base;
  EXPECT_GT(gptq, base * 0.99);
  // kv cache scales were written for every layer.
  auto dir = ModelDir::Open(tmp_.path() + "/rtn");
  ASSERT_TRUE(dir.ok());
  for (int l = 0; l < 6; ++l)
    EXPECT_NE(dir->get()->Find("model.layers." + std::to_string(l) + ".self_attn.k_scale"), nullptr) << l;
  EXPECT_EQ(dir->get()->config_json()["quantization_config"]["kv_cache_scheme"]["type"], "float");
}

TEST_F(SequentialSolverTest, StaticFp8AndNvfp4WriteActivationScales) {
  auto fp8 = Compress("QuantizationModifier: {scheme: FP8, ignore: [lm_head]}\n", "fp8", 4, 64);
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  auto d = ModelDir::Open(tmp_.path() + "/fp8");
  ASSERT_TRUE(d.ok());
  const ModelTensor* s = d->get()->Find("model.layers.2.mlp.down_proj.input_scale");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->info->dtype, DType::kBF16);
  float v = LoadAsFloat(s->file->Data(*s->info).data(), DType::kBF16, 0);
  EXPECT_GT(v, 0.0f);
  auto nv = Compress("GPTQModifier: {scheme: NVFP4, ignore: [lm_head]}\n", "nvfp4", 4, 64);
  ASSERT_TRUE(nv.ok()) << nv.status();
  auto n = ModelDir::Open(tmp_.path() + "/nvfp4");
  ASSERT_TRUE(n.ok());
  EXPECT_NE(n->get()->Find("model.layers.0.self_attn.q_proj.input_global_scale"), nullptr);
  // q/k/v share one weight global scale.
  auto gs = [&](const char* m) {
    const ModelTensor* t = n->get()->Find(std::string("model.layers.0.self_attn.") + m + ".weight_global_scale");
    return LoadAsFloat(t->file->Data(*t->info).data(), DType::kF32, 0);
  };
  EXPECT_EQ(gs("q_proj"), gs("k_proj"));
  EXPECT_EQ(gs("q_proj"), gs("v_proj"));
}

TEST_F(SequentialSolverTest, SmoothQuantGptqW8A8AndPruning) {
  auto sq = Compress(
      "SmoothQuantModifier: {smoothing_strength: 0.8}\nGPTQModifier: {scheme: W8A8, ignore: [lm_head]}\n", "w8a8", 8, 128);
  ASSERT_TRUE(sq.ok()) << sq.status();
  double base = Perplexity(model_), w8 = Perplexity(tmp_.path() + "/w8a8");
  EXPECT_LT(w8, base * 1.05);
  // The norms were rescaled (SmoothQuant folds 1/s into them).
  auto d = ModelDir::Open(tmp_.path() + "/w8a8");
  auto o = ModelDir::Open(model_);
  const ModelTensor* a = d->get()->Find("model.layers.1.input_layernorm.weight");
  const ModelTensor* b = o->get()->Find("model.layers.1.input_layernorm.weight");
  ASSERT_TRUE(a && b);
  EXPECT_NE(std::vector<uint8_t>(a->file->Data(*a->info).begin(), a->file->Data(*a->info).end()),
            std::vector<uint8_t>(b->file->Data(*b->info).begin(), b->file->Data(*b->info).end()));

  for (const char* mod : {"SparseGPTModifier", "WandaPruningModifier"}) {
    std::string name = std::string("sparse_") + mod;
    auto p = Compress(std::string(mod) + ": {sparsity: 0.5, mask_structure: '2:4', ignore: [lm_head]}\n", name, 8, 128);
    ASSERT_TRUE(p.ok()) << p.status();
    auto pd = ModelDir::Open(tmp_.path() + "/" + name);
    ASSERT_TRUE(pd.ok());
    EXPECT_FALSE(pd->get()->config_json().contains("quantization_config"));
    const ModelTensor* w = pd->get()->Find("model.layers.3.mlp.up_proj.weight");
    ASSERT_NE(w, nullptr);
    auto bytes = w->file->Data(*w->info);
    const int64_t cols = w->info->shape[1];
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t c = 0; c < cols; c += 4) {
        int zeros = 0;
        for (int k = 0; k < 4; ++k) zeros += LoadAsFloat(bytes.data(), DType::kBF16, r * cols + c + k) == 0.0f;
        ASSERT_GE(zeros, 2) << mod << " row " << r << " col " << c;
      }
  }
}

TEST_F(SequentialSolverTest, AwqScalesTheNormsAndRecordsItsSearch) {
  auto a = Compress("AWQModifier: {scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 5}\n", "awq", 4, 128);
  ASSERT_TRUE(a.ok()) << a.status();
  std::ifstream f(tmp_.path() + "/awq/compression_report.json");
  nlohmann::json rep = nlohmann::json::parse(f);
  // Per block: q/k/v from input_layernorm, gate/up from post_attention_layernorm, down from up_proj (v -> o is
  // skipped: the fixture uses grouped-query attention, so v_proj's outputs do not match o_proj's inputs).
  ASSERT_EQ(rep["solve"]["blocks"].size(), 6u);
  for (const auto& b : rep["solve"]["blocks"]) {
    ASSERT_EQ(b["awq"].size(), 3u);
    for (const auto& m : b["awq"]) {
      EXPECT_GE(m["ratio"].get<double>(), 0.0);
      EXPECT_LE(m["ratio"].get<double>(), 1.0);
    }
  }
  EXPECT_LT(Perplexity(tmp_.path() + "/awq"), 1.2 * Perplexity(model_));
}

// A job interrupted after block 2 and resumed at block 3 writes exactly the bytes of an uninterrupted run.
void ExpectResumeIsByteIdentical(const std::string& model, const std::string& dataset, const std::string& tmp,
                                 const std::string& recipe) {
  JobSpec spec;
  spec.model_path = model;
  spec.recipe_yaml = recipe;
  spec.dataset = dataset;
  spec.num_samples = 4;
  spec.seq_len = 64;
  spec.threads = 2;
  spec.max_shard_size = 4'000'000;  // several shards
  spec.output_path = tmp + "/whole";
  auto whole = RunJob(spec);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_GT(whole->shards, 2);

  spec.output_path = tmp + "/resumed";
  std::atomic<bool> cancel{false};
  std::vector<int> done;
  JobControl c;
  c.staging_dir = tmp + "/staging";
  c.keep_staging = true;
  c.cancel = &cancel;
  c.on_block_done = [&](int layer) {
    done.push_back(layer);
    if (layer == 2) cancel = true;
  };
  auto first = RunJob(spec, c);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(done, (std::vector<int>{0, 1, 2}));
  ASSERT_TRUE(fs::exists(c.staging_dir));
  EXPECT_FALSE(fs::exists(spec.output_path));

  cancel = false;
  done.clear();
  c.resume_from_block = 3;
  auto second = RunJob(spec, c);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(done, (std::vector<int>{3, 4, 5}));
  EXPECT_FALSE(fs::exists(c.staging_dir));
  for (const auto& e : fs::directory_iterator(tmp + "/whole")) {
    const std::string name = e.path().filename().string();
    if (name == "compression_report.json") continue;  // timings differ
    std::ifstream a(e.path(), std::ios::binary), b(spec.output_path + "/" + name, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_TRUE(sa == sb) << name << " differs after resume";
  }
}

TEST_F(SequentialSolverTest, ResumeIsByteIdentical) {
  ExpectResumeIsByteIdentical(
      model_, dataset_, tmp_.path(),
      "SmoothQuantModifier: {smoothing_strength: 0.5}\nGPTQModifier: {scheme: W4A16, ignore: [lm_head], actorder: group}\n");
}

// AWQ with RTN: the resumed run propagates the stored (scaled, quantized) blocks and writes the same bytes.
TEST_F(SequentialSolverTest, ResumeAfterAwqWithRtnIsByteIdentical) {
  ExpectResumeIsByteIdentical(model_, dataset_, tmp_.path(),
                              "AWQModifier: {scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 3}\n");
}

// A finished block's durability point (on_block_done, after its output is flushed) runs beside the next block:
// on_block_done(L) sees block L + 1 start before it returns (a commit made inline would wait here until the
// deadline and fail), the blocks are still recorded once each and in order, and each block's report has the
// commit's duration.
TEST_F(SequentialSolverTest, ABlocksCommitRunsBesideTheNextBlock) {
  JobSpec spec;
  spec.model_path = model_;
  spec.recipe_yaml = "GPTQModifier: {scheme: W4A16, ignore: [lm_head]}\n";
  spec.dataset = dataset_;
  spec.num_samples = 4;
  spec.seq_len = 64;
  spec.threads = 2;
  spec.output_path = tmp_.path() + "/overlap";
  std::mutex mu;
  std::condition_variable cv;
  int started = -1;  // the last block whose load was reported
  std::vector<int> done;
  std::vector<bool> overlapped;
  JobControl c;
  c.on_progress = [&](const CompressProgress& p) {
    if (p.blocks_total == 0 || p.stage.empty()) return;
    std::lock_guard<std::mutex> lock(mu);
    started = std::max(started, p.blocks_done);
    cv.notify_all();
  };
  c.on_block_done = [&](int layer) {
    std::unique_lock<std::mutex> lock(mu);
    done.push_back(layer);
    if (layer + 1 < 6)
      overlapped.push_back(cv.wait_for(lock, std::chrono::seconds(20), [&] { return started > layer; }));
  };
  auto s = RunJob(spec, c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(done, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(overlapped, std::vector<bool>(5, true));
  std::ifstream f(spec.output_path + "/compression_report.json");
  nlohmann::json rep = nlohmann::json::parse(f);
  ASSERT_EQ(rep["solve"]["blocks"].size(), 6u);
  for (const auto& b : rep["solve"]["blocks"]) {
    ASSERT_TRUE(b.contains("commit_s")) << b.dump();
    EXPECT_GE(b["commit_s"].get<double>(), 0.0);
  }
}

// Modules written on the host pool, a block's last ones beside the next block (the path of the GPU backend),
// give the bytes and the report entries of modules written inline: GPTQ with g_idx, and static FP8 input and kv
// scales, whose ranges the deferred writes read after their block has gone.
TEST_F(SequentialSolverTest, BackgroundWritesGiveTheSameBytes) {
  for (const char* recipe : {"GPTQModifier: {scheme: W4A16, ignore: [lm_head], actorder: group}\n",
                             "QuantizationModifier: {scheme: FP8, ignore: [lm_head], kv_cache_scheme: {num_bits: 8, "
                             "type: float, strategy: tensor, dynamic: false, symmetric: true}}\n"}) {
    auto inline_ = Compress(recipe, "inline", 4, 64, "", false);
    auto pooled = Compress(recipe, "pooled", 4, 64, "", true);
    ASSERT_TRUE(inline_.ok() && pooled.ok()) << inline_.status() << " " << pooled.status();
    int files = 0;
    for (const auto& e : fs::directory_iterator(tmp_.path() + "/inline")) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() != ".safetensors") continue;
      std::ifstream a(e.path(), std::ios::binary), b(tmp_.path() + "/pooled/" + name, std::ios::binary);
      std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
      EXPECT_TRUE(sa == sb) << name << " differs with background writes: " << recipe;
      ++files;
    }
    EXPECT_GT(files, 0);
    auto modules = [&](const std::string& dir) {
      std::ifstream f(dir + "/compression_report.json");
      const nlohmann::json rep = nlohmann::json::parse(f);
      std::vector<std::string> names;
      for (const auto& m : rep["solve"]["modules"]) names.push_back(m["name"]);
      return names;
    };
    const std::vector<std::string> a = modules(tmp_.path() + "/inline"), b = modules(tmp_.path() + "/pooled");
    EXPECT_EQ(a.size(), 6u * 7u);
    EXPECT_EQ(a, b) << recipe;
    fs::remove_all(tmp_.path() + "/inline");
    fs::remove_all(tmp_.path() + "/pooled");
  }
}

// sha256 of every safetensors file under `dir`, by file name (none when hashing fails).
std::map<std::string, std::string> SafetensorsSha256(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), {});
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr) != 1) return {};
    std::string hex;
    for (unsigned int i = 0; i < len; ++i) hex += absl::StrFormat("%02x", md[i]);
    out[e.path().filename().string()] = hex;
  }
  return out;
}

// The exact bytes of calibrated outputs of a small synthetic Llama (2 blocks, hidden 256, the fixture's
// tokenizer), one run per algorithm path: any change to the pipeline's or a solver's arithmetic shows here.
// The values depend on OpenBLAS's kernels (summation order in sgemm/ssyrk), which it picks per CPU: they were
// recorded with the cores named below, AVX-512 (SkylakeX) and AVX2 (Haswell, also what OpenBLAS picks on AMD
// Zen), and do not depend on the thread count; with another core the test skips, saying so
// (OPENBLAS_CORETYPE=Haswell runs it on any AVX2 CPU).
TEST_F(SequentialSolverTest, CalibratedOutputBytesArePinned) {
  const std::string core = openblas_get_corename();
  const int which = core == "SkylakeX" ? 0 : core == "Haswell" ? 1 : -1;
  if (which < 0) GTEST_SKIP() << "hashes recorded with OpenBLAS cores SkylakeX and Haswell, this one is " << core;
  const std::string model = tmp_.path() + "/synthetic";
  SyntheticLlamaShape shape;  // hidden 256, intermediate 512, 2 layers, 4 heads, 2 kv heads
  shape.vocab = 8192;         // the fixture tokenizer's
  ASSERT_TRUE(WriteSyntheticLlama(model, shape, DType::kBF16, 17, 1u << 30).ok());
  fs::copy_file(model_ + "/tokenizer.json", model + "/tokenizer.json");
  fs::copy_file(model_ + "/tokenizer_config.json", model + "/tokenizer_config.json");
  struct Run {
    const char* name;
    const char* recipe;
    const char* sha256[2];  // of model.safetensors, by core (SkylakeX, Haswell)
  };
  const std::vector<Run> runs = {
      {"gptq", "GPTQModifier: {scheme: W4A16, ignore: [lm_head], actorder: group}\n",
       {"9fd09b3a5dc6fe70d2ee5dc0588f15f9aa7c3384da1df9631451ece1772360df", "d68c51f07a9db0ae8a5937b83ed5aacd4743e22a0bf7edc81d3879311cf2915a"}},
      {"awq", "AWQModifier: {scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 5}\n",
       {"97ddc9034e535578159c084b475b59ee8eb17fc19bc52cdfda767ba7ce7e247f", "97ddc9034e535578159c084b475b59ee8eb17fc19bc52cdfda767ba7ce7e247f"}},
      {"sq_gptq", "SmoothQuantModifier: {smoothing_strength: 0.8}\nGPTQModifier: {scheme: W8A8, ignore: [lm_head]}\n",
       {"67d1c4eb180e5d2d63e4a9187d98b1f90b3e439491947f414fcdbbd0073c7806", "add78a54850f03f1428f853ae3563251733c3740864c3fc8d387701eea4b4a74"}},
      {"sparsegpt", "SparseGPTModifier: {sparsity: 0.5, mask_structure: '2:4', ignore: [lm_head]}\n",
       {"369a69090179f41c383703e16aa23cb6f6fd9afd60d4634d66456325c1620030", "868750e453312e75bc405789ccd70038e0a95905c84ec8867aa8a7bd8d3553fd"}},
      {"sparsegpt_gptq",
       "SparseGPTModifier: {sparsity: 0.5, ignore: [lm_head]}\nGPTQModifier: {scheme: W4A16, ignore: [lm_head]}\n",
       {"1889a438b9089da921bbcf291e6b6cba10984a8ab52a5b968304d64593f0e263", "ce31a47244be690ee06b2dee730c686d694ed81061652757a0209c59c190e835"}},
      {"wanda", "WandaPruningModifier: {sparsity: 0.5, ignore: [lm_head]}\n",
       {"87ee590b8d9b9c92228f2f124631b24102e8dad1cd700c718b7ceeeb8b13dc04", "87ee590b8d9b9c92228f2f124631b24102e8dad1cd700c718b7ceeeb8b13dc04"}},
      {"fp8_static_kv",
       "QuantizationModifier: {scheme: FP8, ignore: [lm_head], kv_cache_scheme: {num_bits: 8, type: float, "
       "strategy: tensor, dynamic: false, symmetric: true}}\n",
       {"a824ab543d8376de816efc1c6fe251053b54f6cc7193e48a673b89da1d2c0599", "a824ab543d8376de816efc1c6fe251053b54f6cc7193e48a673b89da1d2c0599"}},
      {"gptq_nvfp4", "GPTQModifier: {scheme: NVFP4, ignore: [lm_head]}\n",
       {"1273e91cf65a732147c9f2eb8786d4b6925649a7a19fa598713fb36cca30f5c1", "78cea739687c9aeb914ccbdd346b855aea35917d36641055dbf6deb7c87c7bcb"}},
  };
  for (const Run& r : runs) {
    auto s = Compress(r.recipe, r.name, 8, 64, model);
    ASSERT_TRUE(s.ok()) << r.name << ": " << s.status();
    const auto got = SafetensorsSha256(tmp_.path() + "/" + r.name);
    ASSERT_FALSE(got.empty()) << r.name;
    std::string listing;
    for (const auto& [file, hex] : got) listing += absl::StrCat(file, " ", hex, "; ");
    const std::map<std::string, std::string> want = {{"model.safetensors", r.sha256[which]}};
    EXPECT_EQ(got, want) << r.name << " wrote " << listing;
  }
}

// A block whose output is not finite with the compressed weights fails the job naming the block, and nothing is
// written. The cause here: an ignored down_proj (so no weight check sees it) whose first row is the largest finite
// bf16 value; its dot products with the MLP's activations overflow to Inf.
TEST_F(SequentialSolverTest, NonFiniteBlockOutputFailsNamingTheBlock) {
  const std::string model = tmp_.path() + "/model";
  fs::copy(model_, model, fs::copy_options::recursive);
  auto lm = CausalLm::Open(model);
  ASSERT_TRUE(lm.ok()) << lm.status();
  const int64_t row = (*lm)->spec().intermediate_size;
  lm->reset();
  ASSERT_TRUE(SetTensorElement(model, "model.layers.2.mlp.down_proj.weight", 0, 3.3e38f, row).ok());
  auto s = Compress("GPTQModifier: {scheme: W4A16, ignore: [lm_head, 're:.*layers\\.2\\.mlp\\.down_proj$']}\n", "inf",
                    4, 64, model);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("block 2 produced NaN or Inf activations"));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/inf"));
}

// A weight or a norm that is not finite in the checkpoint is refused before its block is calibrated, naming it.
TEST_F(SequentialSolverTest, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const std::string model = tmp_.path() + "/model";
  fs::copy(model_, model, fs::copy_options::recursive);
  ASSERT_TRUE(SetTensorElement(model, "model.layers.1.self_attn.k_proj.weight", 5,
                               std::numeric_limits<float>::quiet_NaN(), 1).ok());
  auto s = Compress("GPTQModifier: {scheme: W4A16, ignore: [lm_head]}\n", "nanw", 4, 64, model);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("model.layers.1.self_attn.k_proj.weight: contains NaN or Inf"));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/nanw"));
  fs::remove_all(model);
  fs::copy(model_, model, fs::copy_options::recursive);
  ASSERT_TRUE(SetTensorElement(model, "model.layers.3.post_attention_layernorm.weight", 7,
                               std::numeric_limits<float>::infinity(), 1).ok());
  auto n = Compress("GPTQModifier: {scheme: W4A16, ignore: [lm_head]}\n", "infn", 4, 64, model);
  ASSERT_FALSE(n.ok());
  EXPECT_THAT(std::string(n.status().message()), HasSubstr("model.layers.3.: a norm weight contains NaN or Inf"));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/infn"));
}

TEST_F(SequentialSolverTest, ClearErrors) {
  // No dataset file.
  dataset_ = tmp_.path() + "/missing.txt";
  auto s = Compress("GPTQModifier: {scheme: W4A16}\n", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("missing.txt"));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/x"));
  // An empty dataset.
  std::ofstream(tmp_.path() + "/empty.txt") << "\n\n";
  dataset_ = tmp_.path() + "/empty.txt";
  auto e = Compress("GPTQModifier: {scheme: W4A16}\n", "y");
  ASSERT_FALSE(e.ok());
  EXPECT_FALSE(fs::exists(tmp_.path() + "/y"));
}

}  // namespace
}  // namespace llmc
