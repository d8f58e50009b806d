#include "options.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "weft/cuda.h"

namespace weft_train {
namespace {

const char* kUsage =
    "usage: weft-train [options]\n"
    "Trains a model on Fashion-MNIST (or MNIST-format files). Run it as one process, or\n"
    "data-parallel with `weft-run --nproc-per-node N weft-train ...` or `mpirun -n N weft-train`.\n"
    "The defaults (chosen on a validation split: bench/README.md): SGD lr 0.05 momentum 0.9,\n"
    "weight decay 5e-4, cosine annealing per step over 3 epochs, batch 32 per process, no\n"
    "dropout, the forward under bf16 autocast where the CPU computes in bf16 natively.\n"
    "  --model cnn|shufflenet|mlp   network (default cnn)\n"
    "  --data DIR                   IDX files train-*/t10k-* (.gz or plain)\n"
    "                               (default /usr/share/datasets/fashion-mnist)\n"
    "  --epochs N                   (default 3)\n"
    "  --batch-size B               per process (default 32)\n"
    "  --lr LR                      (default 0.05 for sgd, 0.001 for adam/adamw)\n"
    "  --optimizer sgd|adam|adamw   (default sgd, momentum 0.9)\n"
    "  --weight-decay WD            (default 5e-4)\n"
    "  --strategy ddp|zero|fsdp     ddp (default): every rank holds the whole model, gradients\n"
    "                               and optimizer state; zero: DDP with ZeroRedundancyOptimizer,\n"
    "                               each rank holding the optimizer state of its share of the\n"
    "                               parameters; fsdp: FullyShardedDataParallel (each layer with\n"
    "                               parameters a unit, then the root), each rank holding 1/N of\n"
    "                               the parameters, gradients and optimizer state. zero and fsdp\n"
    "                               save sharded checkpoints (DIR/epoch-N.dcp, one file per\n"
    "                               rank; DIR must be shared) that resume at any world size\n"
    "  --zero                       short for --strategy zero\n"
    "  --scheduler cosine|step|none (default cosine: to 0 over the whole run)\n"
    "  --lr-interval step|epoch     the scheduler steps after every optimizer step (default,\n"
    "                               as PyTorch's CosineAnnealingLR(T_max = total steps)) or\n"
    "                               once per epoch\n"
    "  --dropout P                  dropout before the CNN's last layer (default 0: none)\n"
    "  --batchnorm local|sync       with several processes: BatchNorm on each rank's own\n"
    "                               batch (default, as PyTorch's DDP) or SyncBatchNorm\n"
    "                               (statistics over all ranks' batches)\n"
    "  --val-split N                hold N training samples out (N < 1: that fraction), the\n"
    "                               same seeded choice on every rank, as validation set: each\n"
    "                               epoch reports validation loss and accuracy, the test set is\n"
    "                               measured after the last epoch only (default 0: none; each\n"
    "                               epoch reports test loss and accuracy)\n"
    "  --seed S                     (default 0)\n"
    "  --threads T                  intra-op threads per process (default 1)\n"
    "  --workers W                  data loader threads (default 1)\n"
    "  --device cpu|cuda|cuda:N     (default cpu; cuda: each process takes GPU LOCAL_RANK %\n"
    "                               #GPUs, NCCL between processes; needs a CUDA build)\n"
    "  --amp auto|none|bf16|fp16    mixed precision: the forward under autocast in that dtype\n"
    "                               (fp16 adds loss scaling, a GradScaler). auto (default):\n"
    "                               bf16 on a CPU with bf16 arithmetic (avx512_bf16 or\n"
    "                               amx_bf16 in /proc/cpuinfo), else none\n"
    "  --checkpoint-dir DIR         (default checkpoints; may be node-local: see --resume)\n"
    "  --resume                     continue from the newest usable checkpoint (checksums\n"
    "                               verified, values finite) that any rank's DIR holds; ranks\n"
    "                               without it receive it from one that has it. Checkpoints\n"
    "                               present but none usable is an error, not a fresh start\n"
    "  --metrics FILE               CSV of per-epoch metrics (default DIR/metrics.csv)\n"
    "  --limit-train N, --limit-test N  use only the first N samples\n"
    "  --init-method URL            how the processes meet: env:// (default: MASTER_ADDR and\n"
    "                               MASTER_PORT, as weft-run and torchrun set them),\n"
    "                               tcp://HOST:PORT, or file:///PATH on a shared file system\n"
    "  --no-progress                plain lines even on a terminal\n"
    "  --timeout S                  collective timeout in seconds: a stalled rank fails the job\n"
    "                               naming it (default WEFT_COLLECTIVE_TIMEOUT, else 30 min)\n"
    "  --help, -h                   this text\n";

using Setter = std::function<void(Config&, const std::string& flag, const std::string& v)>;

template <typename T>
Setter number(T Config::*field) {
  return [field](Config& c, const std::string& f, const std::string& v) {
    c.*field = parse_number<T>(f, v);
  };
}

Setter text(std::string Config::*field) {
  return [field](Config& c, const std::string&, const std::string& v) { c.*field = v; };
}

struct Flag {
  std::string name;
  Setter set;  // empty: a switch, which takes no value
};

// Every option weft-train knows.
const std::vector<Flag>& flags() {
  static const std::vector<Flag> all = {
      {"--model", text(&Config::model)},
      {"--data", text(&Config::data)},
      {"--epochs", number(&Config::epochs)},
      {"--batch-size", number(&Config::batch_size)},
      {"--lr", number(&Config::lr)},
      {"--optimizer", text(&Config::optimizer)},
      {"--weight-decay", number(&Config::weight_decay)},
      {"--scheduler", text(&Config::scheduler)},
      {"--lr-interval", text(&Config::lr_interval)},
      {"--dropout", number(&Config::dropout)},
      {"--batchnorm", text(&Config::batchnorm)},
      {"--val-split", number(&Config::val_split)},
      {"--seed", number(&Config::seed)},
      {"--threads", number(&Config::threads)},
      {"--workers", number(&Config::workers)},
      {"--device", text(&Config::device)},
      {"--amp", text(&Config::amp)},
      {"--checkpoint-dir", text(&Config::checkpoint_dir)},
      {"--metrics", text(&Config::metrics)},
      {"--limit-train", number(&Config::limit_train)},
      {"--limit-test", number(&Config::limit_test)},
      {"--timeout", [](Config& c, const std::string& f,
                       const std::string& v) { c.timeout = parse_number<double>(f, v); }},
      {"--init-method", text(&Config::init_method)},
      {"--strategy", text(&Config::strategy)},
      {"--zero", nullptr},
      {"--resume", nullptr},
      {"--no-progress", nullptr},
  };
  return all;
}

[[noreturn]] void unknown_flag(const std::string& a) {
  std::vector<std::string> names = {"--help"};
  for (const Flag& f : flags()) names.push_back(f.name);
  std::string msg = "unknown option " + a;
  const std::string near = nearest_flag(a, names);
  if (!near.empty()) msg.append(" (did you mean ").append(near).append("?)");
  bad_option(msg);
}

// `flag value: must be <what>`.
[[noreturn]] void out_of_range(const std::string& flag, const std::string& value,
                               const std::string& what) {
  std::string msg = flag;
  msg.append(" ").append(value).append(": must be ").append(what);
  bad_option(msg);
}

std::string str(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// `value` must be one of `choices` (listed in the message when it is not).
void check_choice(const std::string& flag, const std::string& value,
                  const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return;
  std::string list;
  for (size_t i = 0; i < choices.size(); ++i)
    list.append(i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ").append(choices[i]);
  out_of_range(flag, value, list);
}

// Whether this CPU does bf16 arithmetic in hardware (oneDNN's bf16 convolutions and GEMMs then
// run about 1.5x faster than float32 here; without it they are emulated and slower).
bool cpu_has_bf16() {
  std::FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[8192];
  bool found = false;
  while (!found && std::fgets(line, sizeof line, f)) {
    const std::string l = line;
    if (l.rfind("flags", 0) == 0)
      found =
          l.find(" avx512_bf16") != std::string::npos || l.find(" amx_bf16") != std::string::npos;
  }
  std::fclose(f);
  return found;
}

// A GPU asked for but absent is a runtime error, not a usage error.
void check_device(const Config& c) {
  if (c.device == "cpu") return;
  if (!weft::cuda::is_built())
    fail("--device " + c.device + " is not available: this build of weft has no CUDA backend");
  if (!weft::cuda::is_available())
    fail("--device " + c.device + ": no CUDA device is available on this machine");
}

// Refuses unknown choices and out-of-range numbers, each naming its flag and value.
void check_ranges(const Config& c) {
  check_choice("--model", c.model, {"cnn", "shufflenet", "mlp"});
  check_choice("--optimizer", c.optimizer, {"sgd", "adam", "adamw"});
  check_choice("--scheduler", c.scheduler, {"cosine", "step", "none"});
  check_choice("--lr-interval", c.lr_interval, {"step", "epoch"});
  check_choice("--batchnorm", c.batchnorm, {"sync", "local"});
  check_choice("--amp", c.amp, {"auto", "none", "bf16", "fp16"});
  check_choice("--strategy", c.strategy, {"ddp", "zero", "fsdp"});
  if (c.device != "cpu" && c.device != "cuda" && c.device.rfind("cuda:", 0) != 0)
    out_of_range("--device", c.device, "cpu, cuda or cuda:N");
  const auto positive = [](const char* f, auto v) {
    if (v < 1) out_of_range(f, std::to_string(v), "a positive integer");
  };
  positive("--epochs", c.epochs);
  positive("--batch-size", c.batch_size);
  positive("--threads", c.threads);
  if (c.workers < 0) out_of_range("--workers", std::to_string(c.workers), "0 or more");
  if (c.limit_train < 0)
    out_of_range("--limit-train", std::to_string(c.limit_train), "0 (all) or more");
  if (c.limit_test < 0)
    out_of_range("--limit-test", std::to_string(c.limit_test), "0 (all) or more");
  if (!(c.lr > 0) || !std::isfinite(c.lr)) out_of_range("--lr", str(c.lr), "a positive number");
  if (!(c.weight_decay >= 0) || !std::isfinite(c.weight_decay))
    out_of_range("--weight-decay", str(c.weight_decay), "0 or more");
  if (!(c.dropout >= 0 && c.dropout < 1))
    out_of_range("--dropout", str(c.dropout), "a probability in [0, 1)");
  if (!(c.val_split >= 0 && c.val_split <= 1e12) ||
      (c.val_split > 1 && c.val_split != std::floor(c.val_split)))
    out_of_range("--val-split", str(c.val_split),
                 "a number of samples (a whole number) or a fraction below 1");
  if (c.timeout && !(*c.timeout >= 0.001 && *c.timeout <= 1e7))
    out_of_range("--timeout", str(*c.timeout), "a positive number of seconds (0.001 to 1e7)");
  if (c.checkpoint_dir.empty()) bad_option("--checkpoint-dir is empty");
}

}  // namespace

[[noreturn]] void bad_option(const std::string& msg) {
  std::fprintf(stderr, "weft-train: %s\nweft-train: see weft-train --help for the options\n",
               msg.c_str());
  std::exit(2);
}

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "weft-train: error: %s\n", msg.c_str());
  std::exit(1);
}

std::string nearest_flag(const std::string& flag, const std::vector<std::string>& known) {
  // Levenshtein distance with adjacent transpositions counted as one edit.
  const auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i)
      for (size_t j = 1; j <= b.size(); ++j) {
        d[i][j] = std::min(
            {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[a.size()][b.size()];
  };
  // Close: at most a quarter of the name's letters (after "--") differ, at least one, at most 3.
  std::string best;
  size_t best_d = 0;
  for (const std::string& k : known) {
    const size_t d = distance(flag, k);
    const size_t letters = k.size() > 2 ? k.size() - 2 : k.size();
    const size_t limit = std::clamp<size_t>(letters / 4, 1, 3);
    if (d <= limit && (best.empty() || d < best_d)) best = k, best_d = d;
  }
  return best;
}

Config parse(int argc, char** argv) {
  Config c;
  bool lr_given = false;
  const std::vector<Flag>& all = flags();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    }
    const size_t eq = a.find('=');
    const bool inline_value = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (inline_value) v = a.substr(eq + 1), a = a.substr(0, eq);
    const auto f = std::find_if(all.begin(), all.end(), [&](const Flag& x) { return x.name == a; });
    if (f == all.end()) {
      if (a.rfind("-", 0) != 0)
        bad_option("unexpected argument '" + a + "' (options start with --)");
      unknown_flag(a);
    }
    if (!f->set) {
      if (inline_value) bad_option(a + " takes no value, got '" + a + "=" + v + "'");
      if (a == "--resume") c.resume = true;
      if (a == "--no-progress") c.progress = false;
      if (a == "--zero") c.strategy = "zero";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) bad_option(a + " needs a value");
      v = argv[++i];
    }
    f->set(c, a, v);
    if (a == "--lr") lr_given = true;
  }
  check_ranges(c);
  check_device(c);
  if (!lr_given && c.optimizer != "sgd") c.lr = 1e-3;
  if (c.amp == "auto") c.amp = c.device == "cpu" && cpu_has_bf16() ? "bf16" : "none";
  if (c.metrics.empty()) c.metrics = c.checkpoint_dir + "/metrics.csv";
  return c;
}

}  // namespace weft_train
