// One rank of the ZeroRedundancyOptimizer tests (tests/test_zero.cpp, under weft-run). Two
// copies of one model train side by side under DDP on the same batches: one steps through
// ZeroRedundancyOptimizer, the other through the plain optimizer. Their gradients are the same
// bits, so their parameters must stay equal; the consolidated state must equal the plain
// optimizer's, and loading it back must continue the run exactly.
#include <weft/distributed/distributed.h>
#include <weft/distributed/optim/zero_redundancy_optimizer.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/weft.h>

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
    std::fflush(stdout);
    dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", test::g_rank, e.what());
    return 3;
  }
}
