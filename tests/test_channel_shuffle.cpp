// ChannelShuffle against PyTorch goldens (forward and gradient), layouts and errors.
#include "error_message.h"
#include "golden.h"
#include "gradcheck.h"
#include "weft/autograd.h"
#include "weft/nn.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
namespace F = weft::nn::functional;

TEST(ChannelShuffle, MatchesPyTorch) {
  const std::pair<const char*, int64_t> cases[] = {
      {"channel_shuffle_g4", 4}, {"channel_shuffle_3d", 3}, {"channel_shuffle_5d", 2}};
  for (auto [name, groups] : cases) {
    SCOPED_TRACE(name);
    Golden g(name);
    Tensor x = g.input(0);
    nn::ChannelShuffle cs(groups);
    Tensor out = cs(x);
    EXPECT_TRUE(close(out, g["out"], 0, "out"));  // a permutation: exact
    out.backward(g["gout"]);
    EXPECT_TRUE(close(x.grad(), g["grad.in.0"], 0, "grad"));
  }
}

TEST(ChannelShuffle, ChannelsLastStaysChannelsLast) {
  Golden g("channel_shuffle_channels_last");
  Tensor x = nn::to_channels_last(g["in.0"]).detach();
  ASSERT_TRUE(nn::is_channels_last(x));
  x.requires_grad_(true);
  Tensor out = F::channel_shuffle(x, 3);
  EXPECT_TRUE(nn::is_channels_last(out));
  EXPECT_TRUE(close(out, g["out"], 0, "out"));
  out.backward(nn::to_channels_last(g["gout"]));
  EXPECT_TRUE(close(x.grad(), g["grad.in.0"], 0, "grad"));
}

TEST(ChannelShuffle, EdgeGroupsAndErrors) {
  Tensor x = randn({2, 6, 3, 3});
  EXPECT_TRUE(allclose(F::channel_shuffle(x, 1), x, 0, 0));
  EXPECT_TRUE(allclose(F::channel_shuffle(x, 6), x, 0, 0));
  // Shuffling with g then C/g groups is the identity.
  EXPECT_TRUE(allclose(F::channel_shuffle(F::channel_shuffle(x, 2), 3), x, 0, 0));
  const std::string m = test::error_message([&] { F::channel_shuffle(x, 4); });
  EXPECT_NE(m.find("6"), std::string::npos) << m;
  EXPECT_NE(m.find("4"), std::string::npos) << m;
  EXPECT_THROW(F::channel_shuffle(randn({6, 2}), 2), Error);
  EXPECT_THROW(nn::ChannelShuffle(0), Error);
  EXPECT_TRUE(weft::test::gradcheck([](auto& v) { return F::channel_shuffle(v[0], 2); },
                                    {randn({1, 4, 2, 2})}));
}

TEST(ChannelShuffle, Int64AsPyTorch) {
  // torch.arange is int64; PyTorch shuffles it (golden), and so does weft, layouts included.
  Golden g("channel_shuffle_int64");
  Tensor x = g["in.0"];
  ASSERT_EQ(x.dtype(), kInt64);
  nn::ChannelShuffle cs(3);
  Tensor out = cs(x);
  EXPECT_EQ(out.dtype(), kInt64);
  EXPECT_EQ(out.sizes(), x.sizes());
  EXPECT_EQ(out.to_vector_int64(), g["out"].to_vector_int64());
  Tensor cl = F::channel_shuffle(nn::to_channels_last(x), 3);
  EXPECT_TRUE(nn::is_channels_last(cl));
  EXPECT_EQ(cl.contiguous().to_vector_int64(), g["out.channels_last"].to_vector_int64());
  EXPECT_EQ(F::channel_shuffle(g["in.1"], 2).to_vector_int64(), g["out.1"].to_vector_int64());
  // The same permutation as the float kernel's.
  Tensor xf = x.to(kFloat32);
  EXPECT_EQ(out.to(kFloat32).to_vector_float(), F::channel_shuffle(xf, 3).to_vector_float());
  EXPECT_THROW(F::channel_shuffle(x, 4), Error);  // 6 channels, 4 groups: still refused
}
