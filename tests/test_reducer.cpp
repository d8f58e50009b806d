// DDP's Reducer in one process, against a process group that records what it is asked to
// all-reduce (and, being one rank's view of a world of 3, returns it unchanged): each bucket must
// hold every gradient times 1/world exactly as PyTorch's Reducer computes it (the factor rounded
// to float once, one product per element), whether the gradient is copied into the bucket or
// already lives there (gradient_as_bucket_view).
#include <gtest/gtest.h>

#include <cstring>

#include "weft/autograd.h"
#include "weft/distributed/reducer.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace {

using namespace weft;
using namespace weft::dist;

class DoneWork : public Work {
 public:
  void wait(std::optional<Duration>) override {}
  bool is_completed() override { return true; }
  void then(std::function<void(std::exception_ptr)> fn) override { fn(nullptr); }
};

// Rank 0 of `size`; all-reduce records a copy of the buffer; broadcast from rank 0 is the
// identity.
class RecordingGroup : public ProcessGroup {
 public:
  explicit RecordingGroup(int size) : ProcessGroup(0, size) {}
  std::string backend_name() const override { return "recording"; }
  std::shared_ptr<Work> allreduce(std::vector<Tensor> tensors, ReduceOp) override {
    recorded.push_back(tensors.at(0).clone());
    return std::make_shared<DoneWork>();
  }
  std::shared_ptr<Work> broadcast(std::vector<Tensor>, int) override {
    return std::make_shared<DoneWork>();
  }
  std::shared_ptr<Work> allgather(std::vector<Tensor>, Tensor) override { throw Error("unused"); }
  std::shared_ptr<Work> reduce_scatter(Tensor, std::vector<Tensor>, ReduceOp) override {
    throw Error("unused");
  }
  std::shared_ptr<Work> barrier() override { return std::make_shared<DoneWork>(); }
  std::vector<Tensor> recorded;
};

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// One backward of sum_i (p_i * c_i).sum(), so that p_i's gradient is exactly c_i; checks every
// recorded bucket against the closed form c * float(1 / world).
void check_iteration(Reducer& reducer, RecordingGroup& group, const std::vector<Tensor>& params,
                     const std::vector<Tensor>& c) {
  const auto buckets = reducer.bucket_indices();
  group.recorded.clear();
  Tensor loss;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor term = (params[i] * c[i]).sum();
    loss = loss.defined() ? loss + term : term;
  }
  reducer.prepare_for_backward({loss});
  loss.backward();
  ASSERT_EQ(group.recorded.size(), buckets.size());
  const float f = static_cast<float>(1.0 / group.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    const std::vector<float> got = group.recorded[b].to_vector_float();
    size_t at = 0;
    for (size_t p : buckets[b]) {
      const std::vector<float> g = c[p].to_vector_float();
      for (size_t k = 0; k < g.size(); ++k, ++at) {
        ASSERT_LT(at, got.size());
        ASSERT_TRUE(same_bits(got[at], g[k] * f))
            << "bucket " << b << " parameter " << p << " element " << k << ": " << got[at]
            << " != " << g[k] << " * " << f;
      }
    }
    EXPECT_EQ(at, got.size());
  }
  // The (identity) reduction's result is the parameters' gradient afterwards.
  for (size_t p = 0; p < params.size(); ++p) {
    const std::vector<float> g = params[p].grad().to_vector_float();
    const std::vector<float> want = c[p].to_vector_float();
    for (size_t k = 0; k < g.size(); ++k) ASSERT_TRUE(same_bits(g[k], want[k] * f)) << p;
  }
}

void run(bool bucket_view) {
  manual_seed(7);
  std::vector<Tensor> params, c;
  std::vector<std::string> names;
  for (int64_t n : {5, 1000, 70001, 3}) {
    params.push_back(zeros({n}, {.requires_grad = true}));
    c.push_back(randn({n}));
    names.push_back("p");
    names.back() += std::to_string(n);  // (GCC 12 warns on "p" + to_string: a false -Wrestrict)
  }
  auto group = std::make_shared<RecordingGroup>(3);  // 1/3 is inexact in binary
  ReducerOptions o;
  o.first_bucket_bytes = 64;  // several buckets
  o.bucket_bytes = 4096;
  o.gradient_as_bucket_view = bucket_view;
  Reducer reducer(params, names, group, o);
  check_iteration(reducer, *group, params, c);
  // Under bucket views the gradients now live in the (rebuilt) buckets: the next backward
  // accumulates into them, and the Reducer scales them where they lie.
  for (auto& p : params) p.mutable_grad().zero_();
  check_iteration(reducer, *group, params, c);
}

// Whether p's gradient lies in one of the reducer's buckets.
bool in_a_bucket(const Reducer& reducer, const Tensor& g) {
  const auto* at = static_cast<const char*>(g.device_ptr());
  for (size_t b = 0; b < reducer.bucket_indices().size(); ++b) {
    const Tensor bucket = reducer.padded_bucket(b);
    const auto* lo = static_cast<const char*>(bucket.device_ptr());
    if (at >= lo && at < lo + bucket.nbytes()) return true;
  }
  return false;
}

// Note [Gradient into a destination]: two Linears, whose weight gradients linear's backward
// writes straight into their bucket slots (seen from a hook that runs after the Reducer's); the
// buckets hold exactly g * float(1 / world), as PyTorch's Reducer computes it, and afterwards
// each .grad is a tensor of its own, not the bucket. World 2 applies the factor as the gradient
// is written, world 3 multiplies the slot once. The third backward accumulates into existing
// .grads, so the weights' gradients are copied into the buckets as before.
void run_linear(int world) {
  Generator gen(5);
  Tensor x = randn({6, 8}, &gen), c = randn({6, 4}, &gen);
  std::vector<Tensor> init{randn({16, 8}, &gen), randn({16}, &gen), randn({4, 16}, &gen),
                           randn({4}, &gen)};
  auto leaves = [&] {
    std::vector<Tensor> p;
    for (const Tensor& t : init) p.push_back(t.clone().requires_grad_(true));
    return p;
  };
  auto loss_of = [&](const std::vector<Tensor>& p) {
    namespace F = nn::functional;
    return (F::linear(F::linear(x, p[0], p[1]), p[2], p[3]) * c).sum();
  };
  std::vector<Tensor> ref = leaves(), params = leaves();
  loss_of(ref).backward();
  auto group = std::make_shared<RecordingGroup>(world);
  ReducerOptions o;
  o.first_bucket_bytes = 64;
  o.bucket_bytes = 300;  // w2 and b2, then w1 and b1 in buckets of their own
  Reducer reducer(params, {"w1", "b1", "w2", "b2"}, group, o);
  std::vector<int> went(4, -1);
  for (int i = 0; i < 4; ++i)
    params[i].register_post_accumulate_grad_hook([&, i](Tensor& p) {
      went[i] = autograd::gradient_went_to_destination(p) && in_a_bucket(reducer, p.grad());
    });
  const float f = static_cast<float>(1.0 / world);
  for (int iteration = 0; iteration < 3; ++iteration) {
    if (iteration < 2)
      for (Tensor& p : params) p.mutable_grad() = Tensor();  // zero_grad(set_to_none)
    else
      for (Tensor& p : params) p.mutable_grad().zero_();
    group->recorded.clear();
    const auto buckets = reducer.bucket_indices();  // as this iteration's reduction sees them
    Tensor loss = loss_of(params);
    reducer.prepare_for_backward({loss});
    loss.backward();
    const bool direct = iteration < 2;
    EXPECT_EQ(went, (std::vector<int>{direct, 0, direct, 0})) << "iteration " << iteration;
    ASSERT_EQ(group->recorded.size(), buckets.size());
    for (size_t b = 0; b < buckets.size(); ++b) {
      const std::vector<float> got = group->recorded[b].to_vector_float();
      size_t at = 0;
      for (size_t p : buckets[b])
        for (float g : ref[p].grad().to_vector_float())
          ASSERT_TRUE(same_bits(got.at(at++), g * f)) << "iteration " << iteration << " p" << p;
    }
    for (size_t p = 0; p < params.size(); ++p) {
      EXPECT_FALSE(in_a_bucket(reducer, params[p].grad())) << p;
      const std::vector<float> g = params[p].grad().to_vector_float(),
                               want = ref[p].grad().to_vector_float();
      for (size_t k = 0; k < g.size(); ++k) ASSERT_TRUE(same_bits(g[k], want[k] * f)) << p;
    }
  }
}

TEST(Reducer, BucketsHoldGradientsTimesOneOverWorld) { run(false); }
TEST(Reducer, LinearWeightGradientsGoStraightIntoTheirBucketsAtWorld2) { run_linear(2); }
TEST(Reducer, LinearWeightGradientsGoStraightIntoTheirBucketsAtWorld3) { run_linear(3); }
TEST(Reducer, BucketViewsAreScaledInPlace) { run(true); }

}  // namespace
