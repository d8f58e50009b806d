// One rank of the SyncBatchNorm tests (run under weft-run or mpirun): compares SyncBatchNorm
// across N ranks with BatchNorm on the concatenated batch computed in-process. Exits 0 when
// this rank matched; prints "rank R: ..." lines.
#include <weft/distributed/distributed.h>
#include <weft/distributed/sync_batchnorm.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/nn/sync_batchnorm.h>
#include <weft/weft.h>

#include <cstdio>
#include <sstream>
#include <string>

using namespace weft;
namespace F = weft::nn::functional;

namespace {

int g_rank = 0, g_world = 1;

bool check(const char* what, const Tensor& a, const Tensor& b, double rtol = 1e-5) {
  double r = max_rel_diff(a, b, rtol, rtol * 0.1);
  if (r > 1.0) std::printf("rank %d: MISMATCH %s: %.3g x tolerance\n", g_rank, what, r);
  return r <= 1.0;
}

std::vector<int64_t> parse_sizes(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoll(item));
  return v;
}

// Rank r holds rows [start_r, start_r + sizes[r]) of a global batch; sync_bn vs BatchNorm
// on all of it: output, running stats, dx, and the rank-sum of weight/bias gradients.
int equivalence(const std::vector<int64_t>& sizes, Shape tail,
                std::shared_ptr<dist::ProcessGroup> pg, int rank_in_group, int first_global_rank) {
  const int64_t C = 3, total = [&] {
    int64_t t = 0;
    for (auto s : sizes) t += s;
    return t;
  }();
  Shape shape{total, C};
  shape.insert(shape.end(), tail.begin(), tail.end());
  Generator g(42 + first_global_rank);
  Tensor x = randn(shape, &g) * 2.0 + 0.5, gout = randn(shape, &g);
  int64_t start = 0;
  for (int r = 0; r < rank_in_group; ++r) start += sizes[r];
  const int64_t mine = sizes[rank_in_group];
  nn::SyncBatchNorm sbn(C, {}, dist::batchnorm_sync(pg));
  {
    NoGradGuard ng;
    sbn->weight.copy_(tensor(std::vector<float>{1.5f, -0.5f, 2.0f}, {3}));
    sbn->bias.copy_(tensor(std::vector<float>{0.1f, 0.2f, -0.3f}, {3}));
  }
  auto ref = std::dynamic_pointer_cast<nn::SyncBatchNormImpl>(sbn->clone());
  ref->sync = nullptr;  // plain BatchNorm on the whole batch
  Tensor xs = x.narrow(0, start, mine).detach().clone().requires_grad_(true);
  Tensor xr = x.detach().clone().requires_grad_(true);
  bool ok = true;
  for (int it = 0; it < 2; ++it) {  // twice: running statistics accumulate
    sbn->zero_grad();
    ref->zero_grad();
    xs.mutable_grad() = Tensor();
    xr.mutable_grad() = Tensor();
    Tensor ys = sbn(xs), yr = ref->forward(xr);
    ok &= check("output", ys, yr.narrow(0, start, mine));
    (ys * gout.narrow(0, start, mine)).sum().backward();
    (yr * gout).sum().backward();
    ok &= check("input gradient", xs.grad(), xr.grad().narrow(0, start, mine));
    Tensor gw = sbn->weight.grad().clone(), gb = sbn->bias.grad().clone();
    pg->allreduce({gw})->wait();
    pg->allreduce({gb})->wait();
    ok &= check("weight gradient (summed over ranks)", gw, ref->weight.grad());
    ok &= check("bias gradient (summed over ranks)", gb, ref->bias.grad());
    ok &= check("running_mean", sbn->running_mean, ref->running_mean);
    ok &= check("running_var", sbn->running_var, ref->running_var);
  }
  // eval: running statistics, no communication (only this rank calls it).
  sbn->eval();
  ref->eval();
  ok &= check("eval output", sbn(x.narrow(0, start, mine)), ref->forward(x).narrow(0, start, mine));
  std::printf("rank %d: sync batchnorm over %zu ranks, local batch %lld, dims %zu: %s\n", g_rank,
              sizes.size(), (long long)mine, shape.size(), ok ? "match" : "MISMATCH");
  return ok ? 0 : 1;
}

nn::Sequential conv_bn() {
  return nn::Sequential({nn::Conv2d(3, 4, 3, {.padding = {1, 1}}), nn::BatchNorm2d(4), nn::ReLU(),
                         nn::Conv2d(4, 4, 3, {.padding = {1, 1}, .groups = 2}), nn::BatchNorm2d(4),
                         nn::ReLU(), nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(4, 3)});
}

// A converted conv+BN model under DDP equals one process training on the whole batch.
int ddp_training() {
  manual_seed(7 + g_rank);
  auto model = conv_bn();
  auto converted = nn::convert_sync_batchnorm(model.ptr());
  nn::DistributedDataParallel ddp(converted);
  auto ref = model->clone();
  for (auto& [n, m] : ref->named_modules())
    if (auto* bn = dynamic_cast<nn::BatchNormImplBase*>(m.get())) bn->sync = nullptr;
  optim::SGD opt(ddp->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD ref_opt(ref->parameters(), {.lr = 0.1, .momentum = 0.9});
  const int64_t B = 2;
  bool ok = true;
  for (int t = 0; t < 4; ++t) {
    Generator g(500 + t);
    Tensor x = randn({B * g_world, 3, 5, 5}, &g);
    Tensor y = randint(0, 3, {B * g_world}, &g);
    opt.zero_grad();
    F::cross_entropy(ddp(x.narrow(0, g_rank * B, B)), y.narrow(0, g_rank * B, B)).backward();
    opt.step();
    ref_opt.zero_grad();
    F::cross_entropy(ref->forward(x), y).backward();
    ref_opt.step();
  }
  auto a = model->state_dict(), b = ref->state_dict();
  for (auto& [k, t] : a) ok &= check(k.c_str(), t.to(kFloat32), b.at(k).to(kFloat32));
  std::printf("rank %d: DDP + SyncBatchNorm training: %s\n", g_rank, ok ? "match" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "equiv";
  try {
    dist::init_process_group();
    g_rank = dist::get_rank();
    g_world = dist::get_world_size();
    set_num_threads(1);
    int rc = 1;
    if (mode == "equiv") {
      // argv[2]: per-rank batch sizes, e.g. "3,1,0,2"; argv[3]: spatial dims (0..3).
      auto sizes = parse_sizes(argc > 2 ? argv[2] : "2,2");
      int spatial = argc > 3 ? std::atoi(argv[3]) : 2;
      Shape tail(spatial, 3);
      rc = equivalence(sizes, tail, dist::default_group(), g_rank, 0);
    } else if (mode == "subgroup") {
      // Pairs {0,1} and {2,3} normalise over their own pair only.
      auto g01 = dist::new_group({0, 1});
      auto g23 = dist::new_group({2, 3});
      auto mine = g_rank < 2 ? g01 : g23;
      rc = equivalence({2, 3}, {2, 2}, mine, g_rank % 2, g_rank < 2 ? 0 : 2);
    } else if (mode == "ddp") {
      rc = ddp_training();
    }
    std::fflush(stdout);
    dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", g_rank, e.what());
    return 3;
  }
}
