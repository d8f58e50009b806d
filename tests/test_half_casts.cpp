// float32/int64 <-> bfloat16/float16 conversions on the CPU against PyTorch's, bit for bit
// (tests/golden/half_casts: rounding ties, overflow to inf, subnormals, NaN, signed zero),
// reading the 16-bit tensors from a file PyTorch wrote, and a bf16 checkpoint loaded into a
// float32 model.
#include <gtest/gtest.h>

#include <cstring>

#include "golden.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/ops.h"

namespace weft {
namespace {

using test::Golden;

std::vector<uint16_t> bits(const Tensor& t) {
  EXPECT_EQ(itemsize(t.dtype()), 2u) << t.str();
  Tensor c = t.contiguous();
  std::vector<uint16_t> out(c.numel());
  std::memcpy(out.data(), c.raw_data(), out.size() * 2);
  return out;
}

bool is_nan_bits(uint16_t b, DType t) {
  const uint16_t exp = t == DType::BFloat16 ? 0x7f80 : 0x7c00;
  return (b & exp) == exp && (b & ~exp & 0x7fff) != 0;
}

// Equal bits, except that any NaN matches any NaN: PyTorch's CPU kernels write bfloat16 NaN as
// 0xffff, weft keeps the sign and sets the quiet bit (0x7fc0), CUDA writes 0x7fff.
::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<uint16_t> x = bits(a), y = bits(b);
  if (x.size() != y.size() || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << a.str() << " vs " << b.str();
  for (size_t k = 0; k < x.size(); ++k)
    if (x[k] != y[k] && !(is_nan_bits(x[k], a.dtype()) && is_nan_bits(y[k], a.dtype())))
      return ::testing::AssertionFailure()
             << "element " << k << ": 0x" << std::hex << x[k] << " vs 0x" << y[k];
  return ::testing::AssertionSuccess();
}

TEST(HalfCasts, MatchPyTorchBitForBit) {
  Golden g("half_casts");
  ASSERT_EQ(g["x.bf16"].dtype(), DType::BFloat16);
  ASSERT_EQ(g["x.f16"].dtype(), DType::Float16);
  const Tensor x = g["x"], i = g["i"], h = g["h"];
  EXPECT_TRUE(same_bits(x.to(DType::BFloat16), g["x.bf16"]));
  EXPECT_TRUE(same_bits(x.to(DType::Float16), g["x.f16"]));
  EXPECT_TRUE(same_bits(x.to(DType::Float16).to(DType::BFloat16), g["x.f16.bf16"]));
  EXPECT_TRUE(same_bits(x.to(DType::BFloat16).to(DType::Float16), g["x.bf16.f16"]));
  EXPECT_TRUE(same_bits(i.to(DType::BFloat16), g["i.bf16"]));
  EXPECT_TRUE(same_bits(i.to(DType::Float16), g["i.f16"]));
  EXPECT_EQ(h.to(DType::BFloat16).to(kInt64).to_vector_int64(), g["h.bf16.i64"].to_vector_int64());
  EXPECT_EQ(h.to(DType::Float16).to(kInt64).to_vector_int64(), g["h.f16.i64"].to_vector_int64());
}

TEST(HalfCasts, WideningIsExactAndRoundTrips) {
  Golden g("half_casts");
  for (const char* key : {"x.bf16", "x.f16"}) {
    const Tensor half = g[key];
    const Tensor wide = half.to(kFloat32);
    EXPECT_EQ(bits(wide.to(half.dtype())), bits(half)) << key;
    // bfloat16 is float32's top 16 bits: widening is a shift.
    if (half.dtype() == DType::BFloat16) {
      const std::vector<uint16_t> b = bits(half);
      const std::vector<float> w = wide.to_vector_float();
      for (size_t k = 0; k < b.size(); ++k) {
        uint32_t u = (uint32_t)b[k] << 16;
        float f;
        std::memcpy(&f, &u, 4);
        EXPECT_EQ(std::memcmp(&f, &w[k], 4), 0) << "element " << k;
      }
    }
  }
}

TEST(HalfCasts, FillItemStridesAndGradients) {
  Golden g("half_casts");
  Tensor t = empty({3, 4}, {.dtype = DType::BFloat16});
  t.fill_(1.0 / 3.0);
  EXPECT_EQ(bits(t)[5], bits(g["x.bf16"])[2]);  // x[2] is 1/3
  EXPECT_FLOAT_EQ(t.narrow(0, 1, 1).select(1, 2).item<float>(),
                  g["x.bf16"].to(kFloat32)[2].item<float>());
  // A transposed (strided) source converts element by element.
  Tensor x = g["x"].narrow(0, 0, 12).reshape({3, 4});
  EXPECT_EQ(bits(x.transpose(0, 1).to(DType::Float16)),
            bits(x.transpose(0, 1).contiguous().to(DType::Float16)));
  // Casting between floating types is differentiable; the gradient comes back in float32.
  Tensor w = randn({5}).requires_grad_(true);
  (w.to(DType::BFloat16).to(kFloat32) * 3.0).sum().backward();
  EXPECT_EQ(w.grad().dtype(), kFloat32);
  EXPECT_EQ(w.grad().to_vector_float(), std::vector<float>(5, 3.0f));
}

// bf16 arithmetic itself is checked against PyTorch in test_autocast.cpp.
TEST(HalfCasts, ComparisonsWorkMixedMatmulIsAnError) {
  Tensor f = tensor(std::vector<float>{1, 2, 3, 1.0f / 3}, {4});
  Tensor h = f.to(DType::BFloat16);
  EXPECT_THROW(h.matmul(f), Error);  // PyTorch: "expected both ... to have the same dtype"
  EXPECT_EQ(h.eq(h).to_vector_int64(), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(h.eq(f).to_vector_int64(), (std::vector<int64_t>{1, 1, 1, 0}));  // 1/3 rounds
}

TEST(HalfCasts, Bf16CheckpointLoadsIntoFloatModel) {
  nn::Linear src(3, 2), dst(3, 2);
  nn::StateDict half;
  for (const auto& [k, v] : src->state_dict()) half.insert(k, v.to(DType::BFloat16));
  dst->load_state_dict(half);
  for (const auto& [k, v] : dst->state_dict()) {
    EXPECT_EQ(v.dtype(), kFloat32) << k;
    EXPECT_EQ(v.to_vector_float(), half.at(k).to(kFloat32).to_vector_float()) << k;
  }
}

}  // namespace
}  // namespace weft
