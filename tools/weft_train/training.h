// weft-train's pieces of one training run: the model, optimizer and scheduler that the options
// name, the training and validation sets, the device, one epoch of optimizer steps and the
// evaluation. Collectives (the loss and the evaluation sums) are all-reduced so that every rank
// gets the same numbers.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "options.h"
#include "progress.h"
#include "weft/data.h"
#include "weft/weft.h"

namespace weft_train {

weft::nn::Sequential make_model(const Config& c);
std::unique_ptr<weft::optim::Optimizer> make_optimizer(const Config& c, weft::nn::Module& model);
// The same on these parameters (FSDP's shards).
std::unique_ptr<weft::optim::Optimizer> make_optimizer(const Config& c,
                                                       std::vector<weft::Tensor> params);
// The scheduler counts optimizer steps (--lr-interval step: cosine over all epochs x
// steps_per_epoch steps, as PyTorch's CosineAnnealingLR(T_max = total steps) stepped after each
// optimizer step) or epochs.
std::unique_ptr<weft::optim::LRScheduler> make_scheduler(const Config& c,
                                                         weft::optim::Optimizer& opt,
                                                         int64_t steps_per_epoch);
// The scheduler's count after `epochs` whole epochs.
int64_t scheduler_count(const Config& c, int epochs, int64_t steps_per_epoch);

// The training images weft-train trains on and the ones it holds out for validation (--val-split:
// torch.utils.data.random_split of the training set with generator seed --seed, the same on every
// rank; checked across ranks, since ranks with different data files would split differently).
struct TrainingSets {
  std::unique_ptr<weft::data::Subset> train, val;  // val: null without --val-split
};
TrainingSets split_training_set(const Config& c, const weft::data::MNIST& full, weft::Device dev);
// The CPU, or a GPU (cuda: this process's local rank's GPU, round robin).
weft::Device pick_device(const Config& c);
// The autocast dtype of --amp, if any.
std::optional<weft::DType> amp_dtype(const Config& c);

// One epoch of optimizer steps, stepping `per_step` (if any) after each; returns this rank's loss
// sum and step count.
std::pair<double, int64_t> train_epoch(const Config& c, weft::nn::Module& net,
                                       weft::optim::Optimizer& opt, weft::amp::GradScaler& scaler,
                                       weft::optim::LRScheduler* per_step,
                                       weft::data::DataLoader& loader, weft::Device dev,
                                       Progress& progress, bool lead, int world);
// The mean training loss over every rank's steps.
double mean_train_loss(double loss_sum, int64_t steps, int world);
// Loss and accuracy on `set`: each rank evaluates every world-th sample; sums are all-reduced.
std::pair<double, double> evaluate(weft::nn::Module& model, const weft::data::Dataset& set,
                                   weft::Device dev, std::optional<weft::DType> amp);

}  // namespace weft_train
