// One rank of the PowerSGD hook tests (tests/test_powersgd.cpp, launched by weft-run):
// "exact": with full rank the low-rank product reproduces every gradient, so DDP with the hook
// equals one process on the whole batch; "converges": rank 1 with error feedback trains a small
// classifier nearly as well as plain DDP while sending a fraction of the elements.
#include <weft/distributed/ddp_comm_hooks/powersgd_hook.h>
#include <weft/distributed/distributed.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/weft.h>

#include <cstdio>
#include <string>

#include "worker_check.h"

using namespace weft;
namespace F = weft::nn::functional;

namespace {

int g_world = 1;

nn::Sequential make_mlp() {
  return nn::Sequential(
      {nn::Linear(12, 32), nn::ReLU(), nn::Linear(32, 24), nn::Tanh(), nn::Linear(24, 3)});
}

// A learnable task: the class is which of three fixed directions x is closest to. Every rank
// draws the same global batch of step t and trains on its own rows.
std::pair<Tensor, Tensor> global_batch(int t, int64_t per_rank) {
  Generator g(500 + t), fixed(7);
  Tensor dirs = randn({12, 3}, &fixed);
  Tensor x = randn({per_rank * g_world, 12}, &g);
  return {x, x.matmul(dirs).argmax(1)};
}

// DDP (with `state`'s hook if given) for `steps` SGD steps; returns the last loss on the whole
// batch and leaves the trained model in *out.
double train(std::shared_ptr<dist::PowerSGDState> state, int steps, nn::Sequential* out) {
  manual_seed(11);
  auto model = make_mlp();
  nn::DistributedDataParallel ddp(model.ptr(), {.bucket_cap_mb = 0.002});
  if (state) ddp->register_comm_hook(dist::powerSGD_hook(state));
  optim::SGD opt(ddp->parameters(), {.lr = 0.1, .momentum = 0.9});
  const int64_t B = 16;
  for (int t = 0; t < steps; ++t) {
    auto [x, y] = global_batch(t, B);
    opt.zero_grad();
    F::cross_entropy(ddp(x.narrow(0, test::g_rank * B, B)), y.narrow(0, test::g_rank * B, B))
        .backward();
    opt.step();
  }
  *out = model;
  NoGradGuard ng;
  auto [x, y] = global_batch(10000, 64);
  return F::cross_entropy(model->forward(x), y).item<double>();
}

int exact() {
  dist::PowerSGDOptions o;
  o.matrix_approximation_rank = 32;  // >= min(n, m) of every weight: no information is lost
  o.min_compression_rate = 1e-9;     // compress every matrix anyway
  o.start_powerSGD_iter = 2;
  o.orthogonalization_epsilon = 1e-20;
  auto state = std::make_shared<dist::PowerSGDState>(o);
  nn::Sequential ddp_model, alone;
  train(state, 6, &ddp_model);
  // One process on the concatenated batch.
  manual_seed(11);
  alone = make_mlp();
  optim::SGD opt(alone->parameters(), {.lr = 0.1, .momentum = 0.9});
  for (int t = 0; t < 6; ++t) {
    auto [x, y] = global_batch(t, 16);
    opt.zero_grad();
    F::cross_entropy(alone->forward(x), y).backward();
    opt.step();
  }
  auto pa = ddp_model->parameters(), pb = alone->parameters();
  double worst = 0;
  for (size_t i = 0; i < pa.size(); ++i)
    worst = std::max(worst, max_rel_diff(pa[i], pb[i], 1e-4, 1e-5));
  std::printf("rank %d: exact: iter %lld, max relative difference %.3g\n", test::g_rank,
              static_cast<long long>(state->iter), worst);
  EXPECT(state->iter == 6, "the hook counted ", state->iter, " steps, not 6");
  EXPECT(state->elements_uncompressed > 0, "the hook never compressed");
  EXPECT(worst <= 1.0, "full-rank PowerSGD differs from one process: ", worst);
  return 0;
}

int converges() {
  nn::Sequential plain_model, psgd_model;
  const int steps = 150;
  const double plain = train(nullptr, steps, &plain_model);
  dist::PowerSGDOptions o;
  o.start_powerSGD_iter = 10;
  auto state = std::make_shared<dist::PowerSGDState>(o);
  const double psgd = train(state, steps, &psgd_model);
  manual_seed(11);
  auto fresh = make_mlp();
  NoGradGuard ng;
  auto [x, y] = global_batch(10000, 64);
  const double initial = F::cross_entropy(fresh->forward(x), y).item<double>();
  const double ratio =
      static_cast<double>(state->elements_sent) / static_cast<double>(state->elements_uncompressed);
  std::printf(
      "rank %d: converges: loss %.4f at start, %.4f plain DDP, %.4f PowerSGD rank 1; "
      "elements sent %.3f of uncompressed\n",
      test::g_rank, initial, plain, psgd, ratio);
  EXPECT(psgd < 0.5 * initial, "PowerSGD did not learn: ", psgd, " vs ", initial, " at start");
  EXPECT(psgd < plain + 0.1, "PowerSGD fell far behind plain DDP: ", psgd, " vs ", plain);
  EXPECT(ratio < 0.5, "PowerSGD sent ", ratio, " of the elements");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    dist::init_process_group();
    test::g_rank = dist::get_rank();
    g_world = dist::get_world_size();
    set_num_threads(1);
    int rc = 64;
    if (mode == "exact") rc = exact();
    if (mode == "converges") rc = converges();
    std::fflush(stdout);
    dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", test::g_rank, e.what());
    return 3;
  }
}
