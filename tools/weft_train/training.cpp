#include "training.h"

#include <algorithm>

#include "weft/cuda.h"
#include "weft/distributed/distributed.h"
#include "weft/models/shufflenet.h"

namespace weft_train {

using namespace weft;
namespace F = weft::nn::functional;

nn::Sequential make_model(const std::string& name) {
  if (name == "shufflenet") return models::shufflenet_small(10);
  if (name == "mlp") return models::mlp(10);
  return models::simple_cnn(10);
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, nn::Module& model) {
  if (c.optimizer == "sgd")
    return std::make_unique<optim::SGD>(
        model.parameters(),
        optim::SGDOptions{.lr = c.lr, .momentum = 0.9, .weight_decay = c.weight_decay});
  if (c.optimizer == "adam")
    return std::make_unique<optim::Adam>(
        model.parameters(), optim::AdamOptions{.lr = c.lr, .weight_decay = c.weight_decay});
  return std::make_unique<optim::AdamW>(
      model.parameters(), optim::AdamOptions{.lr = c.lr, .weight_decay = c.weight_decay});
}

std::unique_ptr<optim::LRScheduler> make_scheduler(const Config& c, optim::Optimizer& opt) {
  if (c.scheduler == "cosine") return std::make_unique<optim::CosineAnnealingLR>(opt, c.epochs);
  if (c.scheduler == "step")
    return std::make_unique<optim::StepLR>(opt, std::max(1, c.epochs / 3), 0.1);
  return nullptr;
}

Device pick_device(const Config& c) {
  if (c.device == "cpu") return Device::CPU();
  if (c.device.rfind("cuda:", 0) == 0) {
    const int i = parse_number<int>("--device", c.device.substr(5));
    if (i < 0 || i >= cuda::device_count())
      bad_option("--device " + c.device + ": " + std::to_string(cuda::device_count()) +
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
                                       amp::GradScaler& scaler, data::DataLoader& loader,
                                       Device dev, Progress& progress, bool lead, int world) {
  double loss_sum = 0;
  int64_t steps = 0;
  for (auto& [xb, yb] : loader) {
    // Pinned batches: the copies overlap with the previous step's kernels.
    Tensor x = xb.to(dev, /*non_blocking=*/true), y = yb.to(dev, /*non_blocking=*/true);
    opt.zero_grad();
    Tensor loss;
    {
      amp::autocast region(dev.type, amp_dtype(c).value_or(DType::BFloat16), c.amp != "none");
      loss = F::cross_entropy(net.forward(x), y);
    }
    scaler.scale(loss).backward();
    scaler.step(opt);
    scaler.update();
    loss_sum += loss.item<double>();
    ++steps;
    if (lead) progress.update(steps, loss_sum / (double)steps, steps * c.batch_size * world);
  }
  return {loss_sum, steps};
}

double mean_train_loss(double loss_sum, int64_t steps, int world) {
  Tensor tl = tensor(std::vector<float>{(float)loss_sum, (float)steps}, {2});
  if (world > 1) dist::default_group()->allreduce({tl})->wait();
  auto tv = tl.to_vector_float();
  return tv[0] / std::max(1.0f, tv[1]);
}

std::pair<double, double> evaluate(nn::Module& model, const data::MNIST& test, Device dev,
                                   std::optional<DType> amp) {
  NoGradGuard ng;
  model.eval();
  const int rank = dist::get_rank(), world = dist::get_world_size();
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < (int64_t)test.size(); i += world) mine.push_back(i);
  double loss = 0, correct = 0;
  for (size_t s = 0; s < mine.size(); s += 500) {
    size_t e = std::min(mine.size(), s + 500);
    std::vector<int64_t> idx(mine.begin() + s, mine.begin() + e);
    std::vector<Tensor> xs, ys;
    for (int64_t i : idx) {
      xs.push_back(test.images()[i]);
      ys.push_back(test.labels()[i]);
    }
    Tensor x = stack(xs).to(dev), y = stack(ys).to(dev);
    amp::autocast region(dev.type, amp.value_or(DType::BFloat16), amp.has_value());
    Tensor logits = model.forward(x);
    loss += F::cross_entropy(logits, y, F::Reduction::Sum).item<double>();
    correct += (double)logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  Tensor sums = tensor(std::vector<float>{(float)loss, (float)correct}, {2});
  if (dist::is_initialized() && world > 1) dist::default_group()->allreduce({sums})->wait();
  model.train();
  auto v = sums.to_vector_float();
  return {v[0] / (double)test.size(), v[1] / (double)test.size()};
}

}  // namespace weft_train
