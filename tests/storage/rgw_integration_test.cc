// The storage layer against a real Ceph RGW (SigV4 enforced, multipart rules, real listings), checked with an
// independent client (tests/support/s3_verify.py). One process runs every test so the server starts once;
// the binary exits 77 (ctest: skipped) when RGW cannot run here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>
#include <csignal>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/temp_dir.h"
#include "engine/format/recipe.h"
#include "engine/pipeline/compress_job.h"
#include "storage/job_storage.h"
#include "worker/job_io.h"
#include "storage/crypto.h"
#include "storage/output_publisher.h"
#include "storage/s3_object_store.h"
#include "tests/support/rgw_server.h"
#include "storage/transfer.h"

namespace llmc::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

testing::RgwServer* g_server = nullptr;
std::string g_unavailable;

class RgwEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto s = testing::RgwServer::Start();
    if (!s.ok()) {
      g_unavailable = std::string(s.status().message());
      std::fprintf(stderr, "RGW integration tests skipped: %s\n", g_unavailable.c_str());
      return;
    }
    server_ = std::move(*s);
    g_server = server_.get();
  }
  void TearDown() override {
    g_server = nullptr;
    server_.reset();
  }

 private:
  std::unique_ptr<testing::RgwServer> server_;
};

using ::llmc::testing::RandomBytes;

using ::llmc::testing::ReadAll;

class RgwTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_server) GTEST_SKIP() << "no RGW: " << g_unavailable;
    static int counter = 0;
    bucket_ = absl::StrCat("llmc-test-", getpid(), "-", ++counter);
    options_.s3 = g_server->Options();
    auto root = Open(absl::StrCat("s3://", bucket_));
    ASSERT_TRUE(static_cast<S3ObjectStore*>(root.get())->CreateBucket().ok());
  }
  std::unique_ptr<ObjectStore> Open(const std::string& uri) {
    auto s = OpenObjectStore(uri, options_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::string Uri(const std::string& rel = "") const {
    return rel.empty() ? absl::StrCat("s3://", bucket_) : absl::StrCat("s3://", bucket_, "/", rel);
  }
  // Runs s3_verify.py (the independent client) and returns its stdout.
  std::string Verify(const std::string& args) {
    std::string cmd = absl::StrCat("S3_ENDPOINT=", g_server->endpoint(), " AWS_ACCESS_KEY_ID=", g_server->access_key(),
                                   " AWS_SECRET_ACCESS_KEY=", g_server->secret_key(), " python3 ", LLMC_SOURCE_DIR,
                                   "/tests/support/s3_verify.py ", args);
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return "";
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    int rc = pclose(p);
    EXPECT_EQ(rc, 0) << cmd << " -> " << out;
    return out;
  }
  std::vector<std::string> VerifyKeys(const std::string& prefix) {
    auto j = nlohmann::json::parse(Verify(absl::StrCat("list ", bucket_, " '", prefix, "'")), nullptr, false);
    std::vector<std::string> keys;
    if (!j.is_array()) return {"<bad listing>"};
    for (const auto& o : j) keys.push_back(o["key"].get<std::string>());
    return keys;
  }
  // Downloads `key` with the independent client and returns its bytes.
  std::string VerifyGet(const std::string& key) {
    std::string out = tmp_ / "verify.bin";
    Verify(absl::StrCat("get ", bucket_, " '", key, "' ", out));
    return ReadAll(out);
  }

  std::string bucket_;
  StoreOptions options_;
  llmc::testing::TempDir tmp_;
};

TEST_F(RgwTest, PutGetRangeStatDelete) {
  auto store = Open(Uri("p"));
  const std::string key = "dir/a b+c ü.txt";
  ASSERT_TRUE(store->Put(key, "hello world").ok());
  auto info = store->Stat(key);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, 11u);
  EXPECT_FALSE(info->etag.empty());
  EXPECT_EQ(*store->Get(key), "hello world");
  EXPECT_EQ(*store->Get(key, 6), "world");
  EXPECT_EQ(*store->Get(key, 2, 3), "llo");
  std::string buf(5, '\0');
  auto span = absl::MakeSpan(reinterpret_cast<uint8_t*>(buf.data()), buf.size());
  ASSERT_TRUE(store->Read(key, 6, span, info->etag).ok());
  EXPECT_EQ(buf, "world");
  EXPECT_EQ(store->Read(key, 8, span).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store->Read(key, 0, span, "0123456789abcdef0123456789abcdef").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(VerifyGet("p/" + key), "hello world");
  ASSERT_TRUE(store->Delete(key).ok());
  auto gone = store->Stat(key);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr(Uri("p/" + key) + ": no such object"));
  EXPECT_THAT(store->Get(key).status().message(), HasSubstr("NoSuchKey"));
  EXPECT_TRUE(store->Delete(key).ok());
}

TEST_F(RgwTest, ListPaginationAndDeletePrefix) {
  auto store = Open(Uri("list"));
  for (int i = 0; i < 23; ++i) ASSERT_TRUE(store->Put(absl::StrFormat("d/k%02d", i), "x").ok());
  ASSERT_TRUE(store->Put("other", "y").ok());
  auto page = store->ListPage("d/", "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->objects.size(), 10u);
  EXPECT_EQ(page->objects[0].key, "d/k00");
  EXPECT_FALSE(page->next_token.empty());
  auto all = store->List("d/", 10);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 23u);
  EXPECT_EQ(all->back().key, "d/k22");
  EXPECT_EQ(store->List("")->size(), 24u);
  EXPECT_EQ(VerifyKeys("list/d/").size(), 23u);
  auto n = store->DeletePrefix("d/");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 23);
  EXPECT_THAT(VerifyKeys("list/"), ElementsAre("list/other"));
}

TEST_F(RgwTest, ErrorsNameTheProblem) {
  auto missing = OpenObjectStore("s3://no-such-bucket-llmc/x", options_);
  ASSERT_TRUE(missing.ok());
  auto g = (*missing)->Get("k");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(g.status().message(), HasSubstr("the bucket 'no-such-bucket-llmc' does not exist"));
  EXPECT_THAT((*missing)->Stat("k").status().message(), HasSubstr("does not exist"));

  StoreOptions wrong = options_;
  wrong.s3.credentials->secret_access_key = "WRONG";
  auto w = (*OpenObjectStore(Uri(), wrong))->Put("k", "x");
  EXPECT_EQ(w.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(w.message(), HasSubstr("SignatureDoesNotMatch"));
  EXPECT_THAT(w.message(), HasSubstr("AWS_SECRET_ACCESS_KEY"));

  StoreOptions unknown = options_;
  unknown.s3.credentials->access_key_id = "NOBODY";
  EXPECT_THAT((*OpenObjectStore(Uri(), unknown))->Put("k", "x").message(), HasSubstr("InvalidAccessKeyId"));

  StoreOptions anon = options_;
  anon.s3.credentials.reset();
  anon.s3.anonymous = true;
  auto a = (*OpenObjectStore(Uri(), anon))->Put("k", "x");
  EXPECT_EQ(a.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(a.message(), HasSubstr("no credentials were found"));

  StoreOptions dead = options_;
  dead.s3.endpoint = "http://127.0.0.1:1";
  dead.s3.retry.max_attempts = 3;
  dead.s3.retry.initial_backoff = absl::Milliseconds(1);
  auto d = (*OpenObjectStore(Uri(), dead))->Get("k");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(d.status().message(), HasSubstr("after 3 attempts"));
  EXPECT_THAT(d.status().message(), HasSubstr("http://127.0.0.1:1"));
  // What users read, in the test log.
  for (const absl::Status& s : {g.status(), w, a, d.status()}) std::fprintf(stderr, "  error: %s\n", s.ToString().c_str());
}

TEST_F(RgwTest, MultipartUploadOf40MBFile) {
  std::string data = RandomBytes(40u << 20, 11);
  std::string path = tmp_.Write("big.bin", data);
  TransferOptions t;
  t.part_size = 8u << 20;
  t.multipart_threshold = 8u << 20;
  t.parallelism = 4;
  auto r = UploadFile(path, Uri("up/big.bin"), t, options_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->parts, 5);
  EXPECT_EQ(r->size, data.size());
  EXPECT_EQ(r->sha256, Sha256Hex(data));
  EXPECT_EQ(VerifyGet("up/big.bin"), data);
  auto store = Open(Uri("up"));
  // A range across a part boundary.
  EXPECT_EQ(*store->Get("big.bin", (8u << 20) - 5, 10), data.substr((8u << 20) - 5, 10));
  EXPECT_THAT(Verify(absl::StrCat("uploads ", bucket_, " up/")), HasSubstr("[]"));
}

TEST_F(RgwTest, CancelledUploadLeavesNoPartsBehind) {
  std::string path = tmp_.Write("big.bin", RandomBytes(30u << 20, 12));
  std::atomic<bool> cancel{false};
  TransferOptions t;
  t.part_size = 5u << 20;
  t.multipart_threshold = 5u << 20;
  t.parallelism = 2;
  t.cancel = &cancel;
  t.on_bytes = [&](uint64_t) { cancel = true; };
  auto r = UploadFile(path, Uri("c/big.bin"), t, options_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(Verify(absl::StrCat("uploads ", bucket_, " c/")), HasSubstr("[]"));
  EXPECT_THAT(VerifyKeys("c/"), IsEmpty());
}

TEST_F(RgwTest, ServerSideCopyIncludingMultipartCopy) {
  std::string data = RandomBytes(12u << 20, 13);
  auto store = Open(Uri("cp"));
  ASSERT_TRUE(store->Put("src", data).ok());
  ASSERT_TRUE(store->Copy("src", "dst/one").ok());
  EXPECT_EQ(VerifyGet("cp/dst/one"), data);
  StoreOptions small = options_;
  small.s3.multipart_copy_threshold = 6u << 20;
  small.s3.copy_part_size = 5u << 20;
  auto s2 = Open(Uri("cp"));
  auto parts_store = OpenObjectStore(Uri("cp"), small);
  ASSERT_TRUE((*parts_store)->Copy("src", "dst/parts").ok());
  EXPECT_EQ(VerifyGet("cp/dst/parts"), data);
}

TEST_F(RgwTest, DownloadPrefixOfObjectsWrittenByAnotherClient) {
  // Objects put by the independent client, read back by DownloadPrefix.
  std::string big = RandomBytes((20u << 20) + 123, 14);
  tmp_.Write("big", big);
  tmp_.Write("cfg", "{\"model_type\": \"llama\"}");
  Verify(absl::StrCat("put ", bucket_, " models/m/model.safetensors ", tmp_ / "big"));
  Verify(absl::StrCat("put ", bucket_, " models/m/config.json ", tmp_ / "cfg"));
  Verify(absl::StrCat("put ", bucket_, " models/m/tok/tokenizer.json ", tmp_ / "cfg"));
  Verify(absl::StrCat("put ", bucket_, " models/m-other/x ", tmp_ / "cfg"));
  DownloadOptions d;
  d.transfer.part_size = 4u << 20;
  d.transfer.parallelism = 4;
  d.skip_unchanged = true;
  auto r = DownloadPrefix(Uri("models/m"), tmp_ / "local", d, options_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 3);
  EXPECT_EQ(ReadAll(tmp_ / "local/model.safetensors"), big);
  EXPECT_EQ(ReadAll(tmp_ / "local/tok/tokenizer.json"), ReadAll(tmp_ / "cfg"));
  EXPECT_FALSE(fs::exists(tmp_ / "local/x"));
  auto again = DownloadPrefix(Uri("models/m"), tmp_ / "local", d, options_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->files, 0);
  EXPECT_EQ(again->skipped, 3);
  EXPECT_EQ(DownloadPrefix(Uri("models/none"), tmp_ / "x", d, options_).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RgwTest, OutputPublisherCommit) {
  std::string shard = RandomBytes(20u << 20, 15);
  tmp_.Write("model.safetensors", shard);
  tmp_.Write("config.json", "{}");
  PublisherOptions po;
  po.job_id = "job42";
  po.transfer.part_size = 8u << 20;
  po.transfer.multipart_threshold = 8u << 20;
  auto pub = OutputPublisher::Open(Uri("out/ckpt"), po, options_);
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_TRUE((*pub)->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  ASSERT_TRUE((*pub)->AddFile("config.json", tmp_ / "config.json").ok());
  ASSERT_TRUE((*pub)->Wait().ok());
  // Mid-job, another client sees staging objects only and no manifest.
  EXPECT_THAT(VerifyKeys("out/ckpt/"), ElementsAre("out/ckpt/.llmc-staging-job42/config.json",
                                                   "out/ckpt/.llmc-staging-job42/model.safetensors"));
  EXPECT_EQ(ReadOutputManifest(Uri("out/ckpt"), options_).status().code(), absl::StatusCode::kNotFound);
  auto m = (*pub)->Commit();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(VerifyKeys("out/ckpt/"),
              ElementsAre("out/ckpt/config.json", "out/ckpt/llmc_manifest.json", "out/ckpt/model.safetensors"));
  // The manifest, read by the other client, matches the bytes it downloads.
  auto manifest = nlohmann::json::parse(VerifyGet("out/ckpt/llmc_manifest.json"));
  ASSERT_EQ(manifest["files"].size(), 2u);
  for (const auto& f : manifest["files"]) {
    std::string bytes = VerifyGet("out/ckpt/" + f["name"].get<std::string>());
    EXPECT_EQ(bytes.size(), f["size"].get<uint64_t>());
    EXPECT_EQ(Sha256Hex(bytes), f["sha256"].get<std::string>());
  }
  EXPECT_EQ(VerifyGet("out/ckpt/model.safetensors"), shard);
  auto store = Open(Uri("out/ckpt"));
  EXPECT_TRUE(VerifyOutputSizes(*store, *m).ok());
  EXPECT_THAT(Verify(absl::StrCat("uploads ", bucket_, " out/")), HasSubstr("[]"));
  // Without --overwrite a second job is refused; with it, the output is replaced.
  EXPECT_EQ(OutputPublisher::Open(Uri("out/ckpt"), po, options_).status().code(), absl::StatusCode::kAlreadyExists);
  po.overwrite = true;
  po.job_id = "job43";
  auto again = OutputPublisher::Open(Uri("out/ckpt"), po, options_);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->AddBytes("config.json", "{\"v\": 2}").ok());
  ASSERT_TRUE((*again)->Commit().ok());
  EXPECT_THAT(VerifyKeys("out/ckpt/"), ElementsAre("out/ckpt/config.json", "out/ckpt/llmc_manifest.json"));
}

TEST_F(RgwTest, OutputPublisherAbortLeavesNothing) {
  tmp_.Write("model.safetensors", RandomBytes(18u << 20, 16));
  PublisherOptions po;
  po.job_id = "failed-job";
  po.transfer.part_size = 5u << 20;
  po.transfer.multipart_threshold = 5u << 20;
  {
    auto pub = OutputPublisher::Open(Uri("out/failed"), po, options_);
    ASSERT_TRUE(pub.ok()) << pub.status();
    ASSERT_TRUE((*pub)->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
    ASSERT_TRUE((*pub)->AddBytes("config.json", "{}").ok());
    ASSERT_TRUE((*pub)->Abort().ok());
  }
  {
    // Abandoned mid-upload (the destructor aborts).
    auto pub = OutputPublisher::Open(Uri("out/failed"), po, options_);
    ASSERT_TRUE(pub.ok()) << pub.status();
    ASSERT_TRUE((*pub)->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  }
  EXPECT_THAT(VerifyKeys("out/"), IsEmpty());
  EXPECT_THAT(Verify(absl::StrCat("uploads ", bucket_, " out/")), HasSubstr("[]"));
}

class RgwCompressTest : public RgwTest {
 protected:
  void SetUp() override {
    RgwTest::SetUp();
    if (IsSkipped()) return;
    SyntheticLlamaShape shape;  // small: hidden 256, 2 layers
    ASSERT_TRUE(WriteSyntheticLlama(tmp_ / "model", shape, DType::kBF16, 7, 1u << 20).ok());
    // The reference: the same job written locally, through the same job path.
    ASSERT_TRUE(RunJobToOutput(Request(tmp_ / "model", tmp_ / "reference")).ok());
  }
  // A W4A16 job (the job path of `llmc compress` and the workers) with this server's endpoint and credentials.
  JobRequest Request(const std::string& model, const std::string& out) {
    JobRequest r;
    r.spec.model_path = model;
    r.spec.output_path = out;
    r.spec.scheme = "W4A16";
    r.spec.threads = 2;
    r.spec.max_shard_size = 400'000;
    r.input.store = options_;
    r.input.cache_dir = tmp_ / "cache";
    r.output.store = options_;
    r.output.scratch_dir = tmp_ / "scratch";
    return r;
  }
};

TEST_F(RgwCompressTest, CompressToS3Output) {
  auto r = RunJobToOutput(Request(tmp_ / "model", Uri("ckpt/w4")));
  ASSERT_TRUE(r.ok()) << r.status();
  const CompressSummary* s = &r->summary;
  EXPECT_EQ(s->output_path, Uri("ckpt/w4"));
  EXPECT_GT(s->shards, 1);
  auto m = ReadOutputManifest(Uri("ckpt/w4"), options_);
  ASSERT_TRUE(m.ok()) << m.status();
  // Every file equals the locally written reference (compression_report.json has timings, so sizes only).
  std::vector<std::string> ref;
  for (const auto& e : fs::directory_iterator(tmp_ / "reference")) ref.push_back(e.path().filename().string());
  std::sort(ref.begin(), ref.end());
  std::vector<std::string> names;
  for (const auto& f : m->files) names.push_back(f.name);
  EXPECT_EQ(names, ref);
  for (const auto& f : m->files) {
    if (f.name == "compression_report.json") continue;
    std::string bytes = VerifyGet("ckpt/w4/" + f.name);
    EXPECT_EQ(bytes, ReadAll(tmp_ / ("reference/" + f.name))) << f.name;
    EXPECT_EQ(Sha256Hex(bytes), f.sha256) << f.name;
  }
  EXPECT_FALSE(fs::exists(tmp_ / "scratch") && !fs::is_empty(tmp_ / "scratch"));
  // Again without overwrite: refused before any work.
  auto again = RunJobToOutput(Request(tmp_ / "model", Uri("ckpt/w4")));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
}

// The `llmc` binary itself, with credentials and endpoint from the environment as users give them.
TEST_F(RgwCompressTest, CliCompressesToAnS3Output) {
  const std::string llmc = std::string(LLMC_BINARY_DIR) + "/bin/llmc";
  if (!fs::exists(llmc)) GTEST_SKIP() << "no llmc binary at " << llmc;
  std::string cmd = absl::StrCat("LLMC_S3_ENDPOINT=", g_server->endpoint(), " AWS_ACCESS_KEY_ID=", g_server->access_key(),
                                 " AWS_SECRET_ACCESS_KEY=", g_server->secret_key(), " XDG_CACHE_HOME=", tmp_ / "xdg", " ",
                                 llmc, " compress ", tmp_ / "model", " ", Uri("cli/w4"),
                                 " --scheme W4A16 --max-shard-size 400000 --threads 2 --json > ", tmp_ / "cli.json",
                                 " 2> ", tmp_ / "cli.err");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadAll(tmp_ / "cli.err");
  auto j = nlohmann::json::parse(ReadAll(tmp_ / "cli.json"));
  EXPECT_EQ(j["output"], Uri("cli/w4"));
  auto m = ReadOutputManifest(Uri("cli/w4"), options_);
  ASSERT_TRUE(m.ok()) << m.status();
  for (const auto& f : m->files) {
    if (f.name == "compression_report.json") continue;
    EXPECT_EQ(VerifyGet("cli/w4/" + f.name), ReadAll(tmp_ / ("reference/" + f.name))) << f.name;
  }
  // The manifest is the last object written, and no staging objects are left.
  for (const auto& k : VerifyKeys("cli/")) EXPECT_EQ(k.find("staging"), std::string::npos) << k;
}

// A job through the service (`llmc serve`, a worker process, `llmc submit` and `watch`) writing to s3://: the
// output equals the local reference byte for byte, as listed and downloaded by the independent client.
TEST_F(RgwCompressTest, ServiceJobWritesToS3) {
  const std::string bin = std::string(LLMC_BINARY_DIR) + "/bin/";
  if (!fs::exists(bin + "llmc") || !fs::exists(bin + "llmc-server") || !fs::exists(bin + "llmc-worker"))
    GTEST_SKIP() << "needs llmc, llmc-server and llmc-worker in " << bin;
  const std::string env = absl::StrCat("LLMC_S3_ENDPOINT=", g_server->endpoint(), " AWS_ACCESS_KEY_ID=",
                                       g_server->access_key(), " AWS_SECRET_ACCESS_KEY=", g_server->secret_key(),
                                       " XDG_CACHE_HOME=", tmp_ / "xdg", " ");
  const std::string data = tmp_ / "svc";
  const std::string log = tmp_ / "serve.log";
  std::string serve = absl::StrCat(env, bin, "llmc serve --data-dir ", data, " --port 0 --http-port 0 --workers 1 ",
                                   "--threads 2 --allowed-root ", Uri(), " --allowed-input-root ", tmp_.path(),
                                   " > ", log, " 2>&1 & echo $!");
  FILE* p = popen(serve.c_str(), "r");
  ASSERT_NE(p, nullptr);
  int pid = 0;
  ASSERT_EQ(fscanf(p, "%d", &pid), 1);
  pclose(p);
  struct Stop {
    int pid;
    ~Stop() {
      if (pid > 0) {
        kill(pid, SIGTERM);
        for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) usleep(100000);
      }
    }
  } stop{pid};
  std::string addr;
  for (int i = 0; i < 150 && addr.empty(); ++i) {
    usleep(100000);
    const std::string text = ReadAll(log);
    auto at = text.find("coordinator on ");
    if (at != std::string::npos) addr = text.substr(at + 15, text.find(' ', at + 15) - at - 15);
  }
  ASSERT_FALSE(addr.empty()) << ReadAll(log);
  const std::string client = absl::StrCat(env, "LLMC_SERVER=", addr, " LLMC_TOKEN=$(cat ", data, "/admin.token) ", bin, "llmc ");
  std::string submit = absl::StrCat(client, "submit ", tmp_ / "model", " ", Uri("svc/w4"),
                                    " --scheme W4A16 --max-shard-size 400000 --json > ", tmp_ / "job.json");
  ASSERT_EQ(std::system(submit.c_str()), 0) << ReadAll(log);
  auto job = nlohmann::json::parse(ReadAll(tmp_ / "job.json"));
  const std::string id = job["id"].get<std::string>();
  ASSERT_EQ(std::system(absl::StrCat(client, "watch ", id, " --no-progress > /dev/null 2>&1").c_str()), 0) << ReadAll(log);
  auto m = ReadOutputManifest(Uri("svc/w4"), options_);
  ASSERT_TRUE(m.ok()) << m.status();
  for (const auto& f : m->files) {
    if (f.name == "compression_report.json") continue;
    EXPECT_EQ(VerifyGet("svc/w4/" + f.name), ReadAll(tmp_ / ("reference/" + f.name))) << f.name;
  }
  for (const auto& k : VerifyKeys("svc/")) EXPECT_EQ(k.find("staging"), std::string::npos) << k;
}

TEST_F(RgwTest, ResolveFileInputDownloadsAnObjectOnce) {
  auto store = Open(Uri("data"));
  ASSERT_TRUE(store->Put("calib.txt", "first document\n\nsecond document\n").ok());
  ModelInputOptions o;
  o.store = options_;
  o.cache_dir = tmp_ / "cache";
  auto p = ResolveFileInput(Uri("data/calib.txt"), o);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(ReadAll(*p), "first document\n\nsecond document\n");
  auto missing = ResolveFileInput(Uri("data/none.txt"), o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("none.txt"), std::string::npos) << missing.status();
  auto local = ResolveFileInput(*p, o);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(*local, *p);
}

TEST_F(RgwCompressTest, CompressFromS3Model) {
  for (const auto& e : fs::directory_iterator(tmp_ / "model"))
    ASSERT_TRUE(UploadFile(e.path().string(), Uri("models/llama/" + e.path().filename().string()), {}, options_).ok());
  auto r = RunJobToOutput(Request(Uri("models/llama"), tmp_ / "from-s3"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.model_path, Uri("models/llama"));
  for (const auto& e : fs::directory_iterator(tmp_ / "reference")) {
    std::string name = e.path().filename().string();
    if (name == "compression_report.json") continue;
    EXPECT_EQ(ReadAll(tmp_ / ("from-s3/" + name)), ReadAll(e.path().string())) << name;
  }
  auto cached = ModelCacheDir(Uri("models/llama"), Request("", "").input);
  ASSERT_TRUE(cached.ok());
  EXPECT_TRUE(fs::is_regular_file(*cached + "/config.json")) << *cached;
}

// Files handed over while the job runs (the engine's on_file_complete hook, which the job path points at
// OutputTarget::FileComplete) are uploaded before Commit.
TEST_F(RgwTest, FilesHandedOverWhileTheJobRunsAreUploadedEarly) {
  OutputTargetOptions oo;
  oo.store = options_;
  oo.scratch_dir = tmp_ / "scratch";
  oo.job_id = "stream1";
  auto target = OutputTarget::Open(Uri("ckpt/stream"), oo);
  ASSERT_TRUE(target.ok()) << target.status();
  auto on_file_complete = [t = target->get()](const std::string& name, const std::string& path) {
    return t->FileComplete(name, path);
  };
  // As the engine does: write into a staging directory beside local_dir(), hand over each finished shard,
  // rename the directory into place at the end.
  std::string engine_staging = (*target)->local_dir() + ".staging";
  fs::create_directories(engine_staging);
  std::string shard = RandomBytes(9u << 20, 17);
  std::ofstream(engine_staging + "/model-00001-of-00002.safetensors", std::ios::binary) << shard;
  ASSERT_TRUE(on_file_complete("model-00001-of-00002.safetensors",
                                    engine_staging + "/model-00001-of-00002.safetensors").ok());
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    for (const auto& k : VerifyKeys("ckpt/stream/"))
      if (k == "ckpt/stream/.llmc-staging-stream1/model-00001-of-00002.safetensors") seen = true;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(seen) << "the shard was not uploaded while the job ran";
  std::ofstream(engine_staging + "/model-00002-of-00002.safetensors", std::ios::binary) << "second";
  std::ofstream(engine_staging + "/config.json", std::ios::binary) << "{}";
  fs::rename(engine_staging, (*target)->local_dir());
  ASSERT_TRUE((*target)->Commit().ok());
  EXPECT_THAT(VerifyKeys("ckpt/stream/"),
              ElementsAre("ckpt/stream/config.json", "ckpt/stream/llmc_manifest.json",
                          "ckpt/stream/model-00001-of-00002.safetensors", "ckpt/stream/model-00002-of-00002.safetensors"));
  EXPECT_EQ(VerifyGet("ckpt/stream/model-00001-of-00002.safetensors"), shard);
  EXPECT_EQ((*target)->manifest().files.size(), 3u);
  EXPECT_FALSE(fs::exists(tmp_ / "scratch/stream1"));
}

TEST_F(RgwCompressTest, FailedJobLeavesNoOutputAndNoStaging) {
  std::atomic<bool> cancel{true};  // cancelled from the start
  JobControl control;
  control.cancel = &cancel;
  auto s = RunJobToOutput(Request(tmp_ / "model", Uri("ckpt/cancelled")), control);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(VerifyKeys("ckpt/"), IsEmpty());
  // A model that does not exist on S3.
  auto missing = RunJobToOutput(Request(Uri("models/none"), tmp_ / "x"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace llmc::storage

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new llmc::storage::RgwEnvironment);
  int rc = RUN_ALL_TESTS();
  if (rc == 0 && !llmc::storage::g_unavailable.empty()) return 77;  // ctest: SKIP_RETURN_CODE
  return rc;
}
