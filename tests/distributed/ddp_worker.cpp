// One rank of the DistributedDataParallel tests (run under weft-run or mpirun). Each mode
// trains or fails in a specific way and exits 0 when this rank saw what the test expects;
// it prints "rank R: ..." lines that the test driver checks.
#include <weft/distributed/distributed.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/weft.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

using namespace weft;
namespace F = weft::nn::functional;

namespace {

int g_rank = 0, g_world = 1;
int g_hook_calls = 0;

nn::Sequential make_mlp() {
  return nn::Sequential(
      {nn::Linear(8, 16), nn::ReLU(), nn::Linear(16, 16), nn::Tanh(), nn::Linear(16, 4)});
}

// The global batch of step t, identical on every rank; rank r trains on rows [r*B, (r+1)*B).
std::pair<Tensor, Tensor> global_batch(int t, int64_t per_rank) {
  Generator g(1000 + t);
  Tensor x = randn({per_rank * g_world, 8}, &g);
  Tensor y = randint(0, 4, {per_rank * g_world}, &g);
  return {x, y};
}

std::unique_ptr<optim::Optimizer> make_opt(const std::string& kind, std::vector<Tensor> params) {
  if (kind == "adam") return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = 0.01});
  return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
}

double max_diff(nn::Module& a, nn::Module& b) {
  auto pa = a.parameters(), pb = b.parameters();
  double worst = 0;
  for (size_t i = 0; i < pa.size(); ++i)
    worst = std::max(worst, max_rel_diff(pa[i], pb[i], 1e-5, 1e-6));
  return worst;
}

// DDP with per-rank batch B vs one process with batch N*B: same parameters every step. With
// `autocast` both run forward and loss under a CPU bf16 region (bf16 gradients for the weights).
int equivalence(const std::string& opt_kind, double bucket_mb, bool as_view,
                const std::string& hook = "", bool autocast = false) {
  manual_seed(100 + g_rank);  // different init per rank: DDP must broadcast rank 0's
  auto model = make_mlp();
  nn::DistributedDataParallel ddp(model.ptr(),
                                  {.bucket_cap_mb = bucket_mb, .gradient_as_bucket_view = as_view});
  if (hook == "fp16") ddp->register_comm_hook(dist::fp16_compress_hook());
  if (hook == "bf16") ddp->register_comm_hook(dist::bf16_compress_hook());
  if (hook == "custom") {
    // A user-defined hook: all-reduce the (pre-divided) bucket itself, counting the calls.
    ddp->register_comm_hook([](dist::ProcessGroup& pg, dist::GradBucket& b) {
      ++g_hook_calls;
      return pg.allreduce({b.buffer});
    });
  }
  auto reference = std::dynamic_pointer_cast<nn::SequentialImpl>(model->clone());
  auto opt = make_opt(opt_kind, ddp->parameters());
  auto ref_opt = make_opt(opt_kind, reference->parameters());
  const int64_t B = 3;
  double worst = 0;
  for (int t = 0; t < 5; ++t) {
    auto [x, y] = global_batch(t, B);
    Tensor loss, ref_loss;
    {
      amp::autocast region(DeviceType::CPU, DType::BFloat16, autocast);
      loss = F::cross_entropy(ddp(x.narrow(0, g_rank * B, B)), y.narrow(0, g_rank * B, B));
      ref_loss = F::cross_entropy(reference->forward(x), y);
    }
    opt->zero_grad();
    loss.backward();
    opt->step();
    ref_opt->zero_grad();
    ref_loss.backward();
    ref_opt->step();
    worst = std::max(worst, max_diff(*model, *reference));
  }
  std::printf("rank %d: buckets %zu, max relative difference %.3g\n", g_rank,
              ddp->reducer().bucket_indices().size(), worst);
  // x 1e-5 relative. bf16: each rank's weight gradient is rounded before the average.
  const double tolerance = hook == "fp16" ? 1e3 : hook == "bf16" || autocast ? 5e3 : 1.0;
  if (hook == "custom" && g_hook_calls == 0) return 1;
  return worst <= tolerance ? 0 : 1;
}

// GradScaler under DDP: at step 2 only rank 1's loss overflows; the all-reduce carries the inf to
// every rank, so all ranks skip that step and back off together, and training still equals one
// process (with the same overflow) on the whole batch.
int scaler() {
  manual_seed(100 + g_rank);
  auto model = make_mlp();
  nn::DistributedDataParallel ddp(model.ptr());
  auto reference = std::dynamic_pointer_cast<nn::SequentialImpl>(model->clone());
  optim::SGD opt(ddp->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD ref_opt(reference->parameters(), {.lr = 0.1, .momentum = 0.9});
  amp::GradScaler sc({.init_scale = 1024.0, .growth_interval = 2});
  amp::GradScaler ref_sc({.init_scale = 1024.0, .growth_interval = 2});
  const int64_t B = 3;
  double worst = 0;
  bool ok = true;
  for (int t = 0; t < 6; ++t) {
    auto [x, y] = global_batch(t, B);
    const bool overflow = t == 2;
    opt.zero_grad();
    Tensor loss = F::cross_entropy(ddp(x.narrow(0, g_rank * B, B)), y.narrow(0, g_rank * B, B));
    if (overflow && g_rank == 1) loss = loss * INFINITY;
    sc.scale(loss).backward();
    const bool stepped = sc.step(opt);
    sc.update();
    ref_opt.zero_grad();
    Tensor ref_loss = F::cross_entropy(reference->forward(x), y);
    if (overflow) ref_loss = ref_loss * INFINITY;
    ref_sc.scale(ref_loss).backward();
    const bool ref_stepped = ref_sc.step(ref_opt);
    ref_sc.update();
    ok &= stepped == !overflow && ref_stepped == !overflow && sc.get_scale() == ref_sc.get_scale();
    worst = std::max(worst, max_diff(*model, *reference));
  }
  std::printf("rank %d: scaler steps as expected %d, scale %g, max relative difference %.3g\n",
              g_rank, (int)ok, sc.get_scale(), worst);
  return ok && worst <= 1.0 ? 0 : 1;
}

// Two micro-batches under no_sync and a third synchronised equal one big batch.
int no_sync() {
  manual_seed(5);
  auto model = make_mlp();
  nn::DistributedDataParallel ddp(model.ptr());
  auto reference = model->clone();
  const int64_t B = 2;
  for (int t = 0; t < 3; ++t) {
    auto [x, y] = global_batch(t, B);
    Tensor mine_x = x.narrow(0, g_rank * B, B), mine_y = y.narrow(0, g_rank * B, B);
    if (t < 2) {
      auto guard = ddp->no_sync();
      F::cross_entropy(ddp(mine_x), mine_y).backward();
    } else {
      F::cross_entropy(ddp(mine_x), mine_y).backward();
    }
    F::cross_entropy(reference->forward(x), y).backward();
  }
  auto a = model->parameters(), b = reference->parameters();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, max_rel_diff(a[i].grad(), b[i].grad(), 1e-5, 1e-6));
  std::printf("rank %d: no_sync gradient difference %.3g\n", g_rank, worst);
  return worst <= 1.0 ? 0 : 1;
}

// A module whose second head is used only when asked.
class TwoHeadsImpl : public nn::Cloneable<TwoHeadsImpl> {
 public:
  TwoHeadsImpl() : Cloneable("TwoHeads") { reset(); }
  void reset() override {
    a = register_module("a", std::make_shared<nn::LinearImpl>(4, 2));
    b = register_module("b", std::make_shared<nn::LinearImpl>(4, 2));
  }
  Tensor forward(const Tensor& x) override {
    return use_b ? a->forward(x) + b->forward(x) : a->forward(x);
  }
  std::shared_ptr<nn::LinearImpl> a, b;
  bool use_b = false;
};

// static_graph: head b is never used, and without find_unused_parameters the first
// iteration's graph walk tells DDP so; training runs and b keeps no gradient.
int static_graph() {
  manual_seed(1);
  auto model = std::make_shared<TwoHeadsImpl>();
  nn::DistributedDataParallel ddp(model, {.static_graph = true});
  for (int t = 0; t < 3; ++t) ddp(randn({3, 4})).sum().backward();
  bool ok = model->a->weight.grad().defined() && !model->b->weight.grad().defined();
  std::printf("rank %d: static graph trained, unused head left without grad: %d\n", g_rank,
              (int)ok);
  return ok ? 0 : 1;
}

int unused(bool flag) {
  manual_seed(1);
  auto model = std::make_shared<TwoHeadsImpl>();
  nn::DistributedDataParallel ddp(model, {.find_unused_parameters = flag});
  try {
    for (int t = 0; t < 3; ++t) {
      model->use_b = (t == 1 && g_rank == 0);  // used on one rank only, in one step
      ddp(randn({3, 4})).sum().backward();
    }
  } catch (const Error& e) {
    std::printf("rank %d: error: %s\n", g_rank, e.what());
    return flag ? 1 : 0;
  }
  bool b_grad = model->b->weight.grad().defined();
  std::printf("rank %d: trained with unused parameters, b has grad: %d\n", g_rank, (int)b_grad);
  return flag && b_grad ? 0 : 1;  // b was used on rank 0 in step 1: all ranks get its grad
}

// Rank r has 2 + r batches; join() keeps the early finishers in step.
int uneven() {
  manual_seed(3);
  auto model = make_mlp();
  nn::DistributedDataParallel ddp(model.ptr());
  optim::SGD opt(ddp->parameters(), {.lr = 0.05});
  int steps = 0;
  ddp->join([&] {
    for (int t = 0; t < 2 + g_rank; ++t) {
      auto [x, y] = global_batch(t, 2);
      opt.zero_grad();
      F::cross_entropy(ddp(x.narrow(0, g_rank * 2, 2)), y.narrow(0, g_rank * 2, 2)).backward();
      opt.step();
      ++steps;
    }
  });
  // Every rank must end with the same parameters.
  Tensor w = model->parameters()[0].detach().clone();
  Tensor mx = w.clone(), mn = w.clone();
  auto pg = dist::default_group();
  pg->allreduce({mx}, dist::ReduceOp::MAX)->wait();
  pg->allreduce({mn}, dist::ReduceOp::MIN)->wait();
  bool same = allclose(mx, mn, 0, 0);
  std::printf("rank %d: joined after %d steps, parameters identical across ranks: %d\n", g_rank,
              steps, (int)same);
  return same ? 0 : 1;
}

int mismatch() {
  auto model = g_rank == 1 ? nn::Sequential({nn::Linear(8, 17), nn::ReLU(), nn::Linear(17, 4)})
                           : nn::Sequential({nn::Linear(8, 16), nn::ReLU(), nn::Linear(16, 4)});
  try {
    nn::DistributedDataParallel ddp(model.ptr());
  } catch (const Error& e) {
    std::printf("rank %d: error: %s\n", g_rank, e.what());
    return 0;
  }
  return 1;
}

// Rank 1 dies (kill -9) or stalls at step 2; the others must fail with an error in time.
int fault(bool stall) {
  manual_seed(0);
  auto model = make_mlp();
  nn::DistributedDataParallel ddp(model.ptr());
  try {
    for (int t = 0; t < 6; ++t) {
      if (g_rank == 1 && t == 2) {
        if (stall) std::this_thread::sleep_for(std::chrono::hours(1));
        std::raise(SIGKILL);
      }
      auto [x, y] = global_batch(t, 2);
      F::cross_entropy(ddp(x.narrow(0, g_rank * 2, 2)), y.narrow(0, g_rank * 2, 2)).backward();
    }
  } catch (const Error& e) {
    std::printf("rank %d: error: %s\n", g_rank, e.what());
    std::fflush(stdout);
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "equiv";
  try {
    dist::InitOptions init;
    if (const char* t = std::getenv("WEFT_TEST_TIMEOUT_MS"))
      init.timeout = dist::Duration(std::atoi(t));
    dist::init_process_group(init);
    g_rank = dist::get_rank();
    g_world = dist::get_world_size();
    set_num_threads(1);
    int rc = 1;
    if (mode == "equiv")
      rc = equivalence(argc > 2 ? argv[2] : "sgd", 25, false);
    else if (mode == "equiv_buckets")
      rc = equivalence(argc > 2 ? argv[2] : "sgd", 0.0005, false);
    else if (mode == "equiv_view")
      rc = equivalence("sgd", 0.0005, true);
    else if (mode == "fp16")
      rc = equivalence("sgd", 0.0005, false, "fp16");
    else if (mode == "bf16")
      rc = equivalence("sgd", 0.0005, false, "bf16");
    else if (mode == "autocast")
      rc = equivalence("sgd", 0.0005, false, "", true);
    else if (mode == "custom_hook")
      rc = equivalence("sgd", 0.0005, false, "custom");
    else if (mode == "scaler")
      rc = scaler();
    else if (mode == "nosync")
      rc = no_sync();
    else if (mode == "unused")
      rc = unused(false);
    else if (mode == "unused_flag")
      rc = unused(true);
    else if (mode == "static_graph")
      rc = static_graph();
    else if (mode == "uneven")
      rc = uneven();
    else if (mode == "mismatch")
      rc = mismatch();
    else if (mode == "kill")
      rc = fault(false);
    else if (mode == "stall")
      rc = fault(true);
    std::fflush(stdout);
    if (rc != 2) dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", g_rank, e.what());
    return 3;
  }
}
