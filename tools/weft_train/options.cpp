#include "options.h"

#include <cstdio>
#include <cstdlib>

#include "weft/cuda.h"

namespace weft_train {
namespace {

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
    "  --strategy ddp|zero          ddp (default): every rank holds the whole optimizer state;\n"
    "                               zero: DDP with ZeroRedundancyOptimizer, each rank holding the\n"
    "                               state of its share of the parameters, checkpoints sharded\n"
    "                               (DIR/epoch-N.dcp, one file per rank; DIR must be shared)\n"
    "  --zero                       short for --strategy zero\n"
    "  --scheduler cosine|step|none (default cosine)\n"
    "  --seed S                     (default 0)\n"
    "  --threads T                  intra-op threads per process (default 1)\n"
    "  --workers W                  data loader threads (default 1)\n"
    "  --device cpu|cuda|cuda:N     (default cpu; cuda: each process takes GPU LOCAL_RANK %\n"
    "                               #GPUs, NCCL between processes; needs a CUDA build)\n"
    "  --amp none|bf16|fp16         mixed precision: the forward under autocast in that dtype\n"
    "                               (fp16 adds loss scaling, a GradScaler; default none)\n"
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
    "                               naming it (default WEFT_COLLECTIVE_TIMEOUT, else 30 min)\n";

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
  else if (a == "--strategy")
    c.strategy = v;
  else if (a == "--init-method")
    c.init_method = v;
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
  if (c.strategy != "ddp" && c.strategy != "zero")
    bad_option("unknown --strategy " + c.strategy + " (ddp or zero)");
  if (c.amp != "none" && c.amp != "bf16" && c.amp != "fp16")
    bad_option("unknown --amp " + c.amp + " (none, bf16 or fp16)");
  if (c.device != "cpu") {
    if (c.device != "cuda" && c.device.rfind("cuda:", 0) != 0)
      bad_option("unknown --device " + c.device + " (cpu, cuda or cuda:N)");
    if (!weft::cuda::is_built())
      bad_option("--device " + c.device +
                 " is not available: this build of weft has no CUDA backend");
    if (!weft::cuda::is_available())
      bad_option("--device " + c.device + ": no CUDA device is available on this machine");
  }
  if (c.epochs < 1 || c.batch_size < 1 || c.threads < 1 || c.workers < 0 || c.lr <= 0 ||
      c.limit_train < 0 || c.limit_test < 0 || c.weight_decay < 0)
    bad_option(
        "epochs, batch size, threads and lr must be positive; limits and workers non-negative");
  if (c.checkpoint_dir.empty()) bad_option("--checkpoint-dir is empty");
  if (!lr_given && c.optimizer != "sgd") c.lr = 1e-3;
  if (c.timeout && !(*c.timeout >= 0.001 && *c.timeout <= 1e7))
    bad_option("--timeout must be a positive number of seconds (0.001 to 1e7)");
  if (c.metrics.empty()) c.metrics = c.checkpoint_dir + "/metrics.csv";
}

}  // namespace

[[noreturn]] void bad_option(const std::string& msg) {
  std::fprintf(stderr, "weft-train: %s\n\n%s", msg.c_str(), kUsage);
  std::exit(2);
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
    if (a == "--zero") {
      c.strategy = "zero";
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

}  // namespace weft_train
