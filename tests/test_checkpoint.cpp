// Checkpoints: weft::save/load of state_dicts, atomic replacement, malformed files, per-tensor
// checksums (XXH64 test vectors, flipped bytes and NaNs caught, damaged entries), and interop
// with an independent Python reader/writer and XXH64 (scripts/check_safetensors.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "error_message.h"
#include "weft/nn.h"
#include "weft/ops.h"
#include "weft/serialize.h"
#include "weft/serialize/safetensors_format.h"

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
std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), {});
}
void write_bytes(const std::string& path, const std::vector<char>& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(b.data(), static_cast<std::streamsize>(b.size()));
}
// Where tensor `name`'s data starts in the safetensors file `b`, from the header's JSON.
size_t data_offset(const std::vector<char>& b, const std::string& name) {
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  auto header = nlohmann::json::parse(b.begin() + 8, b.begin() + 8 + static_cast<ptrdiff_t>(n));
  return 8 + n + header.at(name).at("data_offsets")[0].get<size_t>();
}
}  // namespace

// The checksum is XXH64 with seed 0: the published test vectors, and one long enough for the
// 32-byte stripes (its value from the independent Python implementation).
TEST(Checkpoint, ChecksumIsXxh64) {
  EXPECT_EQ(serialize::xxh64_hex("", 0), "ef46db3751d8e999");
  EXPECT_EQ(serialize::xxh64_hex("a", 1), "d24ec4f1a98c6e5b");
  EXPECT_EQ(serialize::xxh64_hex("abc", 3), "44bc2cf5ad770999");
  std::vector<uint8_t> ramp(100);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(serialize::xxh64_hex(ramp.data(), ramp.size()), "6ac1e58032166597");
}

// A flipped byte or a NaN written over a value in a tensor's data: the load fails with a
// ChecksumError naming the tensor and the file, rather than returning the damaged values.
TEST(Checkpoint, CorruptTensorDataIsAChecksumError) {
  auto dir = temp_dir();
  const std::string path = (dir / "epoch-0002.safetensors").string();
  save({{"fc.weight", randn({4, 4})}, {"fc.bias", randn({4})}}, path);
  const std::vector<char> good = read_bytes(path);
  ASSERT_NO_THROW(load(path));

  std::vector<char> flipped = good;
  flipped[data_offset(good, "fc.weight") + 21] ^= 0x10;
  write_bytes(path, flipped);
  std::string m = weft::test::error_message([&] { load(path); });
  EXPECT_NE(m.find("checksum mismatch in tensor 'fc.weight' of '" + path + "'"), std::string::npos)
      << m;
  EXPECT_THROW(load(path), ChecksumError);

  std::vector<char> nan = good;
  const float q = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&nan[data_offset(good, "fc.bias") + 8], &q, sizeof q);
  write_bytes(path, nan);
  m = weft::test::error_message([&] { load(path); });
  EXPECT_NE(m.find("checksum mismatch in tensor 'fc.bias' of '" + path + "'"), std::string::npos)
      << m;
  // The same bytes in memory: the message names what the caller called them.
  m = weft::test::error_message([&] {
    load_from_bytes(std::vector<uint8_t>(nan.begin(), nan.end()), nullptr, "rank 1's copy");
  });
  EXPECT_NE(m.find("checksum mismatch in tensor 'fc.bias' of 'rank 1's copy'"), std::string::npos)
      << m;
  fs::remove_all(dir);
}

// The checksums are weft's own entries: load() hands back only the caller's metadata, save()
// refuses caller keys under the prefix, files without entries (other writers) load, and damaged
// entries (not hex, or naming no tensor) are ChecksumErrors too.
TEST(Checkpoint, ChecksumEntries) {
  auto dir = temp_dir();
  const std::string path = (dir / "c.safetensors").string();
  Tensor w = arange(0, 6, 1).reshape({2, 3});
  save({{"w", w}}, path, {{"epoch", "1"}});
  std::map<std::string, std::string> meta;
  load(path, Device::CPU(), &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"epoch", "1"}}));
  auto file = serialize::SafetensorsFile::read(path);
  const auto* v = file.find("w");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(file.metadata().at("weft.xxh64.w"), serialize::xxh64_hex(v->data, v->nbytes));
  std::string m = weft::test::error_message([&] {
    save({{"w", w}}, path, {{"weft.xxh64.w", "0"}});
  });
  EXPECT_NE(m.find("metadata key 'weft.xxh64.w' uses the prefix 'weft.xxh64.'"), std::string::npos)
      << m;

  const float x[2] = {1.5f, -2.0f};
  const serialize::TensorView view{"x", "F32", {2}, reinterpret_cast<const uint8_t*>(x), 8};
  serialize::write_safetensors(path, {view}, {});
  EXPECT_EQ(load(path).at("x").to_vector_float(), (std::vector<float>{1.5f, -2.0f}));
  serialize::write_safetensors(path, {view}, {{"weft.xxh64.x", "not-hex"}});
  m = weft::test::error_message([&] { load(path); });
  EXPECT_NE(m.find("bad checksum entry 'weft.xxh64.x' of '" + path + "'"), std::string::npos) << m;
  EXPECT_THROW(load(path), ChecksumError);
  serialize::write_safetensors(
      path, {view},
      {{"weft.xxh64.x", serialize::xxh64_hex(x, 8)}, {"weft.xxh64.y", "0123456789abcdef"}});
  m = weft::test::error_message([&] { load(path); });
  EXPECT_NE(m.find("names tensor 'y', which the file does not hold"), std::string::npos) << m;
  fs::remove_all(dir);
}

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
  // The checksum entries are plain metadata to other readers.
  auto file = serialize::SafetensorsFile::read(path);
  const auto hex = [&](const char* n) {
    return serialize::xxh64_hex(file.find(n)->data, file.find(n)->nbytes);
  };
  EXPECT_EQ(out, "a F32 [2,3] 7.5\nn I64 [4] 6\n__metadata__ k v\n__metadata__ weft.xxh64.a " +
                     hex("a") + "\n__metadata__ weft.xxh64.n " + hex("n") + "\n");
  // An independent XXH64 agrees with every checksum, and sees a flipped byte.
  const std::string verify =
      "/usr/bin/python3 " WEFT_SOURCE_DIR "/scripts/check_safetensors.py verify " + path;
  EXPECT_EQ(run(verify), "a ok\nn ok\n");
  std::vector<char> b = read_bytes(path);
  b[data_offset(b, "n") + 3] ^= 1;
  write_bytes(path, b);
  EXPECT_EQ(run(verify).substr(0, 15), "a ok\nn mismatch") << run(verify);
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
