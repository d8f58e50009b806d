// Trains a small CNN on Fashion-MNIST in one process and prints loss and test accuracy per
// epoch: weft's PyTorch-style training loop end to end (data, model, loss, optimizer,
// checkpoint). Usage: train_fashion_mnist [--data DIR] [--epochs N] [--batch-size B]
//                      [--lr LR] [--threads T] [--limit N] [--out DIR]
#include <weft/data.h>
#include <weft/weft.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

using namespace weft;
namespace F = weft::nn::functional;

namespace {

nn::Sequential make_cnn() {
  return nn::Sequential({nn::Conv2d(1, 32, 3, {.padding = {1, 1}}), nn::BatchNorm2d(32), nn::ReLU(),
                         nn::MaxPool2d(2), nn::Conv2d(32, 64, 3, {.padding = {1, 1}}),
                         nn::BatchNorm2d(64), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                         nn::Linear(64 * 7 * 7, 128), nn::ReLU(), nn::Dropout(0.25),
                         nn::Linear(128, 10)});
}

double evaluate(nn::Sequential& model, const data::MNIST& test, double* loss_out) {
  NoGradGuard ng;
  model->eval();
  data::DataLoader loader(test, {.batch_size = 500});
  int64_t correct = 0;
  double loss = 0;
  for (auto& [x, y] : loader) {
    Tensor logits = model(x);
    loss += F::cross_entropy(logits, y, F::Reduction::Sum).item<double>();
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  model->train();
  *loss_out = loss / (double)test.size();
  return (double)correct / (double)test.size();
}

[[noreturn]] void usage(int code) {
  std::printf(
      "usage: train_fashion_mnist [--data DIR] [--epochs N] [--batch-size B] [--lr LR]\n"
      "                           [--threads T] [--limit N] [--out DIR]\n"
      "Trains a small CNN on Fashion-MNIST (default data: /usr/share/datasets/fashion-mnist).\n");
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir = "/usr/share/datasets/fashion-mnist", out_dir = "checkpoints";
  int epochs = 3, threads = 2;
  int64_t batch = 64, limit = 0;
  double lr = 0.05;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "--help" || a == "-h")
      usage(0);
    else if (a == "--data")
      data_dir = next();
    else if (a == "--epochs")
      epochs = std::atoi(next().c_str());
    else if (a == "--batch-size")
      batch = std::atoll(next().c_str());
    else if (a == "--lr")
      lr = std::atof(next().c_str());
    else if (a == "--threads")
      threads = std::atoi(next().c_str());
    else if (a == "--limit")
      limit = std::atoll(next().c_str());
    else if (a == "--out")
      out_dir = next();
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      usage(2);
    }
  }
  if (epochs < 1 || batch < 1 || threads < 1 || lr <= 0) {
    std::fprintf(stderr, "epochs, batch-size, threads and lr must be positive\n");
    return 2;
  }
  try {
    set_num_threads(threads);
    manual_seed(0);
    data::MNISTOptions opts{.normalize = true, .mean = 0.2860, .std = 0.3530};
    if (limit > 0) opts.limit = limit;
    data::MNIST train(data_dir, true, opts), test(data_dir, false, opts);
    std::printf("Fashion-MNIST: %zu training and %zu test images from %s\n", train.size(),
                test.size(), data_dir.c_str());
    auto model = make_cnn();
    optim::SGD opt(model->parameters(), {.lr = lr, .momentum = 0.9, .weight_decay = 5e-4});
    optim::CosineAnnealingLR sched(opt, epochs);
    data::DataLoader loader(
        train,
        {.batch_size = batch, .shuffle = true, .seed = 0, .drop_last = true, .num_workers = 1});
    std::filesystem::create_directories(out_dir);
    for (int epoch = 0; epoch < epochs; ++epoch) {
      loader.set_epoch(epoch);
      auto t0 = std::chrono::steady_clock::now();
      double running = 0;
      int64_t steps = 0;
      for (auto& [x, y] : loader) {
        opt.zero_grad();
        Tensor loss = F::cross_entropy(model(x), y);
        loss.backward();
        opt.step();
        running += loss.item<double>();
        ++steps;
      }
      sched.step();
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      double test_loss = 0;
      double acc = evaluate(model, test, &test_loss);
      std::printf(
          "epoch %d/%d  train loss %.4f  test loss %.4f  test accuracy %.2f%%  %.0f images/s\n",
          epoch + 1, epochs, running / (double)steps, test_loss, 100 * acc,
          (double)(steps * batch) / secs);
      std::fflush(stdout);
      save(model->state_dict(), out_dir + "/fashion_mnist_cnn.safetensors",
           {{"epoch", std::to_string(epoch + 1)}, {"test_accuracy", std::to_string(acc)}});
    }
    std::printf("saved %s/fashion_mnist_cnn.safetensors\n", out_dir.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
