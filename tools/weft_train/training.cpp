#include "training.h"

#include <algorithm>
#include <cmath>

#include "weft/cuda.h"
#include "weft/distributed/distributed.h"
#include "weft/models/shufflenet.h"
#include "weft/serialize/checksum.h"

namespace weft_train {

using namespace weft;
namespace F = weft::nn::functional;

nn::Sequential make_model(const Config& c) {
  if (c.model == "shufflenet") return models::shufflenet_small(10);
  if (c.model == "mlp") return models::mlp(10);
  return models::simple_cnn(10, c.dropout);
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, nn::Module& model) {
  return make_optimizer(c, model.parameters());
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, std::vector<Tensor> params) {
  if (c.optimizer == "sgd")
    return std::make_unique<optim::SGD>(
        std::move(params),
        optim::SGDOptions{.lr = c.lr, .momentum = 0.9, .weight_decay = c.weight_decay});
  if (c.optimizer == "adam")
    return std::make_unique<optim::Adam>(
        std::move(params), optim::AdamOptions{.lr = c.lr, .weight_decay = c.weight_decay});
  return std::make_unique<optim::AdamW>(
      std::move(params), optim::AdamOptions{.lr = c.lr, .weight_decay = c.weight_decay});
}

std::unique_ptr<optim::LRScheduler> make_scheduler(const Config& c, optim::Optimizer& opt,
                                                   int64_t steps_per_epoch) {
  const int64_t unit = c.lr_interval == "step" ? steps_per_epoch : 1;
  if (c.scheduler == "cosine")
    return std::make_unique<optim::CosineAnnealingLR>(opt, (int64_t)c.epochs * unit);
  if (c.scheduler == "step")
    return std::make_unique<optim::StepLR>(opt, std::max(1, c.epochs / 3) * unit, 0.1);
  return nullptr;
}

int64_t scheduler_count(const Config& c, int epochs, int64_t steps_per_epoch) {
  return (int64_t)epochs * (c.lr_interval == "step" ? steps_per_epoch : 1);
}

namespace {

// Every rank must hold out the same samples: ranks whose data differ (node-local copies of
// different files, another --limit-train) would validate on, and train with, different images.
void check_same_split(const data::MNIST& full, const std::vector<int64_t>& val, Device dev) {
  const int world = dist::get_world_size();
  if (world == 1) return;
  std::vector<int64_t> bytes = val;
  const Tensor labels = full.labels();
  for (int64_t i : val) bytes.push_back(labels[i].item<int64_t>());
  const int64_t digest = (int64_t)serialize::xxh64(bytes.data(), bytes.size() * sizeof(int64_t));
  Tensor mine =
      tensor(std::vector<int64_t>{(int64_t)full.size(), (int64_t)val.size(), digest}, {3});
  std::vector<Tensor> all;
  for (int r = 0; r < world; ++r) all.push_back(make_empty({3}, kInt64, dev));
  dist::default_group()->allgather(all, mine.to(dev))->wait();
  const auto r0 = all[0].to(Device::CPU()).to_vector_int64();
  for (int r = 1; r < world; ++r) {
    const auto v = all[r].to(Device::CPU()).to_vector_int64();
    WEFT_CHECK(v == r0, "--val-split: ranks hold out different validation sets: rank 0 splits ",
               r0[0], " training images into ", r0[0] - r0[1], " + ", r0[1], ", rank ", r, " ",
               v[0], " into ", v[0] - v[1], " + ", v[1],
               v[0] == r0[0] ? " with different labels" : "",
               " (every rank needs the same --data files, --limit-train and --seed)");
  }
}

}  // namespace

TrainingSets split_training_set(const Config& c, const data::MNIST& full, Device dev) {
  const size_t n = full.size();
  const size_t n_val =
      c.val_split >= 1 ? (size_t)c.val_split : (size_t)std::floor(c.val_split * (double)n);
  TrainingSets sets;
  if (n_val == 0) {
    std::vector<int64_t> all(n);
    for (size_t i = 0; i < n; ++i) all[i] = (int64_t)i;
    sets.train = std::make_unique<data::Subset>(full, std::move(all));
    return sets;
  }
  WEFT_CHECK(n_val < n, "--val-split ", c.val_split, " holds out ", n_val, " of the ", n,
             " training images, leaving none to train on");
  auto parts = data::random_split(n, {n - n_val, n_val}, c.seed);
  check_same_split(full, parts[1], dev);
  sets.train = std::make_unique<data::Subset>(full, std::move(parts[0]));
  sets.val = std::make_unique<data::Subset>(full, std::move(parts[1]));
  return sets;
}

Device pick_device(const Config& c) {
  if (c.device == "cpu") return Device::CPU();
  if (c.device.rfind("cuda:", 0) == 0) {
    const int i = parse_number<int>("--device", c.device.substr(5));
    if (i < 0 || i >= cuda::device_count())
      fail("--device " + c.device + ": " + std::to_string(cuda::device_count()) +
           " CUDA device(s) present");
    return Device::CUDA(i);
  }
  return Device::CUDA(dist::get_local_rank() % cuda::device_count());
}

std::optional<DType> amp_dtype(const Config& c) {
  if (c.amp == "bf16") return DType::BFloat16;
  if (c.amp == "fp16") return DType::Float16;
  return std::nullopt;
}

std::pair<double, int64_t> train_epoch(const Config& c, nn::Module& net, optim::Optimizer& opt,
                                       amp::GradScaler& scaler, optim::LRScheduler* per_step,
                                       data::DataLoader& loader, Device dev, Progress& progress,
                                       bool lead, int world) {
  double loss_sum = 0;
  int64_t steps = 0;
  for (auto& [xb, yb] : loader) {
    // Pinned batches: the copies overlap with the previous step's kernels.
    Tensor x = xb.to(dev, /*non_blocking=*/true), y = yb.to(dev, /*non_blocking=*/true);
    opt.zero_grad();
    Tensor loss;
    {
      amp::autocast region(dev.type, amp_dtype(c).value_or(DType::BFloat16), c.amp != "none");
      loss = F::cross_entropy(net(x), y);  // net(x): its forward hooks (FSDP's) run
    }
    scaler.scale(loss).backward();
    scaler.step(opt);
    scaler.update();
    const double lr = opt.param_groups()[0].options.lr;  // the lr this step took
    if (per_step) per_step->step();
    loss_sum += loss.item<double>();
    ++steps;
    if (lead) progress.update(steps, loss_sum / (double)steps, steps * c.batch_size * world, lr);
  }
  return {loss_sum, steps};
}

double mean_train_loss(double loss_sum, int64_t steps, int world) {
  Tensor tl = tensor(std::vector<float>{(float)loss_sum, (float)steps}, {2});
  if (world > 1) dist::default_group()->allreduce({tl})->wait();
  auto tv = tl.to_vector_float();
  return tv[0] / std::max(1.0f, tv[1]);
}

std::pair<double, double> evaluate(nn::Module& model, const data::Dataset& set, Device dev,
                                   std::optional<DType> amp) {
  NoGradGuard ng;
  model.eval();
  const int rank = dist::get_rank(), world = dist::get_world_size();
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < (int64_t)set.size(); i += world) mine.push_back(i);
  double loss = 0, correct = 0;
  // Every rank runs as many forwards (FSDP's gather parameters collectively): a rank with no
  // sample left for the last chunk runs one on sample 0 and counts nothing of it.
  const size_t per_rank = (set.size() + (size_t)world - 1) / (size_t)world;
  for (size_t s = 0; s < per_rank; s += 500) {
    size_t e = std::min(mine.size(), s + 500);
    std::vector<int64_t> idx(mine.begin() + std::min(s, e), mine.begin() + e);
    const bool filler = idx.empty();
    if (filler) idx.push_back(0);
    std::vector<Tensor> xs, ys;
    for (int64_t i : idx) {
      data::Example e = set.get((size_t)i);
      xs.push_back(std::move(e.data));
      ys.push_back(std::move(e.target));
    }
    Tensor x = stack(xs).to(dev), y = stack(ys).to(dev);
    amp::autocast region(dev.type, amp.value_or(DType::BFloat16), amp.has_value());
    Tensor logits = model(x);
    if (filler) continue;
    loss += F::cross_entropy(logits, y, F::Reduction::Sum).item<double>();
    correct += (double)logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  Tensor sums = tensor(std::vector<float>{(float)loss, (float)correct}, {2});
  if (dist::is_initialized() && world > 1) dist::default_group()->allreduce({sums})->wait();
  model.train();
  auto v = sums.to_vector_float();
  return {v[0] / (double)set.size(), v[1] / (double)set.size()};
}

}  // namespace weft_train
