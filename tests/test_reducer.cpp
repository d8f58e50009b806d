// DDP's Reducer in one process, against a process group that records what it is asked to
// all-reduce (and, being one rank's view of a world of 3, returns it unchanged): each bucket must
// hold every gradient times 1/world exactly as PyTorch's Reducer computes it (the factor rounded
// to float once, one product per element), whether the gradient is copied into the bucket or
// already lives there (gradient_as_bucket_view).
#include <gtest/gtest.h>

#include <cstring>

#include "weft/distributed/reducer.h"
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

TEST(Reducer, BucketsHoldGradientsTimesOneOverWorld) { run(false); }
TEST(Reducer, BucketViewsAreScaledInPlace) { run(true); }

}  // namespace
