// A module of your own under DataParallel and DistributedDataParallel: the README's "Writing
// your own module", compiled. Usage:
//   custom_module single|dp                                      (one process)
//   weft-run --nproc-per-node 2 --standalone custom_module ddp   (two processes)
// Every mode trains the same model on the same global batch for a few SGD steps and prints its
// parameters; all of them print the same values (tests/test_user_module.cpp compares them).
#include <weft/distributed/distributed.h>
#include <weft/nn/parallel/data_parallel.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/weft.h>

#include <cstdio>
#include <iostream>
#include <string>

using namespace weft;

struct TwoLayerNetImpl : nn::Cloneable<TwoLayerNetImpl> {
  TwoLayerNetImpl(int64_t in, int64_t hidden, int64_t out)
      : Cloneable("TwoLayerNet"), in(in), hidden(hidden), out(out) {
    reset();
  }
  // Creates every parameter and submodule; clone() (a DataParallel replica) calls it again.
  void reset() override {
    fc1 = register_module("fc1", nn::Linear(in, hidden));
    fc2 = register_module("fc2", nn::Linear(hidden, out));
    scale = register_parameter("scale", ones({out}));
  }
  Tensor forward(const Tensor& x) override { return fc2(fc1(x).relu()) * scale; }
  int64_t in, hidden, out;
  nn::Linear fc1{nullptr}, fc2{nullptr};
  Tensor scale;
};
using TwoLayerNet = nn::ModuleHolder<TwoLayerNetImpl>;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "dp";
  manual_seed(0);
  const int64_t batch = 32;
  Tensor x = randn({batch, 4}), y = randn({batch, 2});  // the global batch
  manual_seed(1);                                       // the same initial parameters in every mode
  std::shared_ptr<nn::Module> model;
  Tensor xs = x, ys = y;  // this process's part of the batch
  if (mode == "dp") {
    // One process, several devices: DataParallel replicates it with clone().
    nn::DataParallel dp(TwoLayerNet(4, 16, 2));
    model = dp.ptr();
  } else if (mode == "ddp") {
    // Many processes (weft-run, or dist::spawn): each holds a copy; gradients are all-reduced.
    dist::init_process_group();
    nn::DistributedDataParallel ddp(TwoLayerNet(4, 16, 2));
    model = ddp.ptr();
    const int64_t part = batch / dist::get_world_size(), start = dist::get_rank() * part;
    xs = x.narrow(0, start, part);
    ys = y.narrow(0, start, part);
  } else {
    model = TwoLayerNet(4, 16, 2).ptr();
  }
  std::cout << mode << ": input " << xs.sizes() << ", target " << ys.sizes() << "\n";
  optim::SGD opt(model->parameters(), 0.05);
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    Tensor loss = nn::functional::mse_loss(model->forward(xs), ys);
    loss.backward();
    opt.step();
  }
  if (dist::get_rank() == 0) {
    std::printf("PARAMS");
    for (const Tensor& p : model->parameters())
      for (float v : p.contiguous().to_vector_float()) std::printf(" %.8g", v);
    std::printf("\n");
  }
  if (dist::is_initialized()) dist::destroy_process_group();
  return 0;
}
