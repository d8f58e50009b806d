// weft-train's pieces of one training run: the model, optimizer and scheduler that the options
// name, the device, one epoch of optimizer steps and the evaluation. Collectives (the loss and
// the test sums) are all-reduced so that every rank gets the same numbers.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "options.h"
#include "progress.h"
#include "weft/data.h"
#include "weft/weft.h"

namespace weft_train {

weft::nn::Sequential make_model(const std::string& name);
std::unique_ptr<weft::optim::Optimizer> make_optimizer(const Config& c, weft::nn::Module& model);
std::unique_ptr<weft::optim::LRScheduler> make_scheduler(const Config& c,
                                                         weft::optim::Optimizer& opt);
// The CPU, or a GPU (cuda: this process's local rank's GPU, round robin).
weft::Device pick_device(const Config& c);
// The autocast dtype of --amp, if any.
std::optional<weft::DType> amp_dtype(const Config& c);

// One epoch of optimizer steps; returns this rank's loss sum and step count.
std::pair<double, int64_t> train_epoch(const Config& c, weft::nn::Module& net,
                                       weft::optim::Optimizer& opt, weft::amp::GradScaler& scaler,
                                       weft::data::DataLoader& loader, weft::Device dev,
                                       Progress& progress, bool lead, int world);
// The mean training loss over every rank's steps.
double mean_train_loss(double loss_sum, int64_t steps, int world);
// Test loss and accuracy: each rank evaluates every world-th test sample; sums are all-reduced.
std::pair<double, double> evaluate(weft::nn::Module& model, const weft::data::MNIST& test,
                                   weft::Device dev, std::optional<weft::DType> amp);

}  // namespace weft_train
