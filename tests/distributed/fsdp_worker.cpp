// One rank of the FSDP tests (tests/test_fsdp.cpp, under weft-run). Each rank trains an FSDP
// model on its slice of a batch; beside it, a plain copy of the model trains in this process on
// the whole batch (the reference). After the steps the gathered parameters must equal the
// reference's. Parameter sizes do not divide the world sizes, so every flat buffer is padded.
#include <signal.h>
#include <unistd.h>
#include <weft/distributed/distributed.h>
#include <weft/distributed/fsdp/fully_sharded_data_parallel.h>
#include <weft/weft.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "worker_check.h"

using namespace weft;
namespace F = weft::nn::functional;
namespace fsdp = weft::dist::fsdp;

namespace {

int g_world = 1;
constexpr int64_t kIn = 7, kClasses = 3, kBatch = 3;

// A unit used twice in one forward: blk runs on its own output.
struct TwiceImpl : nn::Module {
  std::shared_ptr<nn::Module> in, blk, out;
  TwiceImpl() : nn::Module("Twice") {
    in = register_module("in", nn::Linear(kIn, 10));
    blk = register_module("blk", nn::Sequential({nn::Linear(10, 10), nn::Tanh()}));
    out = register_module("out", nn::Linear(10, kClasses));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = (*in)(x).tanh();
    h = (*blk)((*blk)(h));
    return (*out)(h);
  }
};

// A parameter tied inside one unit: `w` is also `a.weight`.
struct TiedImpl : nn::Module {
  nn::Linear a{nullptr};
  std::shared_ptr<nn::Module> head;
  Tensor w;
  TiedImpl() : nn::Module("Tied") {
    a = register_module("a", nn::Linear(kIn, kIn));
    w = register_parameter("w", a->weight);
    head = register_module("head", nn::Linear(kIn, kClasses));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = a(x).tanh().matmul(w.t()).tanh();
    return (*head)(h);
  }
};

// Units: root.1.2 (nested in root.1), root.1, root.3, then the root (root.0, root.4).
std::shared_ptr<nn::Module> make_model(const std::string& kind) {
  manual_seed(11);
  if (kind == "twice") return std::make_shared<TwiceImpl>();
  if (kind == "tied") return std::make_shared<TiedImpl>();
  auto inner = nn::Sequential({nn::Linear(11, 9), nn::ReLU(), nn::Linear(9, 11)});
  auto block =
      nn::Sequential({nn::Linear(13, 11), nn::Tanh(), inner.ptr(), nn::Tanh(), nn::Linear(11, 13)});
  auto side = nn::Sequential({nn::Linear(13, 5), nn::ReLU(), nn::Linear(5, 13)});
  auto root = nn::Sequential(
      {nn::Linear(kIn, 13), block.ptr(), nn::Tanh(), side.ptr(), nn::Linear(13, kClasses)});
  if (kind == "frozen") {  // a frozen parameter in the root unit and a wholly frozen unit
    for (auto& p : (*root)[0]->parameters()) p.requires_grad_(false);
    for (auto& p : side->parameters()) p.requires_grad_(false);
  }
  return root.ptr();
}

void shard(const std::shared_ptr<nn::Module>& m, const std::string& kind,
           const fsdp::FSDPOptions& o) {
  if (kind == "twice") {
    fsdp::fully_shard(std::static_pointer_cast<TwiceImpl>(m)->blk, o);
  } else if (kind != "tied") {
    auto& root = static_cast<nn::SequentialImpl&>(*m);
    auto block = std::static_pointer_cast<nn::SequentialImpl>(root[1]);
    fsdp::fully_shard((*block)[2], o);  // bottom-up: the nested unit first
    fsdp::fully_shard(root[1], o);
    fsdp::fully_shard(root[3], o);
  }
  fsdp::fully_shard(m, o);
}

std::vector<Tensor> trainable(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (auto& p : ps)
    if (p.requires_grad()) out.push_back(p);
  return out;
}

std::unique_ptr<optim::Optimizer> make_opt(const std::string& kind, std::vector<Tensor> ps) {
  if (kind == "sgd")
    return std::make_unique<optim::SGD>(std::vector<optim::ParamGroup>{
        {std::move(ps), {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4}}});
  return std::make_unique<optim::Adam>(
      std::vector<optim::ParamGroup>{{std::move(ps), {.lr = 0.01, .weight_decay = 1e-4}}});
}

struct Batch {
  Tensor x, y, xs, ys;
};
Batch batch(int t, int64_t per_rank = kBatch) {
  Generator g(100 + t);
  Batch b;
  b.x = randn({per_rank * g_world, kIn}, &g);
  b.y = randint(0, kClasses, {per_rank * g_world}, &g);
  b.xs = b.x.narrow(0, test::g_rank * per_rank, per_rank);
  b.ys = b.y.narrow(0, test::g_rank * per_rank, per_rank);
  return b;
}

// The gathered FSDP parameters against the reference's, on every rank.
double compare(nn::Module& sharded, nn::Module& plain, double tol = 1e-5) {
  nn::StateDict got = fsdp::full_state_dict(sharded, /*rank0_only=*/false);
  nn::StateDict want = plain.state_dict();
  EXPECT(got.size() == want.size(), "full_state_dict has ", got.size(), " entries, the model ",
         want.size());
  double worst = 0;
  for (const auto& [k, t] : want) {
    const Tensor* g = got.find(k);
    EXPECT(g && g->sizes() == t.sizes(), "full_state_dict lacks '", k, "' or its shape");
    worst = std::max(worst, max_rel_diff(*g, t, tol, tol / 10));
  }
  return worst;
}

// The invariant between iterations: every unit's gathered memory is freed.
void expect_all_freed(nn::Module& m) {
  for (auto& [n, p] : m.named_parameters())
    EXPECT(p.impl()->storage->nbytes == 0, "parameter '", n, "' still holds ",
           p.impl()->storage->nbytes, " bytes after the step");
}

int equivalence(const std::string& opt, const std::string& kind, const std::string& variant) {
  auto model = make_model(kind), ref = make_model(kind);
  fsdp::FSDPOptions o;
  o.prefetch = variant != "noprefetch";
  o.reshard_after_forward = variant != "keep";
  if (variant == "lean") o.backward_prefetch = o.overlap_reduce_scatter = false;
  const bool bf16 = variant == "bf16";
  if (bf16) o.mp_policy = {.param_dtype = DType::BFloat16, .reduce_dtype = kFloat32};
  shard(model, kind, o);
  int bf16_forwards = 0, linears = 0;  // Linear forwards that computed with bf16 weights
  for (auto& [n, m] : model->named_modules()) {
    auto* lin = dynamic_cast<nn::LinearImpl*>(m.get());
    if (!bf16 || !lin) continue;
    ++linears;
    lin->register_forward_hook([&bf16_forwards, lin](nn::Module&, const std::vector<Tensor>&,
                                                     const std::vector<Tensor>& out)
                                   -> std::optional<std::vector<Tensor>> {
      bf16_forwards += lin->weight.dtype() == DType::BFloat16 && out[0].dtype() == DType::BFloat16;
      return std::nullopt;
    });
  }
  auto shards = fsdp::parameters(*model);
  for (auto& s : shards) EXPECT(s.dim() == 1, "a shard is not flat: ", s.str());
  auto o1 = make_opt(opt, shards), o2 = make_opt(opt, trainable(ref->parameters()));
  for (int t = 0; t < 5; ++t) {
    Batch b = batch(t);
    o1->zero_grad();
    Tensor loss = F::cross_entropy((*model)(b.xs).to(kFloat32), b.ys);
    loss.backward();
    if (variant == "clip") {
      const double n1 = fsdp::clip_grad_norm_(shards, 0.05);
      // The reference: torch.nn.utils.clip_grad_norm_ over the whole model.
      o2->zero_grad();
      F::cross_entropy((*ref)(b.x), b.y).backward();
      double sq = 0;
      for (auto& p : trainable(ref->parameters())) sq += p.grad().pow(2).sum().item<float>();
      const double n2 = std::sqrt(sq), coef = 0.05 / (n2 + 1e-6);
      if (coef < 1)
        for (auto& p : trainable(ref->parameters())) p.grad().mul_(coef);
      EXPECT(std::abs(n1 - n2) <= 1e-5 * n2, "clip_grad_norm_ total ", n1, " but the model's ", n2);
    } else {
      o2->zero_grad();
      F::cross_entropy((*ref)(b.x), b.y).backward();
    }
    o1->step();
    o2->step();
    expect_all_freed(*model);
  }
  // bf16 computes with 8 significant bits: its tolerance is bf16's, 1e-5 otherwise.
  const double tol = bf16 ? 3e-2 : 1e-5;
  const double d = compare(*model, *ref, tol);
  std::printf("rank %d: %s %s %s: max relative difference %.3g (x %g)\n", test::g_rank, opt.c_str(),
              kind.c_str(), variant.c_str(), d, tol);
  EXPECT(d <= 1.0, "FSDP differs from one process on the whole batch by ", d, " x ", tol);
  if (bf16) {
    EXPECT(bf16_forwards == 5 * linears, "only ", bf16_forwards, " of ", 5 * linears,
           " Linear forwards ran in bf16");
    EXPECT(compare(*model, *ref, 1e-5) > 1.0, "bf16 training equals float32 exactly: not bf16");
  }
  return 0;
}

// no_sync: two micro-batches per step, the first without communication.
int no_sync(const std::string& opt) {
  auto model = make_model("mlp"), ref = make_model("mlp");
  fsdp::FullyShardedDataParallel fsdp_model(model, {}, fsdp::wrap_children());
  auto o1 = make_opt(opt, fsdp_model.parameters()), o2 = make_opt(opt, ref->parameters());
  for (int t = 0; t < 3; ++t) {
    Batch b1 = batch(2 * t), b2 = batch(2 * t + 1);
    o1->zero_grad();
    {
      auto guard = fsdp_model.no_sync();
      F::cross_entropy(fsdp_model(b1.xs), b1.ys).backward();
    }
    F::cross_entropy(fsdp_model(b2.xs), b2.ys).backward();
    o1->step();
    o2->zero_grad();
    F::cross_entropy((*ref)(b1.x), b1.y).backward();
    F::cross_entropy((*ref)(b2.x), b2.y).backward();
    o2->step();
  }
  const double d = compare(*model, *ref);
  std::printf("rank %d: no_sync %s: max relative difference %.3g (x 1e-5)\n", test::g_rank,
              opt.c_str(), d);
  EXPECT(d <= 1.0, "FSDP with no_sync differs from one process by ", d, " x 1e-5");
  return 0;
}

int tied_across_units() {
  auto model = make_model("mlp");
  auto& root = static_cast<nn::SequentialImpl&>(*model);
  auto lin = std::static_pointer_cast<nn::LinearImpl>(root[4]);
  auto side = std::static_pointer_cast<nn::SequentialImpl>(root[3]);
  side->register_parameter("tied", lin->bias);  // shared by the root unit and side's unit
  fsdp::fully_shard(root[3]);
  try {
    fsdp::fully_shard(model);
  } catch (const Error& e) {
    const std::string msg = e.what();
    std::printf("rank %d: refused: %s\n", test::g_rank, msg.c_str());
    EXPECT(msg.find("'4.bias'") != std::string::npos && msg.find("tied") != std::string::npos,
           "the refusal does not name the tied parameter: ", msg);
    return 0;
  }
  test::fail("a parameter tied across two units was accepted");
}

void train(nn::Module& model, optim::Optimizer& opt, int from, int to) {
  for (int t = from; t < to; ++t) {
    Batch b = batch(t, 12 / g_world);
    opt.zero_grad();
    F::cross_entropy(model(b.xs), b.ys).backward();
    opt.step();
  }
}

// Saves sharded (and whole) after 3 steps.
int ckpt_save(const std::string& dir) {
  auto model = make_model("mlp");
  shard(model, "mlp", {});
  auto opt = make_opt("sgd", fsdp::parameters(*model));
  train(*model, *opt, 0, 3);
  fsdp::save_sharded(*model, dir + "/sharded");
  fsdp::save_full_state_dict(*model, dir + "/full.safetensors");
  std::printf("rank %d: saved at world %d\n", test::g_rank, g_world);
  return 0;
}

// Loads what ckpt_save saved (at another world size): equal to the whole file, which also loads
// into a plain model.
int ckpt_load(const std::string& dir) {
  auto model = make_model("mlp");
  shard(model, "mlp", {});
  fsdp::load_sharded(*model, dir + "/sharded");
  auto whole = weft::load(dir + "/full.safetensors");
  auto plain = make_model("mlp");
  plain->load_state_dict(whole);  // plain weft reads the whole file
  const double d = compare(*model, *plain);
  std::printf("rank %d: loaded at world %d: max relative difference %.3g\n", test::g_rank, g_world,
              d);
  EXPECT(d == 0, "the sharded checkpoint differs from the whole one by ", d);
  // Training goes on identically from either.
  auto o1 = make_opt("sgd", fsdp::parameters(*model));
  auto o2 = make_opt("sgd", plain->parameters());
  for (int t = 3; t < 5; ++t) {
    Batch b = batch(t);
    o1->zero_grad();
    F::cross_entropy((*model)(b.xs), b.ys).backward();
    o1->step();
    o2->zero_grad();
    F::cross_entropy((*plain)(b.x), b.y).backward();
    o2->step();
  }
  const double d2 = compare(*model, *plain);
  EXPECT(d2 <= 1.0, "training resumed from the sharded checkpoint differs by ", d2, " x 1e-5");
  return 0;
}

// Rank `who` stops taking part (stalls, or dies by SIGKILL) before the second step's forward;
// the others' all-gather must fail, naming it.
int stall(int who, bool die) {
  auto model = make_model("mlp");
  shard(model, "mlp", {});
  auto opt = make_opt("sgd", fsdp::parameters(*model));
  train(*model, *opt, 0, 1);
  if (test::g_rank == who) {
    std::printf("rank %d: %s before the second forward\n", test::g_rank,
                die ? "dying" : "stalling");
    std::fflush(stdout);
    if (die) kill(getpid(), SIGKILL);
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
  try {
    train(*model, *opt, 1, 2);
  } catch (const Error& e) {
    std::printf("rank %d: DISTERROR: %s\n", test::g_rank, e.what());
    std::fflush(stdout);
    std::_Exit(2);
  }
  test::fail("the step completed without rank " + std::to_string(who));
}

// Per-rank peak allocated bytes over three Adam steps of 8 units, each Linear-ReLU-Linear (every
// block under 1 MiB: the allocator rounds to 64 bytes), against the closed-form bound
// (parameters + gradients + Adam state) / N + the largest unit + the activations. With both
// overlap options off the bound holds as it is (the gradients are written over the gathered
// parameters: Note [Gradient into the parameter's memory]); with them on, a unit's backward also
// holds the next unit's prefetched parameters and the previous unit's reduce-scatter input.
size_t peak_bytes(bool overlap) {
  constexpr int64_t kUnits = 8, kWidth = 256, kRows = 4;
  manual_seed(5);
  nn::Sequential seq;
  for (int i = 0; i < kUnits; ++i)
    seq->push_back(
        nn::Sequential({nn::Linear(kWidth, kWidth), nn::ReLU(), nn::Linear(kWidth, kWidth)}).ptr());
  fsdp::FSDPOptions o;
  o.backward_prefetch = o.overlap_reduce_scatter = overlap;
  fsdp::FullyShardedDataParallel model(seq.ptr(), o, fsdp::wrap_children());
  optim::Adam opt({{model.parameters(), {.lr = 1e-3}}});
  Generator g(7 + test::g_rank);
  Tensor x = randn({kRows, kWidth}, &g), y = randn({kRows, kWidth}, &g);
  reset_peak_allocated_bytes();
  const size_t before = cpu_allocator_stats().allocated_bytes;
  for (int t = 0; t < 3; ++t) {
    opt.zero_grad();
    F::mse_loss(model(x), y).backward();
    opt.step();
  }
  const size_t peak = cpu_allocator_stats().peak_allocated_bytes;
  EXPECT(peak >= before, "peak ", peak, " below the bytes allocated before the steps ", before);
  // What lived before the steps: the shards, the inputs (and nothing of the unsharded model).
  const size_t unit = 2 * (kWidth * kWidth + kWidth) * 4, shard = unit / g_world;
  const size_t state = 4 * kUnits * shard;  // shard, gradient, exp_avg, exp_avg_sq
  const size_t acts = 3 * kUnits * kRows * kWidth * 4;
  const size_t bound = state + unit + acts, slack = 32 << 10;
  const size_t allowed = bound + (overlap ? 2 * unit : 0) + slack;
  std::printf("rank %d: overlap %d: peak %zu bytes, bound %zu, allowed %zu (unit %zu)\n",
              test::g_rank, (int)overlap, peak, bound, allowed, unit);
  EXPECT(peak <= allowed, "peak ", peak, " bytes over ", allowed, " (overlap ", overlap, ")");
  return peak;
}

int peak_memory() {
  const size_t with = peak_bytes(true), without = peak_bytes(false);
  const size_t unit = 2 * (256 * 256 + 256) * 4;
  EXPECT(without + unit <= with, "without overlap the peak ", without,
         " is not a unit below the peak with it ", with);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  auto arg = [&](int i, const char* d) { return std::string(argc > i ? argv[i] : d); };
  try {
    dist::init_process_group();
    test::g_rank = dist::get_rank();
    g_world = dist::get_world_size();
    set_num_threads(1);
    int rc = 64;
    if (mode == "equiv") rc = equivalence(arg(2, "sgd"), arg(3, "mlp"), arg(4, "plain"));
    if (mode == "nosync") rc = no_sync(arg(2, "sgd"));
    if (mode == "tied") rc = tied_across_units();
    if (mode == "memory") rc = peak_memory();
    if (mode == "save") rc = ckpt_save(arg(2, ""));
    if (mode == "load") rc = ckpt_load(arg(2, ""));
    if (mode == "stall" || mode == "die") rc = stall(std::stoi(arg(2, "1")), mode == "die");
    std::fflush(stdout);
    dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", test::g_rank, e.what());
    return 3;
  }
}
