// weft-train: the main job. Trains a CNN (default), a ShuffleNet-V2-style network or an
// MLP on Fashion-MNIST (or any MNIST-format IDX files) in one process, or data-parallel
// under weft-run / mpirun (DistributedDataParallel, DistributedSampler; --batchnorm sync for
// SyncBatchNorm). --val-split holds out a validation set that each epoch reports on.
// Rank 0 reports progress and per-epoch metrics, writes a CSV of them and an atomic,
// checksummed checkpoint every epoch; --resume continues from the newest usable checkpoint
// that any rank holds (resume.h). Bad data, options and directories stop it before training.
#include <cstdio>
#include <cstdlib>

#include "checkpoint_files.h"
#include "metrics.h"
#include "options.h"
#include "progress.h"
#include "resume.h"
#include "strategy.h"
#include "training.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/error_file.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/weft.h"

using namespace weft;
using namespace weft_train;

namespace {

// Data that cannot train or test is an error, not an epoch of loss 0 or NaN metrics.
// `train`: the training images left after the validation split.
void check_data(const Config& c, const data::Dataset& train, const data::MNIST& test,
                const data::DataLoader& loader, size_t per_rank, int world) {
  WEFT_CHECK(test.size() > 0, "the test set in '", c.data,
             "' is empty (t10k-images-idx3-ubyte holds no images): there is nothing to measure "
             "the model on");
  WEFT_CHECK(loader.len() > 0, "the ", train.size(), " training images give each of ", world,
             " process(es) ", per_rank, ", fewer than one batch of ", c.batch_size,
             " (incomplete batches are dropped): lower --batch-size or use more data");
}

// Rank 0's banner.
void print_banner(const Config& c, nn::Module& model, int world, const TrainingSets& sets,
                  size_t test_size) {
  int64_t params = 0;
  for (auto& p : model.parameters()) params += p.numel();
  std::printf(
      "weft-train: model %s, %lld parameters, %d process%s x batch %lld, %zu training and %zu "
      "test images\n",
      c.model.c_str(), (long long)params, world, world > 1 ? "es" : "", (long long)c.batch_size,
      sets.train->size(), test_size);
  if (c.amp != "none") std::printf("weft-train: forward under %s autocast\n", c.amp.c_str());
  if (sets.val)
    std::printf("weft-train: %zu training images held out for validation (seed %llu)\n",
                sets.val->size(), (unsigned long long)c.seed);
  if (world > 1)  // --timeout, WEFT_COLLECTIVE_TIMEOUT (weft-run --collective-timeout) or default
    std::printf("weft-train: collective timeout %g s\n",
                (double)dist::default_group()->timeout().count() / 1000);
}

// The CSV rows a resumed run keeps: those the checkpoint carries, else (a checkpoint of an
// older weft-train) those of the covered epochs in the metrics file as it is.
std::vector<std::string> kept_rows(const Config& c, const std::optional<Checkpoint>& ck) {
  if (!ck) return {};
  if (ck->metrics_rows) return *ck->metrics_rows;
  return MetricsFile::read_rows_up_to(c.metrics, ck->epoch);
}

// One epoch's figures. With a validation set, `test` is measured after the last epoch only.
struct EpochMetrics {
  double train_loss = 0, ips = 0, secs = 0;
  std::optional<std::pair<double, double>> val, test;  // loss, accuracy
};

// Rank 0 at the end of an epoch: the summary line, the CSV row and the checkpoint.
void report_epoch(const Config& c, int epoch, const EpochMetrics& m, MetricsFile& metrics,
                  nn::Module& model, optim::Optimizer& opt, const amp::GradScaler& scaler) {
  const auto cells = [](const std::optional<std::pair<double, double>>& v) {
    char b[64] = ",";
    if (v) std::snprintf(b, sizeof b, "%.6f,%.6f", v->first, v->second);
    return std::string(b);
  };
  char head[128], tail[64];
  std::snprintf(head, sizeof head, "%d,%.6f,", epoch, m.train_loss);
  std::snprintf(tail, sizeof tail, ",%.1f,%.2f,", m.ips, m.secs);
  std::string row = head;
  row.append(cells(m.test)).append(tail).append(cells(m.val));
  std::string line = "epoch " + std::to_string(epoch) + "/" + std::to_string(c.epochs) + ":";
  char b[160];
  std::snprintf(b, sizeof b, " train loss %.4f", m.train_loss);
  line += b;
  if (m.val) {
    std::snprintf(b, sizeof b, ", val loss %.4f, val accuracy %.2f%%", m.val->first,
                  100 * m.val->second);
    line += b;
  }
  if (m.test) {
    std::snprintf(b, sizeof b, ", test loss %.4f, test accuracy %.2f%%", m.test->first,
                  100 * m.test->second);
    line += b;
  }
  std::snprintf(b, sizeof b, ", %.0f images/s", m.ips);
  line += b;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  metrics.append(row);
  if (!sharded_checkpoints(c)) save_checkpoint(c, epoch, model, opt, scaler, metrics.rows());
}

// The model, wrapped for data parallelism when there are several ranks.
std::shared_ptr<nn::Module> wrap(const Config& c, nn::Sequential& model, int world) {
  // Before sharding: FSDP's units take the SyncBatchNorms' parameters.
  if (world > 1 && c.batchnorm == "sync") nn::convert_sync_batchnorm(model.ptr());
  if (is_fsdp(c)) return shard_model(model);  // at one process too: the same checkpoints
  if (world == 1) return model.ptr();
  return std::make_shared<nn::DistributedDataParallelImpl>(model.ptr());
}

int run(const Config& c) {
  const bool distributed = std::getenv("WORLD_SIZE") || std::getenv("OMPI_COMM_WORLD_SIZE");
  const Device dev = pick_device(c);
  // The current device: factories put tensors there, and on a GPU the process group defaults
  // to NCCL (as PyTorch's).
  DeviceGuard device_guard(dev);
  if (distributed) {
    dist::InitOptions init{.init_method = c.init_method};  // --timeout, else
    if (c.timeout) init.timeout = dist::Duration((int64_t)(*c.timeout * 1000 + 0.5));
    dist::init_process_group(init);  // WEFT_COLLECTIVE_TIMEOUT, else 30 minutes
  } else if (sharded_checkpoints(c)) {
    init_single_process_group();
  }
  const int rank = dist::get_rank(), world = dist::get_world_size();
  const bool lead = rank == 0, node_lead = dist::get_local_rank() == 0;
  set_num_threads(c.threads);
  data::MNISTOptions opts{.normalize = true, .mean = 0.2860, .std = 0.3530};
  data::MNISTOptions test_opts = opts;
  if (c.limit_train > 0) opts.limit = c.limit_train;
  if (c.limit_test > 0) test_opts.limit = c.limit_test;
  data::MNIST full_train(c.data, true, opts), test(c.data, false, test_opts);
  WEFT_CHECK(full_train.size() > 0, "the training set in '", c.data,
             "' is empty (train-images-idx3-ubyte holds no images)");
  const TrainingSets sets = split_training_set(c, full_train, dev);
  const data::Dataset& train = *sets.train;
  data::DistributedSampler sampler(
      train,
      {.num_replicas = world, .rank = rank, .shuffle = true, .seed = c.seed, .drop_last = true});
  data::DataLoader loader(train, {.batch_size = c.batch_size,
                                  .sampler = &sampler,
                                  .drop_last = true,
                                  .num_workers = c.workers,
                                  .pin_memory = dev.is_cuda()});
  check_data(c, train, test, loader, sampler.size(), world);
  const int64_t steps_per_epoch = (int64_t)loader.len();

  manual_seed(c.seed);
  auto model = make_model(c);
  model->to(dev);
  std::shared_ptr<nn::Module> net = wrap(c, model, world);
  auto opt = make_strategy_optimizer(c, *model);
  // Loss scaling keeps small fp16 gradients from flushing to zero; bf16 has float32's range.
  amp::GradScaler scaler({.enabled = c.amp == "fp16"});
  auto sched = make_scheduler(c, *opt, steps_per_epoch);
  optim::LRScheduler* per_step = c.lr_interval == "step" ? sched.get() : nullptr;

  if (node_lead) remove_stale_temp_files(c.checkpoint_dir, /*report=*/true);
  if (lead) prepare_checkpoint_dir(c.checkpoint_dir);
  std::optional<Checkpoint> ck;
  if (c.resume)
    ck = sharded_checkpoints(c) ? agree_on_sharded_checkpoint(c, *model, *opt, lead)
                                : agree_on_checkpoint(c, dev, /*report=*/node_lead, lead);
  const int start_epoch =
      ck ? apply_checkpoint(*ck, c, *model, *opt, scaler, sched.get(), steps_per_epoch) : 0;
  MetricsFile metrics(c.metrics);
  if (lead) {
    print_banner(c, *model, world, sets, test.size());
    metrics.start(kept_rows(c, ck));
  }
  ck.reset();
  for (int epoch = start_epoch; epoch < c.epochs; ++epoch) {
    sampler.set_epoch(epoch);
    // Dropout draws from a stream fixed by (seed, epoch, rank): a resumed run repeats it.
    manual_seed(data::mix_seed(c.seed * 1000003 + (uint64_t)rank, epoch));
    Progress progress(lead && c.progress, epoch + 1, c.epochs, steps_per_epoch);
    const auto [loss_sum, steps] =
        train_epoch(c, *net, *opt, scaler, per_step, loader, dev, progress, lead, world);
    if (lead) progress.finish();
    EpochMetrics m;
    m.secs = progress.elapsed();
    if (sched && !per_step) sched->step();
    m.train_loss = mean_train_loss(loss_sum, steps, world);
    m.ips = (double)(steps * c.batch_size * world) / m.secs;
    if (sets.val) m.val = evaluate(*model, *sets.val, dev, amp_dtype(c));
    if (!sets.val || epoch + 1 == c.epochs) m.test = evaluate(*model, test, dev, amp_dtype(c));
    if (lead) report_epoch(c, epoch + 1, m, metrics, *model, *opt, scaler);
    if (sharded_checkpoints(c))
      save_sharded_checkpoint(c, epoch + 1, *model, *opt, scaler, metrics.rows());
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
