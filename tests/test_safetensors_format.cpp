// Byte-level safetensors tests: round trips, byte-exact output against the official crate's own
// test vectors, every malformed-header case, and atomic writes.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "error_message.h"
#include "weft/error.h"
#include "weft/serialize/safetensors_format.h"

namespace fs = std::filesystem;
using weft::serialize::SafetensorsFile;
using weft::serialize::TensorView;

namespace {

std::vector<uint8_t> f32_bytes(std::initializer_list<float> v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), std::data(v), out.size());
  return out;
}

// A file made of the 8-byte size, `header` verbatim, and `data`.
std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data = {}) {
  std::vector<uint8_t> out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Expects parse() to throw weft::Error whose message contains `needle`.
void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  const std::string m = weft::test::error_message([&] { SafetensorsFile::parse(bytes); });
  EXPECT_NE(m.find(needle), std::string::npos)
      << "message: " << m << "\nexpected to contain: " << needle;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "weft_st_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(SafetensorsFormat, DtypeItemsize) {
  EXPECT_EQ(weft::serialize::dtype_itemsize("F32"), 4u);
  EXPECT_EQ(weft::serialize::dtype_itemsize("BF16"), 2u);
  EXPECT_EQ(weft::serialize::dtype_itemsize("I64"), 8u);
  EXPECT_EQ(weft::serialize::dtype_itemsize("BOOL"), 1u);
  EXPECT_THROW(weft::serialize::dtype_itemsize("F128"), weft::Error);
}

TEST(SafetensorsFormat, RoundTripSeveralDtypesAndShapes) {
  std::vector<uint8_t> a(2 * 3 * 4), b(8), c(5 * 2), d(3), e;
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(100 + i);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(200 + i);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i % 2);
  std::vector<TensorView> in = {
      {"weight", "F32", {2, 3}, a.data(), a.size()},
      {"scalar", "I64", {}, b.data(), b.size()},  // 0-d
      {"half", "BF16", {5}, c.data(), c.size()},
      {"mask", "BOOL", {3, 1}, d.data(), d.size()},
      {"empty", "F32", {0, 7}, nullptr, 0},  // no elements
      {"bytes", "U8", {0}, e.data(), 0},
  };
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"epoch", "3"}};
  const auto bytes = weft::serialize::serialize_safetensors(in, meta);
  const auto f = SafetensorsFile::parse(bytes);
  ASSERT_EQ(f.tensors().size(), in.size());
  EXPECT_EQ(f.metadata(), meta);
  for (const auto& t : in) {
    const TensorView* got = f.find(t.name);
    ASSERT_NE(got, nullptr) << t.name;
    EXPECT_EQ(got->dtype, t.dtype);
    EXPECT_EQ(got->shape, t.shape);
    ASSERT_EQ(got->nbytes, t.nbytes);
    if (t.nbytes) {
      EXPECT_EQ(std::memcmp(got->data, t.data, t.nbytes), 0) << t.name;
    }
    // Decreasing-itemsize layout keeps every tensor aligned to its itemsize within the file.
    const size_t offset = static_cast<size_t>(got->data - bytes.data());
    EXPECT_EQ(offset % weft::serialize::dtype_itemsize(t.dtype), 0u) << t.name;
  }
  EXPECT_EQ(f.find("absent"), nullptr);
  // tensors() is in data order: I64 first, then F32 (empty before weight), BF16, then 1-byte.
  std::vector<std::string> order;
  for (const auto& t : f.tensors()) order.push_back(t.name);
  EXPECT_EQ(order,
            (std::vector<std::string>{"scalar", "empty", "weight", "half", "bytes", "mask"}));
  // Re-serializing a parsed file gives the same bytes.
  EXPECT_EQ(weft::serialize::serialize_safetensors(f.tensors(), f.metadata()), bytes);
}

TEST(SafetensorsFormat, HeaderPaddedToMultipleOf8) {
  for (size_t len = 1; len <= 16; ++len) {
    std::vector<uint8_t> x(4, 1);
    const auto bytes = weft::serialize::serialize_safetensors(
        {{std::string(len, 'n'), "F32", {1}, x.data(), x.size()}}, {});
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t{bytes[i]} << (8 * i);
    EXPECT_EQ(n % 8, 0u);
    EXPECT_EQ(bytes.size(), 8 + n + 4);
    EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);
    EXPECT_NO_THROW(SafetensorsFile::parse(bytes));
  }
}

// The official crate's test vectors (safetensors/src/tensor.rs:
// test_serialization_forced_alignement and test_empty), which the Python package produces byte for
// byte.
TEST(SafetensorsFormat, ByteExactTinyFile) {
  const auto data = f32_bytes({0, 1, 2, 3, 4, 5});
  const auto bytes =
      weft::serialize::serialize_safetensors({{"attn0", "F32", {1, 1, 2, 3}, data.data(), 24}}, {});
  const std::string header = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})"
                             "       ";  // 65 bytes of JSON + 7 spaces = 72
  ASSERT_EQ(header.size(), 72u);
  std::vector<uint8_t> expected = {72, 0, 0, 0, 0, 0, 0, 0};
  expected.insert(expected.end(), header.begin(), header.end());
  expected.insert(expected.end(), {0, 0, 0,  0,  0, 0, 128, 63, 0, 0, 0,   64,
                                   0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64});
  EXPECT_EQ(bytes, expected);

  EXPECT_EQ(weft::serialize::serialize_safetensors({}, {}),
            (std::vector<uint8_t>{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '}));
  const auto with_meta = weft::serialize::serialize_safetensors({}, {{"framework", "pt"}});
  EXPECT_EQ(with_meta, raw_file(R"({"__metadata__":{"framework":"pt"}})"
                                "     "));
}

TEST(SafetensorsFormat, ParsesHeaderInAnyKeyOrder) {
  // Writers other than ours may order keys and data freely; only the tiling matters.
  const auto f = SafetensorsFile::parse(raw_file(
      R"({"b":{"data_offsets":[0,2],"shape":[2],"dtype":"U8"},"a":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
      {7, 8, 9}));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "b");
  EXPECT_EQ(f.find("a")->data[0], 9);
}

TEST(SafetensorsFormat, MalformedFiles) {
  const std::vector<uint8_t> four(4, 0);
  expect_error({1, 2, 3}, "shorter than the 8-byte");
  {
    auto b = raw_file("{}");
    b[0] = 200;  // header size past the end
    expect_error(b, "larger than the");
  }
  {
    std::vector<uint8_t> b = {0, 0, 0, 0, 1, 0, 0, 0};  // 2^32
    expect_error(b, "exceeds the limit");
    b = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    expect_error(b, "exceeds the limit");
  }
  expect_error(raw_file(R"({"a":)"), "not valid JSON");
  expect_error(raw_file(R"([1,2])"), "not a JSON object");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x)", four),
               "not valid JSON");
  expect_error(raw_file(R"({"a":3})"), "entry of tensor 'a' is not a JSON object");
  expect_error(raw_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", four),
               "tensor 'a' has no dtype");
  expect_error(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", four),
               "tensor 'a' has no shape");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", four),
               "tensor 'a' has no data_offsets");
  expect_error(raw_file(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", four),
               "tensor 'a': dtype is not a string");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", four),
               "tensor 'a': shape is not an array");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", four),
               "tensor 'a': shape dimension is not an integer");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}})", four),
               "tensor 'a': data_offsets is not an array");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", four),
               "tensor 'a': data_offsets is not an array");
  expect_error(raw_file(R"({"a":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}})", four),
               "tensor 'a' has unknown dtype 'F17'");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four),
               "tensor 'a': shape dimension -1 is negative");
  expect_error(
      raw_file(R"({"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})",
               four),
      "tensor 'a': shape dimension 18446744073709551615 is too large");
  expect_error(
      raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
               four),
      "tensor 'a': element count of its shape overflows");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", four),
               "tensor 'a': data_offsets [4, 0] has begin > end");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", four),
               "tensor 'a': data_offsets begin -4 is negative");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four),
               "tensor 'a': data_offsets end 8 is past the end of the 4-byte data buffer");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four),
               "tensor 'a' has 4 bytes but its dtype and shape need 8");
  expect_error(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                        four),
               "tensor 'b' (data_offsets [2, 4]) overlaps tensor 'a'");
  expect_error(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", four),
               "tensor 'a' starts at 2, leaving a gap");
  expect_error(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", four),
               "2 trailing bytes");
  expect_error(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                        R"("a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                        four),
               "duplicate key 'a'");
  expect_error(raw_file(R"({"__metadata__":{"k":1}})"),
               "__metadata__ value of key 'k' is not a string");
  expect_error(raw_file(R"({"__metadata__":["k"]})"), "__metadata__ is not a JSON object");
  expect_error(raw_file(" {}"), "not a JSON object");
  expect_error(raw_file("{\"\xff\":1}"), "not valid JSON");  // invalid UTF-8
}

TEST(SafetensorsFormat, SerializeRejectsBadInput) {
  std::vector<uint8_t> x(4);
  auto expect_throw = [&](const std::vector<TensorView>& v, const std::string& needle) {
    const std::string m =
        weft::test::error_message([&] { weft::serialize::serialize_safetensors(v, {}); });
    EXPECT_NE(m.find(needle), std::string::npos) << "for " << needle << ": " << m;
  };
  expect_throw({{"a", "F32", {1}, x.data(), 4}, {"a", "F32", {1}, x.data(), 4}},
               "duplicate tensor name 'a'");
  expect_throw({{"a", "F99", {1}, x.data(), 4}}, "unknown dtype 'F99'");
  expect_throw({{"a", "F32", {-1}, x.data(), 4}}, "negative dimension");
  expect_throw({{"a", "F32", {2}, x.data(), 4}}, "has 4 bytes but its dtype and shape need 8");
  expect_throw({{"__metadata__", "F32", {1}, x.data(), 4}}, "reserved");
  expect_throw({{"a", "F32", {1}, nullptr, 4}}, "has no data");
  expect_throw({{"\xff", "F32", {1}, x.data(), 4}}, "valid UTF-8");
}

TEST(SafetensorsFormat, WriteAndRead) {
  TempDir dir;
  std::vector<uint8_t> x = f32_bytes({1.5f, -2});
  const std::string path = dir.file("a.safetensors");
  weft::serialize::write_safetensors(path, {{"x", "F32", {2}, x.data(), 8}}, {{"k", "v"}});
  const auto f = SafetensorsFile::read(path);
  ASSERT_NE(f.find("x"), nullptr);
  EXPECT_EQ(std::memcmp(f.find("x")->data, x.data(), 8), 0);
  EXPECT_EQ(f.metadata().at("k"), "v");
  // Overwrite in place; nothing but the target is left in the directory.
  weft::serialize::write_safetensors(path, {}, {});
  EXPECT_TRUE(SafetensorsFile::read(path).tensors().empty());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  // A relative path (no directory part) works too.
  const auto cwd = fs::current_path();
  fs::current_path(dir.path());
  weft::serialize::write_safetensors("rel.safetensors", {}, {});
  fs::current_path(cwd);
  EXPECT_TRUE(fs::exists(dir.file("rel.safetensors")));
}

TEST(SafetensorsFormat, ReadErrorsNameThePath) {
  TempDir dir;
  std::string m =
      weft::test::error_message([&] { SafetensorsFile::read(dir.file("missing.safetensors")); });
  EXPECT_NE(m.find("missing.safetensors"), std::string::npos) << m;
  const std::string bad = dir.file("bad.safetensors");
  std::ofstream(bad) << "xyz";
  m = weft::test::error_message([&] { SafetensorsFile::read(bad); });
  EXPECT_NE(m.find("bad.safetensors"), std::string::npos) << m;
  EXPECT_NE(m.find("shorter than"), std::string::npos) << m;
  EXPECT_THROW(SafetensorsFile::read(dir.path()), weft::Error);  // a directory
}

// A failed write leaves the previous file byte for byte and no temp file behind.
TEST(SafetensorsFormat, FailedWriteKeepsOldFile) {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  std::vector<uint8_t> x = f32_bytes({1, 2, 3});
  weft::serialize::write_safetensors(path, {{"x", "F32", {3}, x.data(), 12}}, {});
  const auto old_bytes = slurp(path);

  // 1. Invalid input: rejected before the file system is touched.
  EXPECT_THROW(weft::serialize::write_safetensors(path, {{"x", "F32", {4}, x.data(), 12}}, {}),
               weft::Error);

  // 2. The disk "fills up" mid-write: a child process with a 4 KiB file size limit writes 1 MiB.
  std::vector<uint8_t> big(1 << 20, 7);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // make write() fail with EFBIG instead of killing us
    rlimit lim{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    int code = 1;
    try {
      weft::serialize::write_safetensors(path, {{"big", "U8", {1 << 20}, big.data(), big.size()}},
                                         {});
    } catch (const weft::Error& e) {
      code = std::string(e.what()).find("write") != std::string::npos ? 0 : 2;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's write did not fail as expected";

  // 3. The rename is impossible: the target path is a non-empty directory.
  const std::string blocked = dir.file("blocked");
  fs::create_directory(blocked);
  std::ofstream(blocked + "/keep") << "k";
  EXPECT_THROW(weft::serialize::write_safetensors(blocked, {}, {}), weft::Error);
  EXPECT_TRUE(fs::is_directory(blocked));

  // 4. The directory is not writable (meaningless for root, who bypasses permissions).
  if (::geteuid() != 0) {
    fs::permissions(dir.path(), fs::perms::owner_write, fs::perm_options::remove);
    EXPECT_THROW(weft::serialize::write_safetensors(path, {}, {}), weft::Error);
    fs::permissions(dir.path(), fs::perms::owner_write, fs::perm_options::add);
  }

  EXPECT_EQ(slurp(path), old_bytes);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"blocked", "ckpt.safetensors"}));
}
