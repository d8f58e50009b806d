// IDX (MNIST) reader tests: plain and gzip round trips for every type code, byte-order conversion,
// multi-member gzip, and each malformed case including truncated gzip and decompression bombs.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "error_message.h"
#include "idx_bytes.h"
#include "weft/data/idx_format.h"
#include "weft/error.h"

using weft::test::idx_bytes;

namespace fs = std::filesystem;
using weft::data::IdxArray;
using weft::data::parse_idx;
using weft::data::read_idx;

namespace {

std::vector<uint8_t> gzip(const std::vector<uint8_t>& in, int level = 6) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()) + 64);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle,
                  size_t cap = weft::data::kIdxMaxDecompressedBytes) {
  const std::string m =
      weft::test::error_message([&] { parse_idx(bytes.data(), bytes.size(), cap); });
  EXPECT_NE(m.find(needle), std::string::npos)
      << "message: " << m << "\nexpected to contain: " << needle;
}

std::string write_temp(const std::vector<uint8_t>& bytes, const std::string& name) {
  const fs::path p = fs::temp_directory_path() / (name + "." + std::to_string(::getpid()));
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  return p.string();
}

}  // namespace

TEST(IdxFormat, ItemSizes) {
  EXPECT_EQ(weft::data::idx_itemsize(0x08), 1u);
  EXPECT_EQ(weft::data::idx_itemsize(0x09), 1u);
  EXPECT_EQ(weft::data::idx_itemsize(0x0B), 2u);
  EXPECT_EQ(weft::data::idx_itemsize(0x0C), 4u);
  EXPECT_EQ(weft::data::idx_itemsize(0x0D), 4u);
  EXPECT_EQ(weft::data::idx_itemsize(0x0E), 8u);
  EXPECT_THROW(weft::data::idx_itemsize(0x0A), weft::Error);
}

TEST(IdxFormat, PlainUbyteImages) {
  // Like train-images-idx3-ubyte: 2 images of 3x2.
  std::vector<uint8_t> pixels = {0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255};
  const auto a = parse_idx(idx_bytes(0x08, {2, 3, 2}, pixels).data(),
                           idx_bytes(0x08, {2, 3, 2}, pixels).size());
  EXPECT_EQ(a.type_code, 0x08);
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 2}));
  EXPECT_EQ(a.data, pixels);
}

TEST(IdxFormat, ConvertsToHostByteOrder) {
  const int32_t ints[] = {1, -2, 0x01020304};
  const float floats[] = {1.5f, -0.25f};
  const double doubles[] = {3.125};
  const int16_t shorts[] = {-300, 7};
  auto big_endian = [](const void* p, size_t n, size_t item) {
    std::vector<uint8_t> v(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    for (size_t i = 0; i < n; i += item) std::reverse(v.begin() + i, v.begin() + i + item);
    return v;
  };
  struct Case {
    uint8_t type;
    const void* host;
    size_t count, item;
  } cases[] = {
      {0x0C, ints, 3, 4}, {0x0D, floats, 2, 4}, {0x0E, doubles, 1, 8}, {0x0B, shorts, 2, 2}};
  for (const auto& c : cases) {
    const auto file = idx_bytes(c.type, {static_cast<uint32_t>(c.count)},
                                big_endian(c.host, c.count * c.item, c.item));
    const auto a = parse_idx(file.data(), file.size());
    ASSERT_EQ(a.data.size(), c.count * c.item);
    EXPECT_EQ(std::memcmp(a.data.data(), c.host, a.data.size()), 0) << int(c.type);
  }
}

TEST(IdxFormat, EmptyDimension) {
  const auto file = idx_bytes(0x08, {0, 28, 28}, {});
  const auto a = parse_idx(file.data(), file.size());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(a.data.empty());
}

TEST(IdxFormat, PlainAndGzipFilesRoundTrip) {
  std::vector<uint8_t> labels(1000);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
  const auto plain = idx_bytes(0x08, {1000}, labels);
  // The reader goes by magic bytes, not by the name: a gzip file without .gz still works.
  const std::string p1 = write_temp(plain, "weft_labels.idx");
  const std::string p2 = write_temp(gzip(plain), "weft_labels_gz_without_suffix");
  for (const auto& p : {p1, p2}) {
    const IdxArray a = read_idx(p);
    EXPECT_EQ(a.type_code, 0x08);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{1000}));
    EXPECT_EQ(a.data, labels);
    fs::remove(p);
  }
}

TEST(IdxFormat, LargeGzipSpanningManyBuffers) {
  std::vector<uint8_t> pixels(3 * 1000 * 784);
  for (size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  const auto plain = idx_bytes(0x08, {3000, 28, 28}, pixels);
  const auto gz = gzip(plain, 1);
  const auto a = parse_idx(gz.data(), gz.size());
  EXPECT_EQ(a.data, pixels);
}

TEST(IdxFormat, ConcatenatedGzipMembers) {
  const auto plain = idx_bytes(0x08, {6}, {1, 2, 3, 4, 5, 6});
  std::vector<uint8_t> first(plain.begin(), plain.begin() + 7),
      second(plain.begin() + 7, plain.end());
  auto gz = gzip(first);
  const auto gz2 = gzip(second);
  gz.insert(gz.end(), gz2.begin(), gz2.end());
  const auto a = parse_idx(gz.data(), gz.size());
  EXPECT_EQ(a.data, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6}));
}

TEST(IdxFormat, MalformedFiles) {
  expect_error({0, 0, 8}, "shorter than the 4-byte magic");
  expect_error({}, "shorter than the 4-byte magic");
  expect_error({0, 1, 8, 1, 0, 0, 0, 0}, "bad magic number");
  expect_error({0, 0, 0x0A, 1, 0, 0, 0, 0}, "unknown type code 0xa");
  expect_error({0, 0, 8, 0}, "0 dimensions, expected 1 to 8");
  expect_error(idx_bytes(8, std::vector<uint32_t>(9, 1), {1}), "9 dimensions, expected 1 to 8");
  expect_error({0, 0, 8, 3, 0, 0, 0, 1, 0, 0}, "too short for its 3 dimension sizes");
  expect_error(idx_bytes(8, {2, 3}, {1, 2, 3, 4, 5}),
               "dimensions declare 6 bytes of data but the file holds 5");
  expect_error(idx_bytes(0x0C, {2}, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
               "dimensions declare 8 bytes of data but the file holds 9");
  expect_error(idx_bytes(0x0E, std::vector<uint32_t>(8, 0xffffffff), {}),
               "dimensions declare more than 2^64 bytes");
}

TEST(IdxFormat, MalformedGzip) {
  const auto plain = idx_bytes(0x08, {64}, std::vector<uint8_t>(64, 3));
  const auto gz = gzip(plain);
  expect_error({0x1f, 0x8b}, "gzip: truncated");
  expect_error(std::vector<uint8_t>(gz.begin(), gz.end() - 3), "gzip: truncated");
  auto corrupt = gz;
  corrupt[gz.size() - 6] ^= 0xff;  // CRC-32 trailer
  expect_error(corrupt, "gzip: corrupt data");
  auto header = gz;
  header[2] = 7;  // compression method other than deflate
  expect_error(header, "gzip: corrupt data");
  auto trailing = gz;
  trailing.push_back(0);
  expect_error(trailing, "1 trailing bytes");
  // A gzip inside a gzip is not IDX.
  expect_error(gzip(gz), "bad magic number");
  // Decompressed data that does not form a valid IDX file is reported as such.
  expect_error(gzip({0, 0, 8, 1, 0, 0, 0, 9, 1}), "declare 9 bytes of data but the file holds 1");
}

TEST(IdxFormat, DecompressionBombIsCapped) {
  // 16 MiB of zeros under a header that declares them compress to ~16 KiB; with a 1 MiB cap the
  // reader refuses the header's size before inflating any data.
  const auto bomb = gzip(idx_bytes(0x08, {16u << 20}, std::vector<uint8_t>(16 << 20, 0)), 9);
  ASSERT_LT(bomb.size(), 64u << 10);
  expect_error(bomb, "exceeds the limit of 1048576 bytes: the IDX header declares 16777216",
               1 << 20);
  // Zeros without a header are not IDX: refused after 4 inflated bytes.
  expect_error(gzip(std::vector<uint8_t>(16 << 20, 0), 9), "unknown type code 0x0", 1 << 20);
  // Exactly at the cap is accepted.
  const auto plain = idx_bytes(0x08, {1000}, std::vector<uint8_t>(1000, 1));
  EXPECT_NO_THROW(parse_idx(gzip(plain).data(), gzip(plain).size(), plain.size()));
  expect_error(gzip(plain), "exceeds the limit", plain.size() - 1);
}

// A header that declares little, followed by a flood: inflating stops at the declared size. The
// flood's compressed tail is cut off, so a reader that inflated on would report a truncated
// stream instead; this one reports the excess without reaching the cut.
TEST(IdxFormat, InflatingStopsAtTheDeclaredSize) {
  auto plain = idx_bytes(0x08, {16}, std::vector<uint8_t>(16, 7));
  plain.resize(plain.size() + (16 << 20), 0);
  auto gz = gzip(plain, 9);
  gz.resize(gz.size() - 64);
  expect_error(gz, "declare 16 bytes of data but the file holds more");
  // The same flood whole is refused the same way, under a cap far below its inflated size.
  expect_error(gzip(plain, 9), "declare 16 bytes of data but the file holds more", 1 << 10);
  // A header whose declared size overflows is refused before any data is inflated.
  expect_error(gzip(idx_bytes(0x0E, std::vector<uint32_t>(8, 0xffffffff), {})),
               "dimensions declare more than 2^64 bytes");
  // The declared size at the cap, with its data, still loads from gzip; one byte less fails.
  const auto ok = idx_bytes(0x0B, {3, 2}, {0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 1, 0});
  const auto gok = gzip(ok);
  const IdxArray a = parse_idx(gok.data(), gok.size(), ok.size());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 2}));
  ASSERT_EQ(a.data.size(), 12u);
  int16_t last;
  std::memcpy(&last, a.data.data() + 10, 2);
  EXPECT_EQ(last, 256);
  expect_error(gok, "exceeds the limit of 23 bytes", ok.size() - 1);
}

TEST(IdxFormat, ReadErrorsNameThePath) {
  std::string m =
      weft::test::error_message([] { read_idx("/nonexistent/dir/train-labels-idx1-ubyte.gz"); });
  EXPECT_NE(m.find("train-labels-idx1-ubyte.gz"), std::string::npos) << m;
  const auto gz = gzip(idx_bytes(0x08, {4}, {1, 2, 3, 4}));
  const std::string p = write_temp(std::vector<uint8_t>(gz.begin(), gz.end() - 4), "weft_trunc.gz");
  m = weft::test::error_message([&] { read_idx(p); });
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("gzip"), std::string::npos) << m;
  fs::remove(p);
}
