// Checkpoints: weft::save/load of state_dicts, atomic replacement, malformed files, and
// interop with an independent Python reader/writer (scripts/check_safetensors.py).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "weft/nn.h"
#include "weft/ops.h"
#include "weft/serialize.h"

using namespace weft;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("weft_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}
bool have_python_torch() {
  return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  if (rc != 0) out += "<exit " + std::to_string(rc) + ">";
  return out;
}
}  // namespace

TEST(Checkpoint, StateDictRoundTrip) {
  auto dir = temp_dir();
  nn::Sequential net({nn::Conv2d(1, 2, 3), nn::BatchNorm2d(2), nn::Flatten(), nn::Linear(8, 3)});
  net(randn({2, 1, 4, 4}));  // updates running stats and num_batches_tracked
  std::string path = (dir / "net.safetensors").string();
  save(net->state_dict(), path, {{"epoch", "3"}});
  std::map<std::string, std::string> meta;
  TensorDict loaded = load(path, Device::CPU(), &meta);
  EXPECT_EQ(meta.at("epoch"), "3");
  nn::Sequential other({nn::Conv2d(1, 2, 3), nn::BatchNorm2d(2), nn::Flatten(), nn::Linear(8, 3)});
  other->load_state_dict(loaded);
  for (auto& [k, t] : net->state_dict()) {
    EXPECT_EQ(loaded.at(k).dtype(), t.dtype()) << k;
    EXPECT_TRUE(allclose(other->state_dict().at(k).to(kFloat32), t.to(kFloat32), 0, 0)) << k;
  }
  EXPECT_EQ(loaded.at("1.num_batches_tracked").item<int64_t>(), 1);
  // map_location: load straight onto another device.
  EXPECT_EQ(load(path, Device::CPU(1)).at("0.weight").device(), Device::CPU(1));
  fs::remove_all(dir);
}

TEST(Checkpoint, MalformedAndTruncatedFiles) {
  auto dir = temp_dir();
  std::string path = (dir / "ok.safetensors").string();
  save({{"w", randn({4, 4})}}, path);
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  for (size_t cut : {size_t(0), size_t(4), size_t(12), bytes.size() - 1}) {
    std::string p = (dir / ("cut" + std::to_string(cut))).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), (std::streamsize)cut);
    EXPECT_THROW(load(p), Error) << "truncated at " << cut;
  }
  EXPECT_THROW(load((dir / "missing.safetensors").string()), Error);
  std::vector<uint8_t> huge = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
  EXPECT_THROW(load_from_bytes(huge), Error);
  fs::remove_all(dir);
}

TEST(Checkpoint, SaveReplacesAtomically) {
  auto dir = temp_dir();
  std::string path = (dir / "ckpt.safetensors").string();
  save({{"v", full({3}, 1.0)}}, path);
  save({{"v", full({3}, 2.0)}}, path);
  EXPECT_EQ(load(path).at("v").sum().item<float>(), 6.0f);
  for (auto& e : fs::directory_iterator(dir))  // no temp files left behind
    EXPECT_EQ(e.path().filename(), "ckpt.safetensors");
  fs::remove_all(dir);
}

TEST(Checkpoint, PythonReadsWhatWeftWrites) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch is not installed";
  auto dir = temp_dir();
  std::string path = (dir / "w.safetensors").string();
  Tensor a = arange(0, 6, 1).reshape({2, 3}) * 0.5;
  save({{"a", a}, {"n", arange(4)}}, path, {{"k", "v"}});
  std::string out =
      run("/usr/bin/python3 " WEFT_SOURCE_DIR "/scripts/check_safetensors.py read " + path);
  EXPECT_EQ(out, "a F32 [2,3] 7.5\nn I64 [4] 6\n__metadata__ k v\n");
  fs::remove_all(dir);
}

TEST(Checkpoint, WeftReadsWhatPythonWrites) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch is not installed";
  auto dir = temp_dir();
  std::string path = (dir / "py.safetensors").string();
  ASSERT_EQ(run("/usr/bin/python3 " WEFT_SOURCE_DIR "/scripts/check_safetensors.py write " + path),
            "");
  std::map<std::string, std::string> meta;
  TensorDict t = load(path, Device::CPU(), &meta);
  auto a = t.at("a").to_vector_float();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(a[i * 4 + j], 0.5f * (4 * i + j) - 1.0f);
  auto b = t.at("b").to_vector_int64();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b[i], 3 * i - 7);
  EXPECT_EQ(t.at("c").dim(), 0);
  EXPECT_EQ(t.at("c").item<float>(), 2.5f);
  EXPECT_EQ(meta.at("producer"), "check_safetensors.py");
  fs::remove_all(dir);
}
