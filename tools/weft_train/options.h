// weft-train's command line: the options with their defaults, parsed and checked. A bad option
// ends the process with status 2 and a message naming it (then the usage); --help prints the
// usage and exits 0. Defaults that depend on other options (adam's learning rate, the metrics
// file in the checkpoint directory) are filled in by parse().
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace weft_train {

struct Config {
  std::string model = "cnn", data = "/usr/share/datasets/fashion-mnist", optimizer = "sgd";
  std::string scheduler = "cosine", device = "cpu", checkpoint_dir = "checkpoints", metrics;
  std::string amp = "none", init_method = "env://";
  std::string strategy = "ddp";  // ddp or zero (strategy.h)
  int epochs = 8, threads = 1, workers = 1;
  int64_t batch_size = 64, limit_train = 0, limit_test = 0;
  double lr = 0.05, weight_decay = 5e-4;
  std::optional<double> timeout;  // collective timeout in seconds; unset: the library's default
  uint64_t seed = 0;
  bool resume = false, progress = true;
};

Config parse(int argc, char** argv);

// Prints "weft-train: <msg>" and the usage to stderr, and exits with status 2.
[[noreturn]] void bad_option(const std::string& msg);

// `v` as a number of type T, or bad_option naming `flag`.
template <typename T>
T parse_number(const std::string& flag, const std::string& v) {
  try {
    size_t pos = 0;
    T out;
    if constexpr (std::is_floating_point_v<T>)
      out = static_cast<T>(std::stod(v, &pos));
    else
      out = static_cast<T>(std::stoll(v, &pos));
    if (pos != v.size()) throw std::invalid_argument(v);
    return out;
  } catch (const std::exception&) {
    bad_option(flag + " expects a number, got '" + v + "'");
  }
}

}  // namespace weft_train
