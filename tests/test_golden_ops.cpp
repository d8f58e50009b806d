// Every op against PyTorch's forward output and input gradients (tests/golden).
#include <functional>

#include "golden.h"
#include "weft/autograd.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
using weft::test::kRtol;

namespace {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

void check_op(const std::string& name, int n_inputs, const OpFn& fn, double rtol = kRtol) {
  SCOPED_TRACE(name);
  Golden g(name);
  std::vector<Tensor> in;
  for (int i = 0; i < n_inputs; ++i) in.push_back(g.input(i));
  Tensor out = fn(in);
  ASSERT_TRUE(close(out, g["out"], rtol, name + " out"));
  out.backward(g["gout"]);
  for (int i = 0; i < n_inputs; ++i) {
    std::string key = "grad.in." + std::to_string(i);
    if (g.has(key)) {
      EXPECT_TRUE(close(in[i].grad(), g[key], rtol, name + " " + key));
    }
  }
}

}  // namespace

TEST(GoldenOps, Binary) {
  check_op("add_bcast", 2, [](auto& x) { return x[0] + x[1]; });
  check_op("sub_bcast", 2, [](auto& x) { return x[0] - x[1]; });
  check_op("mul_bcast", 2, [](auto& x) { return x[0] * x[1]; });
  check_op("div_bcast", 2, [](auto& x) { return x[0] / x[1]; });
}

TEST(GoldenOps, Unary) {
  check_op("neg", 1, [](auto& x) { return -x[0]; });
  check_op("exp", 1, [](auto& x) { return x[0].exp(); });
  check_op("log", 1, [](auto& x) { return x[0].log(); });
  check_op("sqrt", 1, [](auto& x) { return x[0].sqrt(); });
  check_op("abs", 1, [](auto& x) { return x[0].abs(); });
  check_op("pow_scalar", 1, [](auto& x) { return x[0].pow(2.5); });
  check_op("relu", 1, [](auto& x) { return x[0].relu(); });
  check_op("sigmoid", 1, [](auto& x) { return x[0].sigmoid(); });
  check_op("tanh", 1, [](auto& x) { return x[0].tanh(); });
  check_op("clamp", 1, [](auto& x) { return x[0].clamp(-0.5, 0.5); });
}

TEST(GoldenOps, Reductions) {
  check_op("sum_dim", 1, [](auto& x) { return x[0].sum({1}); });
  check_op("sum_all", 1, [](auto& x) { return x[0].sum(); });
  check_op("mean_dim", 1, [](auto& x) { return x[0].mean({0, 2}, true); });
  check_op("softmax_dim1", 1, [](auto& x) { return x[0].softmax(1); });
  check_op("log_softmax_dim1", 1, [](auto& x) { return x[0].log_softmax(1); });
}

TEST(GoldenOps, MaxDim) {
  Golden g("max_dim");
  Tensor x = g.input(0);
  auto [vals, idx] = x.max(1);
  EXPECT_TRUE(close(vals, g["out.0"], kRtol, "values"));
  EXPECT_EQ(idx.to_vector_int64(), g["out.1"].to_vector_int64());
  vals.backward(g["gout"]);
  EXPECT_TRUE(close(x.grad(), g["grad.in.0"], kRtol, "grad"));
}

TEST(GoldenOps, MatmulAndShapes) {
  check_op("matmul_2d", 2, [](auto& x) { return matmul(x[0], x[1]); });
  check_op("matmul_batched", 2, [](auto& x) { return matmul(x[0], x[1]); });
  check_op("transpose_contig", 1, [](auto& x) { return x[0].transpose(0, 2).contiguous(); });
  check_op("cat_dim1", 2, [](auto& x) { return cat({x[0], x[1]}, 1); });
  check_op("stack_dim0", 2, [](auto& x) { return stack({x[0], x[1]}, 0); });
}
