// weft-train's command line: the options with their defaults, parsed and checked. A usage error
// (an unknown flag, a malformed or out-of-range value) ends the process with status 2 and one
// line naming the flag and the value given (an unknown flag: the nearest known one, when close),
// then a pointer to --help; --help prints the usage and exits 0. A runtime error found while
// parsing (no CUDA device) is one line and status 1. Defaults that depend on other options
// (adam's learning rate, the metrics file in the checkpoint directory) are filled in by parse().
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace weft_train {

// The defaults are the main job's recipe, chosen on a validation split held out of the training
// set (bench/README.md, "Main job recipe (validation split)").
struct Config {
  std::string model = "cnn", data = "/usr/share/datasets/fashion-mnist", optimizer = "sgd";
  std::string scheduler = "cosine", device = "cpu", checkpoint_dir = "checkpoints", metrics;
  std::string amp = "auto", init_method = "env://";  // parse() resolves "auto"
  std::string lr_interval = "step";  // the scheduler steps after every optimizer step, or epoch
  std::string batchnorm = "local";   // local: per-rank statistics; sync: SyncBatchNorm
  std::string strategy = "ddp";      // ddp, zero or fsdp (strategy.h)
  int epochs = 3, threads = 1, workers = 1;
  int64_t batch_size = 32, limit_train = 0, limit_test = 0;
  double lr = 0.05, weight_decay = 5e-4;
  double dropout = 0.0;           // before the CNN's last Linear; 0: no Dropout module
  double val_split = 0.0;         // held-out training samples: a count (>= 1) or a fraction (< 1)
  std::optional<double> timeout;  // collective timeout in seconds; unset: the library's default
  uint64_t seed = 0;
  bool resume = false, progress = true;
};

Config parse(int argc, char** argv);

// A usage error: prints "weft-train: <msg>" and a pointer to --help on stderr; exits with 2.
[[noreturn]] void bad_option(const std::string& msg);
// A runtime error outside training (no GPU): prints "weft-train: error: <msg>"; exits with 1.
[[noreturn]] void fail(const std::string& msg);

// The known flag nearest to `flag` by edit distance, or "" when none is close.
std::string nearest_flag(const std::string& flag, const std::vector<std::string>& known);

// `v` as a number of type T, or bad_option naming `flag` and `v`.
template <typename T>
T parse_number(const std::string& flag, const std::string& v) {
  try {
    size_t pos = 0;
    T out;
    if constexpr (std::is_floating_point_v<T>)
      out = static_cast<T>(std::stod(v, &pos));
    else if constexpr (std::is_unsigned_v<T>) {
      if (!v.empty() && v[0] == '-') throw std::invalid_argument(v);
      out = static_cast<T>(std::stoull(v, &pos));
    } else {
      const long long x = std::stoll(v, &pos);
      if (x < (long long)std::numeric_limits<T>::min() ||
          x > (long long)std::numeric_limits<T>::max())
        throw std::out_of_range(v);
      out = static_cast<T>(x);
    }
    if (pos != v.size()) throw std::invalid_argument(v);
    return out;
  } catch (const std::exception&) {
    std::string msg = flag;
    msg.append(" ").append(v).append(": expects ");
    msg.append(std::is_floating_point_v<T> ? "a number" : "an integer");
    bad_option(msg);
  }
}

}  // namespace weft_train
