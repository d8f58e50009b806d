// PyTorch's DDP tutorial ("Getting Started with Distributed Data Parallel": the basic use case
// and the checkpoint demo), ported: the program starts its own ranks with dist::spawn, as the
// tutorial does with torch.multiprocessing.spawn, and each trains a ToyModel one step under
// DistributedDataParallel on Gloo. Usage: ddp_spawn [WORLD_SIZE] (default 2). The tutorial's
// third demo, model parallelism, needs two GPUs per rank and is left out.
#include <unistd.h>
#include <weft/distributed/distributed.h>
#include <weft/distributed/spawn.h>
#include <weft/nn/parallel/distributed_data_parallel.h>
#include <weft/weft.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

using namespace weft;

void setup(int rank, int world_size) {
  // The tutorial sets MASTER_ADDR and MASTER_PORT here; under spawn they are set already, to a
  // port spawn holds for the store.
  dist::init_process_group({.backend = "gloo", .world_size = world_size, .rank = rank});
}

void cleanup() { dist::destroy_process_group(); }

struct ToyModelImpl : nn::Cloneable<ToyModelImpl> {
  ToyModelImpl() : Cloneable("ToyModel") { reset(); }
  void reset() override {
    net1 = register_module("net1", nn::Linear(10, 10));
    relu = register_module("relu", nn::ReLU());
    net2 = register_module("net2", nn::Linear(10, 5));
  }
  Tensor forward(const Tensor& x) override { return net2(relu(net1(x))); }
  nn::Linear net1{nullptr}, net2{nullptr};
  nn::ReLU relu{nullptr};
};
using ToyModel = nn::ModuleHolder<ToyModelImpl>;

// One SGD step on random data; returns the loss.
double train_step(nn::DistributedDataParallel& ddp_model) {
  nn::MSELoss loss_fn;
  optim::SGD optimizer(ddp_model->parameters(), 0.001);
  optimizer.zero_grad();
  Tensor outputs = ddp_model(randn({20, 10}));
  Tensor labels = randn({20, 5});
  Tensor loss = loss_fn(outputs, labels);
  loss.backward();
  optimizer.step();
  return loss.item<double>();
}

void demo_basic(int rank, int world_size) {
  std::printf("Running basic DDP example on rank %d.\n", rank);
  setup(rank, world_size);
  ToyModel model;
  nn::DistributedDataParallel ddp_model(model);
  const double loss = train_step(ddp_model);
  std::printf("rank %d: basic step done, loss %.4f\n", rank, loss);
  cleanup();
}

void demo_checkpoint(int rank, int world_size) {
  std::printf("Running DDP checkpoint example on rank %d.\n", rank);
  setup(rank, world_size);
  ToyModel model;
  nn::DistributedDataParallel ddp_model(model);
  // One file per job: the ranks' parent (spawn's process) names it.
  const std::string checkpoint_path = (std::filesystem::temp_directory_path() /
                                       ("model." + std::to_string(getppid()) + ".safetensors"))
                                          .string();
  if (rank == 0) save(ddp_model->state_dict(), checkpoint_path);
  dist::barrier();  // the others load only once rank 0 has saved
  ddp_model->load_state_dict(load(checkpoint_path));
  const double loss = train_step(ddp_model);
  // No barrier needed before removing the file: the all-reduces in backward already synchronised.
  if (rank == 0) std::filesystem::remove(checkpoint_path);
  std::printf("rank %d: checkpoint step done, loss %.4f\n", rank, loss);
  cleanup();
}

void run_demo(void (*demo_fn)(int, int), int world_size) {
  dist::spawn([&](int rank) { demo_fn(rank, world_size); }, world_size);
}

int main(int argc, char** argv) {
  const int world_size = argc > 1 ? std::atoi(argv[1]) : 2;
  try {
    run_demo(demo_basic, world_size);
    run_demo(demo_checkpoint, world_size);
  } catch (const dist::SpawnError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return e.exit_code();
  }
  return 0;
}
