// One rank of the ZeroRedundancyOptimizer tests (tests/test_zero.cpp, under weft-run). Two
// copies of one model train side by side under DDP on the same batches: one steps through
// ZeroRedundancyOptimizer, the other through the plain optimizer. Their gradients are the same
// bits, so their parameters must stay equal; the consolidated state must equal the plain
// optimizer's, and loading it back must continue the run exactly. The zero2 modes do the same
// with ZeRO-2 (ZeroOptions::reduce_scatter_grads, attached to the DDP model): several buckets
// whose sizes do not divide by the world size, parameters cut by the ranks' slices.
#include <weft/distributed/distributed.h>
#include <weft/distributed/optim/zero_redundancy_optimizer.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/weft.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "worker_check.h"

using namespace weft;
namespace F = weft::nn::functional;

namespace {

int g_world = 1;
// How ZeroRedundancyOptimizer brings the updated shares to every rank (argv[3]).
dist::ZeroOptions g_zero;

// Parameters of very different sizes (8x40, 40, 40x24, 24, 24x3, 3): uneven shares.
nn::Sequential make_mlp() {
  manual_seed(5);
  return nn::Sequential(
      {nn::Linear(8, 40), nn::ReLU(), nn::Linear(40, 24), nn::Tanh(), nn::Linear(24, 3)});
}

std::unique_ptr<optim::Optimizer> make_plain(const std::string& kind,
                                             std::vector<optim::ParamGroup> groups) {
  if (kind == "sgd") return std::make_unique<optim::SGD>(std::move(groups));
  return std::make_unique<optim::Adam>(std::move(groups), /*decoupled=*/kind == "adamw");
}

optim::ParamGroupOptions options_for(const std::string& kind) {
  if (kind == "sgd") return {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4};
  return {.lr = 0.01, .weight_decay = kind == "adamw" ? 1e-2 : 1e-4};
}

// The Zero run and the plain run, each a DDP model with its optimizer.
struct Pair {
  nn::Sequential zm = make_mlp(), pm = make_mlp();
  nn::DistributedDataParallel zddp{zm.ptr()}, pddp{pm.ptr()};
  std::unique_ptr<dist::ZeroRedundancyOptimizer> zero;
  std::unique_ptr<optim::Optimizer> plain;
  Pair(const std::string& kind) {
    auto make = [kind](std::vector<optim::ParamGroup> g) { return make_plain(kind, std::move(g)); };
    zero = std::make_unique<dist::ZeroRedundancyOptimizer>(zddp->parameters(), make,
                                                           options_for(kind), nullptr, g_zero);
    plain = make_plain(kind, {optim::ParamGroup{pddp->parameters(), options_for(kind)}});
  }
  void step(int t) {
    Generator g(100 + t);
    const int64_t B = 4;
    Tensor x = randn({B * g_world, 8}, &g);
    Tensor y = randint(0, 3, {B * g_world}, &g);
    Tensor xs = x.narrow(0, test::g_rank * B, B), ys = y.narrow(0, test::g_rank * B, B);
    if (t == 5) {  // an LR scheduler's change reaches the ranks' shares
      zero->param_groups()[0].options.lr *= 0.5;
      plain->param_groups()[0].options.lr *= 0.5;
    }
    zero->zero_grad();
    F::cross_entropy(zddp(xs), ys).backward();
    zero->step();
    plain->zero_grad();
    F::cross_entropy(pddp(xs), ys).backward();
    plain->step();
  }
  double max_diff() {
    auto a = zm->parameters(), b = pm->parameters();
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, max_rel_diff(a[i], b[i], 1e-6, 0));
    return worst;
  }
};

int equivalence(const std::string& kind) {
  Pair p(kind);
  for (int t = 0; t < 10; ++t) p.step(t);
  // This rank holds state for its share only.
  const auto local = p.zero->local_optimizer().state_dict();
  size_t owned = 0;
  for (size_t i = 0; i < p.zm->parameters().size(); ++i)
    owned += p.zero->rank_of(i) == test::g_rank;
  EXPECT(std::stoul(local.scalars.at("param_groups.0.num_params")) == owned,
         "the local optimizer holds ", local.scalars.at("param_groups.0.num_params"),
         " parameters, not its share of ", owned);
  const double d = p.max_diff();
  std::printf("rank %d: %s: %zu of %zu parameters here, max relative difference %.3g\n",
              test::g_rank, kind.c_str(), owned, p.zm->parameters().size(), d);
  EXPECT(d <= 1.0, "ZeroRedundancyOptimizer differs from ", kind, " by ", d, " x 1e-6");
  return 0;
}

// The plain state without the tensors and step counts of parameters other ranks step.
optim::OptimizerState share_of(const optim::OptimizerState& whole,
                               const dist::ZeroRedundancyOptimizer& zero) {
  optim::OptimizerState part;
  auto mine = [&](const std::string& key) {
    return key.rfind("state.", 0) != 0 || zero.rank_of(std::stoul(key.substr(6))) == test::g_rank;
  };
  for (const auto& [k, v] : whole.scalars)
    if (mine(k)) part.scalars[k] = v;
  for (const auto& [k, t] : whole.tensors)
    if (mine(k)) part.tensors.insert(k, t);
  return part;
}

bool same_state(const optim::OptimizerState& a, const optim::OptimizerState& b) {
  if (a.scalars != b.scalars || a.tensors.size() != b.tensors.size()) return false;
  for (const auto& [k, t] : a.tensors) {
    const Tensor* u = b.tensors.find(k);
    if (!u || max_rel_diff(t, *u, 0, 0) > 0) return false;
  }
  return true;
}

int state(const std::string& kind) {
  Pair p(kind);
  for (int t = 0; t < 5; ++t) p.step(t);
  EXPECT(same_state(p.zero->local_state_dict(), share_of(p.plain->state_dict(), *p.zero)),
         "local_state_dict() differs from this rank's share of the plain optimizer's state");
  const int to = g_world - 1;
  p.zero->consolidate_state_dict(to);
  if (test::g_rank == to) {
    EXPECT(same_state(p.zero->state_dict(), p.plain->state_dict()),
           "the consolidated state differs from the plain optimizer's");
  } else {
    bool refused = false;
    try {
      p.zero->state_dict();
    } catch (const Error& e) {
      refused = std::string(e.what()).find("consolidate_state_dict") != std::string::npos;
    }
    EXPECT(refused, "state_dict() on a rank without the consolidated state did not say so");
  }
  // Resume: a fresh Zero over the trained parameters takes the plain optimizer's state.
  auto make = [kind](std::vector<optim::ParamGroup> g) { return make_plain(kind, std::move(g)); };
  p.zero = std::make_unique<dist::ZeroRedundancyOptimizer>(p.zddp->parameters(), make,
                                                           options_for(kind), nullptr, g_zero);
  // SGD: every rank passes the whole plain state; the others only their share of it, as a
  // sharded checkpoint gives them.
  const auto whole = p.plain->state_dict();
  p.zero->load_state_dict(kind == "sgd" ? whole : share_of(whole, *p.zero));
  for (int t = 5; t < 10; ++t) p.step(t);
  const double d = p.max_diff();
  std::printf("rank %d: %s resumed: max relative difference %.3g\n", test::g_rank, kind.c_str(), d);
  EXPECT(d <= 1.0, "resumed ZeroRedundancyOptimizer differs from ", kind, " by ", d, " x 1e-6");
  return 0;
}

// ZeRO-2: a deeper model, 1657 elements: at bucket_cap_mb 0.0005 DDP builds 3 buckets (354, 943
// and 360 elements) and rebuilds them after the first backward as 4 (in arrival order).
nn::Sequential make_mlp2() {
  manual_seed(7);
  return nn::Sequential({nn::Linear(8, 40), nn::ReLU(), nn::Linear(40, 23), nn::Tanh(),
                         nn::Linear(23, 13), nn::ReLU(), nn::Linear(13, 3)});
}

const nn::DistributedDataParallelOptions kSmallBuckets{.bucket_cap_mb = 0.0005};

std::unique_ptr<dist::ZeroRedundancyOptimizer> make_zero2(const std::string& kind,
                                                          nn::DistributedDataParallel& ddp) {
  auto make = [kind](std::vector<optim::ParamGroup> g) { return make_plain(kind, std::move(g)); };
  auto zero = std::make_unique<dist::ZeroRedundancyOptimizer>(
      ddp->parameters(), make, options_for(kind), nullptr,
      dist::ZeroOptions{.reduce_scatter_grads = true});
  zero->attach(ddp->reducer());
  return zero;
}

// A DDP hook that sums as ZeRO-2 does: each bucket reduce-scattered (Gloo sums the ranks in
// another order than its all-reduce at world 4) and all-gathered back, all-reduced while DDP's
// layout is not final. DDP with it and the plain optimizer must equal ZeRO-2 bit for bit.
dist::CommHook same_sums_hook(const dist::Reducer* reducer) {
  return [reducer](dist::ProcessGroup& pg, dist::GradBucket& b) -> std::shared_ptr<dist::Work> {
    if (!reducer->buckets_rebuilt()) return pg.allreduce({b.buffer});
    Tensor slice = zeros({b.padded.numel() / pg.size()});
    pg.reduce_scatter_tensor(slice, b.padded)->wait();
    return pg.allgather_into_tensor(b.padded, slice);
  };
}

// DDP + ZeRO-2 beside plain DDP + the plain optimizer (pm), and beside DDP with the same sums as
// ZeRO-2's + the plain optimizer (qm), on the same batches.
struct Pair2 {
  nn::Sequential zm = make_mlp2(), pm = make_mlp2(), qm = make_mlp2();
  nn::DistributedDataParallel zddp{zm.ptr(), kSmallBuckets}, pddp{pm.ptr(), kSmallBuckets},
      qddp{qm.ptr(), kSmallBuckets};
  std::string kind;
  std::unique_ptr<dist::ZeroRedundancyOptimizer> zero;
  std::unique_ptr<optim::Optimizer> plain, qplain;
  explicit Pair2(const std::string& k) : kind(k) {
    zero = make_zero2(kind, zddp);
    plain = make_plain(kind, {optim::ParamGroup{pddp->parameters(), options_for(kind)}});
    qplain = make_plain(kind, {optim::ParamGroup{qddp->parameters(), options_for(kind)}});
    qddp->register_comm_hook(same_sums_hook(&qddp->reducer()));
  }
  void step(int t) {
    Generator g(200 + t);
    const int64_t B = 4;
    Tensor x = randn({B * g_world, 8}, &g);
    Tensor y = randint(0, 3, {B * g_world}, &g);
    Tensor xs = x.narrow(0, test::g_rank * B, B), ys = y.narrow(0, test::g_rank * B, B);
    if (t == 5) {
      zero->param_groups()[0].options.lr *= 0.5;
      plain->param_groups()[0].options.lr *= 0.5;
      qplain->param_groups()[0].options.lr *= 0.5;
    }
    zero->zero_grad();
    F::cross_entropy(zddp(xs), ys).backward();
    // What .grad holds under ZeRO-2: nothing, on every rank, for every parameter.
    for (const auto& [name, p] : zm->named_parameters())
      EXPECT(!p.grad().defined(), "step ", t, ": ", name,
             " has a .grad after a ZeRO-2 backward; DDP should not write gradients back");
    zero->step();
    plain->zero_grad();
    F::cross_entropy(pddp(xs), ys).backward();
    plain->step();
    qplain->zero_grad();
    F::cross_entropy(qddp(xs), ys).backward();
    qplain->step();
  }
  // Against plain DDP: relative 1e-6, and 1e-7 absolute for elements near zero (at world 4 the
  // gradients differ from the all-reduce's in the last bit: sums in another order).
  double max_diff() {
    auto a = zm->parameters(), b = pm->parameters();
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, max_rel_diff(a[i], b[i], 1e-6, 1e-7));
    return worst;
  }
  // Against the same sums: exact.
  double max_diff_same_sums() {
    auto a = zm->parameters(), b = qm->parameters();
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, max_rel_diff(a[i], b[i], 0, 0));
    return worst;
  }
};

int equivalence2(const std::string& kind) {
  Pair2 p(kind);
  for (int t = 0; t < 10; ++t) p.step(t);
  const size_t buckets = p.zddp->reducer().bucket_indices().size();
  EXPECT(buckets >= 3, "the test model has ", buckets, " DDP buckets; it needs several");
  // This rank steps about 1/N of the elements, and the ranks together all of them once.
  int64_t mine = 0, total = 0;
  for (const auto& g : p.zero->local_optimizer().param_groups())
    for (const auto& t : g.params) mine += t.numel();
  for (const auto& t : p.zm->parameters()) total += t.numel();
  Tensor all = tensor(std::vector<int64_t>{mine}, {1});
  dist::all_reduce(all);
  EXPECT(all.to_vector_int64()[0] == total, "the ranks step ", all.to_vector_int64()[0],
         " elements together, not the model's ", total);
  EXPECT(mine <= total / g_world + (int64_t)buckets, "this rank steps ", mine, " of ", total,
         " elements");
  const double d = p.max_diff(), exact = p.max_diff_same_sums();
  std::printf(
      "rank %d: zero2 %s: %zu buckets, %lld of %lld elements here, max rel diff %.3g, "
      "from the same sums %.3g\n",
      test::g_rank, kind.c_str(), buckets, (long long)mine, (long long)total, d, exact);
  EXPECT(exact == 0, "ZeRO-2 differs from DDP with the same sums + ", kind, ": ", exact);
  EXPECT(d <= 1.0, "ZeRO-2 differs from DDP + ", kind, " by ", d, " x (1e-6 relative + 1e-7)");
  return 0;
}

bool close_state(const optim::OptimizerState& a, const optim::OptimizerState& b, std::string* why) {
  if (a.scalars != b.scalars) {
    *why = "scalars differ";
    return false;
  }
  if (a.tensors.size() != b.tensors.size()) {
    *why = "tensor counts differ";
    return false;
  }
  for (const auto& [k, t] : a.tensors) {
    const Tensor* u = b.tensors.find(k);
    if (!u || u->sizes() != t.sizes()) {
      *why = k + " missing or of another shape";
      return false;
    }
    const double d = max_rel_diff(t, *u, 1e-5, 1e-9);
    if (d > 1) {
      *why = k + " differs by " + std::to_string(d) + " x (1e-5 relative + 1e-9)";
      return false;
    }
  }
  return true;
}

// Consolidated ZeRO-2 state = the plain optimizer's state; the plain optimizer loads it, a fresh
// ZeRO-2 loads it (Adam) or the plain one's (SGD) before its first step, and both continue equal.
int state2(const std::string& kind) {
  Pair2 p(kind);
  for (int t = 0; t < 5; ++t) p.step(t);
  optim::OptimizerState whole;
  for (int to = 0; to < g_world; ++to) {  // every rank gets it
    p.zero->consolidate_state_dict(to);
    if (test::g_rank == to) whole = p.zero->state_dict();
  }
  std::string why;
  const optim::OptimizerState plain_state = p.plain->state_dict();
  EXPECT(close_state(whole, plain_state, &why),
         "the consolidated ZeRO-2 state differs from the plain optimizer's: ", why);
  bool refused = false;
  try {
    p.zero->local_state_dict();
  } catch (const Error& e) {
    refused = std::string(e.what()).find("consolidate_state_dict") != std::string::npos;
  }
  EXPECT(refused, "local_state_dict() under ZeRO-2 did not point to consolidate_state_dict");
  p.plain->load_state_dict(whole);
  p.zero = make_zero2(kind, p.zddp);
  const optim::OptimizerState& resume = kind == "sgd" ? plain_state : whole;
  p.zero->load_state_dict(resume);
  p.qplain->load_state_dict(resume);
  for (int t = 5; t < 10; ++t) p.step(t);
  p.zero->consolidate_state_dict(0);
  if (test::g_rank == 0)
    EXPECT(close_state(p.zero->state_dict(), p.plain->state_dict(), &why),
           "after resuming, the ZeRO-2 state differs from the plain optimizer's: ", why);
  const double d = p.max_diff();
  EXPECT(p.max_diff_same_sums() == 0, "resumed ZeRO-2 differs from DDP with the same sums");
  std::printf("rank %d: zero2 %s resumed: max relative difference %.3g\n", test::g_rank,
              kind.c_str(), d);
  EXPECT(d <= 1.0, "resumed ZeRO-2 differs from ", kind, " by ", d, " x (1e-6 + 1e-7)");
  return 0;
}

// An optimizer whose update reads the whole parameter (its gradient's norm): not elementwise.
struct NormalizedSGD : optim::Optimizer {
  using Optimizer::Optimizer;
  void step() override {
    NoGradGuard ng;
    for (auto& g : groups_)
      for (auto& p : g.params)
        if (p.grad().defined()) {
          const double n = std::sqrt((p.grad() * p.grad()).sum().item<float>());
          p.add_(p.grad() * (-g.options.lr / n));
        }
  }
};

template <typename Fn>
void expect_error(const std::string& what, const std::string& needle, Fn fn) {
  std::string msg = "(no error)";
  try {
    fn();
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT(msg.find(needle) != std::string::npos, what, ": expected an error containing '", needle,
         "', got: ", msg);
}

int errors2() {
  nn::Sequential m = make_mlp2();
  nn::DistributedDataParallel ddp(m.ptr(), kSmallBuckets);
  const dist::ZeroOptions z2{.reduce_scatter_grads = true};
  expect_error("a non-elementwise optimizer", "only elementwise optimizers", [&] {
    dist::ZeroRedundancyOptimizer(
        ddp->parameters(),
        [](std::vector<optim::ParamGroup> g) {
          return std::make_unique<NormalizedSGD>(std::move(g));
        },
        options_for("sgd"), nullptr, z2);
  });
  auto make = [](std::vector<optim::ParamGroup> g) { return make_plain("adam", std::move(g)); };
  dist::ZeroRedundancyOptimizer zero1(ddp->parameters(), make, options_for("adam"));
  expect_error("attach without reduce_scatter_grads", "only with ZeroOptions::reduce_scatter_grads",
               [&] { zero1.attach(ddp->reducer()); });
  auto params = ddp->parameters();
  params.pop_back();
  dist::ZeroRedundancyOptimizer part(params, make, options_for("adam"), nullptr, z2);
  expect_error("attach with a parameter missing", "is not among the optimizer's",
               [&] { part.attach(ddp->reducer()); });
  dist::ZeroRedundancyOptimizer zero(ddp->parameters(), make, options_for("adam"), nullptr, z2);
  expect_error("step before attach", "needs attach(ddp->reducer())", [&] { zero.step(); });
  zero.attach(ddp->reducer());
  expect_error("attach twice", "already attached", [&] { zero.attach(ddp->reducer()); });
  expect_error("step without backward", "without a synchronised DDP backward",
               [&] { zero.step(); });
  Tensor x = randn({4, 8});
  Tensor y = randint(0, 3, {4});
  F::cross_entropy(ddp(x), y).backward();
  zero.step();
  expect_error("a second step after one backward", "without a synchronised DDP backward",
               [&] { zero.step(); });
  expect_error("rank_of under ZeRO-2", "slices of parameters", [&] { zero.rank_of(0); });
  expect_error("DDP's join under ZeRO-2", "join is not supported", [&] { ddp->join([] {}); });
  nn::Sequential m2 = make_mlp2();
  nn::DistributedDataParallel unused(m2.ptr(), {.find_unused_parameters = true});
  dist::ZeroRedundancyOptimizer z(unused->parameters(), make, options_for("adam"), nullptr, z2);
  expect_error("find_unused_parameters", "find_unused_parameters",
               [&] { z.attach(unused->reducer()); });
  std::printf("rank %d: zero2 errors: all refused clearly\n", test::g_rank);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "", kind = argc > 2 ? argv[2] : "sgd";
  const std::string sync = argc > 3 ? argv[3] : "";
  if (sync == "allgather" || sync == "chunked")
    g_zero.parameter_sync = dist::ZeroOptions::ParameterSync::AllGather;
  // Chunks of 100 elements: pieces that start and end inside parameters (8x40 has 320).
  if (sync == "chunked") g_zero.allgather_chunk = 100;
  try {
    dist::init_process_group();
    test::g_rank = dist::get_rank();
    g_world = dist::get_world_size();
    set_num_threads(1);
    int rc = 64;
    if (mode == "equiv") rc = equivalence(kind);
    if (mode == "state") rc = state(kind);
    if (mode == "zero2") rc = equivalence2(kind);
    if (mode == "zero2state") rc = state2(kind);
    if (mode == "zero2errors") rc = errors2();
    std::fflush(stdout);
    dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", test::g_rank, e.what());
    return 3;
  }
}
