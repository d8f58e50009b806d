// weft-train: the main job. Trains a CNN (default), a ShuffleNet-V2-style network or an
// MLP on Fashion-MNIST (or any MNIST-format IDX files) in one process, or data-parallel
// under weft-run / mpirun (DistributedDataParallel, SyncBatchNorm, DistributedSampler).
// Rank 0 reports progress and per-epoch metrics, writes a CSV of them and an atomic
// checkpoint every epoch; --resume continues from the newest checkpoint that loads.
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "weft/cuda.h"
#include "weft/data.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/error_file.h"
#include "weft/models/shufflenet.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/weft.h"

using namespace weft;
namespace F = weft::nn::functional;
namespace fs = std::filesystem;

namespace {

struct Config {
  std::string model = "cnn", data = "/usr/share/datasets/fashion-mnist", optimizer = "sgd";
  std::string scheduler = "cosine", device = "cpu", checkpoint_dir = "checkpoints", metrics;
  std::string amp = "none";
  int epochs = 8, threads = 1, workers = 1;
  int64_t batch_size = 64, limit_train = 0, limit_test = 0;
  double lr = 0.05, weight_decay = 5e-4;
  std::optional<double> timeout;  // collective timeout in seconds; unset: the library's default
  uint64_t seed = 0;
  bool resume = false, progress = true;
};

const char* kUsage =
    "usage: weft-train [options]\n"
    "Trains a model on Fashion-MNIST (or MNIST-format files). Run it as one process, or\n"
    "data-parallel with `weft-run --nproc-per-node N weft-train ...` or `mpirun -n N weft-train`.\n"
    "  --model cnn|shufflenet|mlp   network (default cnn)\n"
    "  --data DIR                   IDX files train-*/t10k-* (.gz or plain)\n"
    "                               (default /usr/share/datasets/fashion-mnist)\n"
    "  --epochs N                   (default 8)\n"
    "  --batch-size B               per process (default 64)\n"
    "  --lr LR                      (default 0.05 for sgd, 0.001 for adam/adamw)\n"
    "  --optimizer sgd|adam|adamw   (default sgd, momentum 0.9)\n"
    "  --weight-decay WD            (default 5e-4)\n"
    "  --scheduler cosine|step|none (default cosine)\n"
    "  --seed S                     (default 0)\n"
    "  --threads T                  intra-op threads per process (default 1)\n"
    "  --workers W                  data loader threads (default 1)\n"
    "  --device cpu|cuda|cuda:N     (default cpu; cuda: each process takes GPU LOCAL_RANK %\n"
    "                               #GPUs, NCCL between processes; needs a CUDA build)\n"
    "  --amp none|bf16|fp16         mixed precision: the forward under autocast in that dtype\n"
    "                               (fp16 adds loss scaling, a GradScaler; default none)\n"
    "  --checkpoint-dir DIR         (default checkpoints)\n"
    "  --resume                     continue from the newest good checkpoint in DIR\n"
    "  --metrics FILE               CSV of per-epoch metrics (default DIR/metrics.csv)\n"
    "  --limit-train N, --limit-test N  use only the first N samples\n"
    "  --no-progress                plain lines even on a terminal\n"
    "  --timeout S                  collective timeout in seconds: a stalled rank fails the job\n"
    "                               naming it (default WEFT_COLLECTIVE_TIMEOUT, else 30 min)\n";

[[noreturn]] void bad_option(const std::string& msg) {
  std::fprintf(stderr, "weft-train: %s\n\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

template <typename T>
T parse_number(const std::string& flag, const std::string& v) {
  try {
    size_t pos = 0;
    T out;
    if constexpr (std::is_floating_point_v<T>)
      out = (T)std::stod(v, &pos);
    else
      out = (T)std::stoll(v, &pos);
    if (pos != v.size()) throw std::invalid_argument(v);
    return out;
  } catch (const std::exception&) {
    bad_option(flag + " expects a number, got '" + v + "'");
  }
}

// Applies option `a` with its value `v`; a name not known here is an error.
void apply_option(Config& c, const std::string& a, const std::string& v, bool* lr_given) {
  if (a == "--model")
    c.model = v;
  else if (a == "--data")
    c.data = v;
  else if (a == "--epochs")
    c.epochs = parse_number<int>(a, v);
  else if (a == "--batch-size")
    c.batch_size = parse_number<int64_t>(a, v);
  else if (a == "--lr")
    c.lr = parse_number<double>(a, v), *lr_given = true;
  else if (a == "--optimizer")
    c.optimizer = v;
  else if (a == "--weight-decay")
    c.weight_decay = parse_number<double>(a, v);
  else if (a == "--scheduler")
    c.scheduler = v;
  else if (a == "--seed")
    c.seed = parse_number<uint64_t>(a, v);
  else if (a == "--threads")
    c.threads = parse_number<int>(a, v);
  else if (a == "--workers")
    c.workers = parse_number<int>(a, v);
  else if (a == "--device")
    c.device = v;
  else if (a == "--amp")
    c.amp = v;
  else if (a == "--checkpoint-dir")
    c.checkpoint_dir = v;
  else if (a == "--metrics")
    c.metrics = v;
  else if (a == "--limit-train")
    c.limit_train = parse_number<int64_t>(a, v);
  else if (a == "--limit-test")
    c.limit_test = parse_number<int64_t>(a, v);
  else if (a == "--timeout")
    c.timeout = parse_number<double>(a, v);
  else
    bad_option("unknown option " + a);
}

// Refuses unknown choices and out-of-range numbers, then fills the defaults that depend on
// other options (adam's learning rate, the metrics file in the checkpoint directory).
void finish_config(Config& c, bool lr_given) {
  if (c.model != "cnn" && c.model != "shufflenet" && c.model != "mlp")
    bad_option("unknown --model " + c.model);
  if (c.optimizer != "sgd" && c.optimizer != "adam" && c.optimizer != "adamw")
    bad_option("unknown --optimizer " + c.optimizer);
  if (c.scheduler != "cosine" && c.scheduler != "step" && c.scheduler != "none")
    bad_option("unknown --scheduler " + c.scheduler);
  if (c.amp != "none" && c.amp != "bf16" && c.amp != "fp16")
    bad_option("unknown --amp " + c.amp + " (none, bf16 or fp16)");
  if (c.device != "cpu") {
    if (c.device != "cuda" && c.device.rfind("cuda:", 0) != 0)
      bad_option("unknown --device " + c.device + " (cpu, cuda or cuda:N)");
    if (!cuda::is_built())
      bad_option("--device " + c.device +
                 " is not available: this build of weft has no CUDA backend");
    if (!cuda::is_available())
      bad_option("--device " + c.device + ": no CUDA device is available on this machine");
  }
  if (c.epochs < 1 || c.batch_size < 1 || c.threads < 1 || c.workers < 0 || c.lr <= 0 ||
      c.limit_train < 0 || c.limit_test < 0 || c.weight_decay < 0)
    bad_option(
        "epochs, batch size, threads and lr must be positive; limits and workers non-negative");
  if (c.timeout && !(*c.timeout >= 0.001 && *c.timeout <= 1e7))
    bad_option("--timeout must be a positive number of seconds (0.001 to 1e7)");
  if (!lr_given && c.optimizer != "sgd") c.lr = 1e-3;
  if (c.metrics.empty()) c.metrics = c.checkpoint_dir + "/metrics.csv";
}

Config parse(int argc, char** argv) {
  Config c;
  bool lr_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    }
    if (a == "--resume") {
      c.resume = true;
      continue;
    }
    if (a == "--no-progress") {
      c.progress = false;
      continue;
    }
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      if (i + 1 >= argc) bad_option("option " + a + " needs a value");
      v = argv[++i];
    }
    apply_option(c, a, v, &lr_given);
  }
  finish_config(c, lr_given);
  return c;
}

nn::Sequential make_model(const std::string& name) {
  if (name == "shufflenet") return models::shufflenet_small(10);
  if (name == "mlp") return models::mlp(10);
  return models::simple_cnn(10);
}

// ---------------------------------------------------------------- checkpoints

std::string checkpoint_path(const Config& c, int epoch) {
  char name[64];
  std::snprintf(name, sizeof name, "epoch-%04d.safetensors", epoch);
  return c.checkpoint_dir + "/" + name;
}

struct Checkpoint {
  int epoch = 0;  // epochs completed
  nn::StateDict model;
  optim::OptimizerState optim;
  std::map<std::string, std::string> scaler;
  std::map<std::string, std::string> meta;
};

void save_checkpoint(const Config& c, int epoch, nn::Module& model, optim::Optimizer& opt,
                     const amp::GradScaler& scaler, const std::string& metrics_row) {
  TensorDict all;
  for (auto& [k, t] : model.state_dict()) all.insert("model." + k, t);
  auto st = opt.state_dict();
  for (auto& [k, t] : st.tensors) all.insert("optim." + k, t);
  std::map<std::string, std::string> meta;
  for (auto& [k, v] : st.scalars) meta["optim." + k] = v;
  for (auto& [k, v] : scaler.state_dict()) meta["scaler." + k] = v;
  meta["epoch"] = std::to_string(epoch);
  meta["model"] = c.model;
  meta["seed"] = std::to_string(c.seed);
  meta["world_size"] = std::to_string(dist::get_world_size());
  meta["rng"] = default_generator().get_state();
  meta["metrics"] = metrics_row;
  save(all, checkpoint_path(c, epoch), meta);  // atomic: temp file, fsync, rename
  // Keep the two newest: the previous one is the fallback if the newest is damaged.
  for (int e = epoch - 2; e >= 1; --e) {
    std::error_code ec;
    if (!fs::remove(checkpoint_path(c, e), ec)) break;
  }
}

std::optional<Checkpoint> load_latest(const Config& c) {
  std::vector<int> epochs;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(c.checkpoint_dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("epoch-", 0) == 0 && n.size() == 22 && n.substr(10) == ".safetensors")
      epochs.push_back(std::atoi(n.substr(6, 4).c_str()));
  }
  std::sort(epochs.rbegin(), epochs.rend());
  for (int e : epochs) {
    try {
      Checkpoint ck;
      TensorDict all = load(checkpoint_path(c, e), Device::CPU(), &ck.meta);
      for (auto& [k, t] : all) {
        if (k.rfind("model.", 0) == 0)
          ck.model.insert(k.substr(6), t);
        else if (k.rfind("optim.", 0) == 0)
          ck.optim.tensors.insert(k.substr(6), t);
      }
      for (auto& [k, v] : ck.meta) {
        if (k.rfind("optim.", 0) == 0) ck.optim.scalars[k.substr(6)] = v;
        if (k.rfind("scaler.", 0) == 0) ck.scaler[k.substr(7)] = v;
      }
      ck.epoch = std::stoi(ck.meta.at("epoch"));
      WEFT_CHECK(ck.meta.at("model") == c.model, "checkpoint is of model '", ck.meta.at("model"),
                 "' but --model is '", c.model, "'");
      return ck;
    } catch (const std::exception& ex) {
      if (dist::get_rank() == 0)
        std::fprintf(stderr,
                     "weft-train: checkpoint %s is unusable (%s); trying the previous one\n",
                     checkpoint_path(c, e).c_str(), ex.what());
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- progress

class Progress {
 public:
  Progress(bool enabled, int epoch, int epochs, int64_t steps)
      : tty_(enabled && isatty(STDOUT_FILENO)),
        epoch_(epoch),
        epochs_(epochs),
        steps_(steps),
        t0_(std::chrono::steady_clock::now()) {}
  void update(int64_t step, double running_loss, int64_t images) {
    if (!tty_) {
      // Plain lines: about four per epoch.
      int64_t every = std::max<int64_t>(1, steps_ / 4);
      if (step % every != 0 && step != steps_) return;
    }
    double secs = elapsed();
    double ips = images / std::max(secs, 1e-9);
    double eta = step ? secs * (double)(steps_ - step) / (double)step : 0;
    const int width = 30;
    int filled = (int)(width * step / std::max<int64_t>(steps_, 1));
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    if (tty_) {
      std::printf("\repoch %d/%d [%s] %lld/%lld loss %.4f %.0f img/s ETA %.0fs   ", epoch_, epochs_,
                  bar.c_str(), (long long)step, (long long)steps_, running_loss, ips, eta);
    } else {
      std::printf("epoch %d/%d step %lld/%lld loss %.4f %.0f img/s ETA %.0fs\n", epoch_, epochs_,
                  (long long)step, (long long)steps_, running_loss, ips, eta);
    }
    std::fflush(stdout);
  }
  void finish() {
    if (tty_) std::printf("\n");
  }
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  bool tty_;
  int epoch_, epochs_;
  int64_t steps_;
  std::chrono::steady_clock::time_point t0_;
};

// Each rank evaluates every world-th test sample; sums are all-reduced.
// The autocast dtype of --amp, if any.
std::optional<DType> amp_dtype(const Config& c) {
  if (c.amp == "bf16") return DType::BFloat16;
  if (c.amp == "fp16") return DType::Float16;
  return std::nullopt;
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

// The training device: the CPU, or a GPU (cuda: this process's local rank's GPU, round robin).
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

// --resume: loads the newest good checkpoint into the model, optimizer, scaler and scheduler;
// returns the epochs it covers (0 when there is none).
int resume(const Config& c, nn::Module& model, optim::Optimizer& opt, amp::GradScaler& scaler,
           optim::LRScheduler* sched, bool lead) {
  auto ck = load_latest(c);
  if (!ck) {
    if (lead) std::printf("no checkpoint in %s: starting from scratch\n", c.checkpoint_dir.c_str());
    return 0;
  }
  model.load_state_dict(ck->model);
  opt.load_state_dict(ck->optim);
  if (scaler.is_enabled() && !ck->scaler.empty()) scaler.load_state_dict(ck->scaler);
  if (sched) sched->set_last_epoch(ck->epoch);
  if (lead) std::printf("resuming after epoch %d from %s\n", ck->epoch, c.checkpoint_dir.c_str());
  return ck->epoch;
}

// Rank 0's banner, and the metrics CSV started over with the rows of the epochs the checkpoint
// covers (a killed run may have written one more).
void start_report(const Config& c, nn::Module& model, int world, size_t train_size,
                  size_t test_size, int start_epoch) {
  int64_t params = 0;
  for (auto& p : model.parameters()) params += p.numel();
  std::printf(
      "weft-train: model %s, %lld parameters, %d process%s x batch %lld, %zu training and %zu "
      "test images\n",
      c.model.c_str(), (long long)params, world, world > 1 ? "es" : "", (long long)c.batch_size,
      train_size, test_size);
  if (world > 1)  // --timeout, WEFT_COLLECTIVE_TIMEOUT (weft-run --collective-timeout) or default
    std::printf("weft-train: collective timeout %g s\n",
                (double)dist::default_group()->timeout().count() / 1000);
  std::vector<std::string> rows{"epoch,train_loss,test_loss,test_accuracy,images_per_sec,seconds"};
  if (start_epoch > 0) {
    std::ifstream in(c.metrics);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line))
      if (!line.empty() && std::atoi(line.c_str()) <= start_epoch) rows.push_back(line);
  }
  std::ofstream out(c.metrics, std::ios::trunc);
  for (auto& r : rows) out << r << "\n";
}

// One epoch of optimizer steps; returns this rank's loss sum and step count.
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

// The mean training loss over every rank's steps.
double mean_train_loss(double loss_sum, int64_t steps, int world) {
  Tensor tl = tensor(std::vector<float>{(float)loss_sum, (float)steps}, {2});
  if (world > 1) dist::default_group()->allreduce({tl})->wait();
  auto tv = tl.to_vector_float();
  return tv[0] / std::max(1.0f, tv[1]);
}

// Rank 0 at the end of an epoch: the summary line, the CSV row and the checkpoint.
void report_epoch(const Config& c, int epoch, double train_loss, std::pair<double, double> test,
                  double ips, double secs, nn::Module& model, optim::Optimizer& opt,
                  const amp::GradScaler& scaler) {
  const auto [test_loss, acc] = test;
  char row[256];
  std::snprintf(row, sizeof row, "%d,%.6f,%.6f,%.6f,%.1f,%.2f", epoch, train_loss, test_loss, acc,
                ips, secs);
  std::printf("epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.2f%%, %.0f images/s\n",
              epoch, c.epochs, train_loss, test_loss, 100 * acc, ips);
  std::fflush(stdout);
  std::ofstream(c.metrics, std::ios::app) << row << "\n";
  save_checkpoint(c, epoch, model, opt, scaler, row);
}

int run(const Config& c) {
  const bool distributed = std::getenv("WORLD_SIZE") || std::getenv("OMPI_COMM_WORLD_SIZE");
  const Device dev = pick_device(c);
  // The current device: factories put tensors there, and on a GPU the process group defaults
  // to NCCL (as PyTorch's).
  DeviceGuard device_guard(dev);
  if (distributed) {
    dist::InitOptions init;  // --timeout, else WEFT_COLLECTIVE_TIMEOUT, else 30 minutes
    if (c.timeout) init.timeout = dist::Duration((int64_t)(*c.timeout * 1000 + 0.5));
    dist::init_process_group(init);
  }
  const int rank = dist::get_rank(), world = dist::get_world_size();
  const bool lead = rank == 0;
  set_num_threads(c.threads);
  data::MNISTOptions opts{.normalize = true, .mean = 0.2860, .std = 0.3530};
  data::MNISTOptions test_opts = opts;
  if (c.limit_train > 0) opts.limit = c.limit_train;
  if (c.limit_test > 0) test_opts.limit = c.limit_test;
  data::MNIST train(c.data, true, opts), test(c.data, false, test_opts);
  manual_seed(c.seed);
  auto model = make_model(c.model);
  model->to(dev);
  std::shared_ptr<nn::Module> net = model.ptr();
  if (world > 1) {
    nn::convert_sync_batchnorm(model.ptr());
    net = std::make_shared<nn::DistributedDataParallelImpl>(model.ptr());
  }
  auto opt = make_optimizer(c, *model);
  // Loss scaling keeps small fp16 gradients from flushing to zero; bf16 has float32's range.
  amp::GradScaler scaler({.enabled = c.amp == "fp16"});
  auto sched = make_scheduler(c, *opt);

  if (lead) fs::create_directories(c.checkpoint_dir);
  const int start_epoch = c.resume ? resume(c, *model, *opt, scaler, sched.get(), lead) : 0;
  if (lead) start_report(c, *model, world, train.size(), test.size(), start_epoch);
  data::DistributedSampler sampler(
      train,
      {.num_replicas = world, .rank = rank, .shuffle = true, .seed = c.seed, .drop_last = true});
  data::DataLoader loader(train, {.batch_size = c.batch_size,
                                  .sampler = &sampler,
                                  .drop_last = true,
                                  .num_workers = c.workers,
                                  .pin_memory = dev.is_cuda()});
  for (int epoch = start_epoch; epoch < c.epochs; ++epoch) {
    sampler.set_epoch(epoch);
    // Dropout draws from a stream fixed by (seed, epoch, rank): a resumed run repeats it.
    manual_seed(data::mix_seed(c.seed * 1000003 + (uint64_t)rank, epoch));
    Progress progress(lead && c.progress, epoch + 1, c.epochs, (int64_t)loader.len());
    const auto [loss_sum, steps] =
        train_epoch(c, *net, *opt, scaler, loader, dev, progress, lead, world);
    if (lead) progress.finish();
    const double secs = progress.elapsed();
    if (sched) sched->step();
    const double train_loss = mean_train_loss(loss_sum, steps, world);
    const auto test_metrics = evaluate(*model, test, dev, amp_dtype(c));
    const double ips = (double)(steps * c.batch_size * world) / secs;
    if (lead) report_epoch(c, epoch + 1, train_loss, test_metrics, ips, secs, *model, *opt, scaler);
  }
  if (lead)
    std::printf("done: metrics in %s, checkpoints in %s\n", c.metrics.c_str(),
                c.checkpoint_dir.c_str());
  if (dist::is_initialized()) dist::destroy_process_group();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c = parse(argc, argv);
  try {
    return run(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft-train: error: %s\n", e.what());
    dist::record_error(e);  // for weft-run (WEFT_ERROR_FILE), which reports the rank to blame
    return 1;
  }
}
