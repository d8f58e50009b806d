#include "checkpoint_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "weft/distributed/distributed.h"
#include "weft/read_file.h"

namespace weft_train {

using namespace weft;
namespace fs = std::filesystem;

namespace {

constexpr const char* kProbePrefix = ".weft-write-probe.";

std::string join_rows(const std::vector<std::string>& rows) {
  std::string out;
  for (const auto& r : rows) out += r + "\n";
  return out;
}

std::vector<std::string> split_rows(const std::string& text) {
  std::vector<std::string> rows;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    rows.push_back(text.substr(start, nl - start));
  return rows;
}

// A NaN or Inf anywhere in a floating tensor makes the checkpoint unusable: training from it
// would only spread the NaN (it was saved after the run had diverged).
void check_finite(const std::string& key, const Tensor& t) {
  if (!is_floating_point(t.dtype())) return;
  const std::vector<float> v = t.to(kFloat32).to_vector_float();
  const auto bad = std::find_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); });
  WEFT_CHECK(bad == v.end(), "tensor '", key, "' holds NaN or Inf (element ", bad - v.begin(),
             " is ", *bad, "): training had diverged when it was saved");
}

// "epoch-0003.safetensors" -> 3; anything else -> 0.
int epoch_of_name(const std::string& n) {
  if (n.size() != 22 || n.rfind("epoch-", 0) != 0 || n.substr(10) != ".safetensors") return 0;
  if (!std::all_of(n.begin() + 6, n.begin() + 10, [](char ch) { return ch >= '0' && ch <= '9'; }))
    return 0;
  return std::atoi(n.substr(6, 4).c_str());
}

}  // namespace

std::string checkpoint_path(const std::string& dir, int epoch) {
  char name[64];
  std::snprintf(name, sizeof name, "epoch-%04d.safetensors", epoch);
  return dir + "/" + name;
}

void save_checkpoint(const Config& c, int epoch, const nn::Module& model,
                     const optim::Optimizer& opt, const amp::GradScaler& scaler,
                     const std::vector<std::string>& metrics_rows) {
  TensorDict all;
  for (auto& [k, t] : model.state_dict()) all.insert("model." + k, t);
  auto st = opt.state_dict();
  for (auto& [k, t] : st.tensors) all.insert("optim." + k, t);
  std::map<std::string, std::string> meta;
  for (auto& [k, v] : st.scalars) meta["optim." + k] = v;
  for (auto& [k, v] : scaler.state_dict()) meta["scaler." + k] = v;
  meta["epoch"] = std::to_string(epoch);
  meta["model"] = c.model;
  meta["seed"] = std::to_string(c.seed);
  meta["world_size"] = std::to_string(dist::get_world_size());
  meta["rng"] = default_generator().get_state();
  meta["metrics"] = metrics_rows.empty() ? std::string() : metrics_rows.back();
  // Every row so far: a rank that resumes from this file rebuilds the CSV from it, even where
  // its own metrics file is missing (node-local directories).
  meta["metrics_history"] = join_rows(metrics_rows);
  save(all, checkpoint_path(c.checkpoint_dir, epoch), meta);  // atomic, with checksums
  for (int e = epoch - 2; e >= 1; --e) {
    std::error_code ec;
    if (!fs::remove(checkpoint_path(c.checkpoint_dir, e), ec)) break;
  }
}

Checkpoint decode_checkpoint(std::vector<uint8_t> bytes, const std::string& name, const Config& c,
                             int epoch) {
  Checkpoint ck;
  TensorDict all = load_from_bytes(std::move(bytes), &ck.meta, name);  // verifies checksums
  for (auto& [k, t] : all) {
    check_finite(k, t);
    if (k.rfind("model.", 0) == 0)
      ck.model.insert(k.substr(6), t);
    else if (k.rfind("optim.", 0) == 0)
      ck.optim.tensors.insert(k.substr(6), t);
  }
  for (auto& [k, v] : ck.meta) {
    if (k.rfind("optim.", 0) == 0) ck.optim.scalars[k.substr(6)] = v;
    if (k.rfind("scaler.", 0) == 0) ck.scaler[k.substr(7)] = v;
  }
  const auto e = ck.meta.find("epoch"), m = ck.meta.find("model");
  WEFT_CHECK(e != ck.meta.end() && m != ck.meta.end(), "'", name,
             "' has no 'epoch' or 'model' in its metadata: not a weft-train checkpoint");
  ck.epoch = std::atoi(e->second.c_str());
  WEFT_CHECK(ck.epoch == epoch, "'", name, "' says it is of epoch '", e->second,
             "' but should be epoch ", epoch, "'s");
  WEFT_CHECK(m->second == c.model, "checkpoint is of model '", m->second, "' but --model is '",
             c.model, "'");
  if (c.model == "cnn") {  // the last Linear is layer 12 after a Dropout, else layer 11
    const bool had_dropout = ck.model.contains("12.weight");
    WEFT_CHECK(had_dropout == (c.dropout > 0), "checkpoint is of a cnn ",
               had_dropout ? "with" : "without", " a Dropout layer but --dropout is ", c.dropout,
               had_dropout ? " (resume with --dropout 0.25, the older default)"
                           : " (resume with --dropout 0)");
  }
  if (auto h = ck.meta.find("metrics_history"); h != ck.meta.end())
    ck.metrics_rows = split_rows(h->second);
  return ck;
}

NewestCheckpoint find_newest_checkpoint(const Config& c, bool report) {
  std::vector<int> epochs;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(c.checkpoint_dir, ec))
    if (int n = epoch_of_name(e.path().filename().string()); n > 0) epochs.push_back(n);
  WEFT_CHECK(!ec || ec == std::errc::no_such_file_or_directory,
             "cannot list the checkpoint directory '", c.checkpoint_dir, "': ", ec.message());
  std::sort(epochs.rbegin(), epochs.rend());
  NewestCheckpoint out;
  for (size_t i = 0; i < epochs.size(); ++i) {
    const std::string path = checkpoint_path(c.checkpoint_dir, epochs[i]);
    try {
      std::vector<uint8_t> bytes = read_file(path, "checkpoint");
      decode_checkpoint(bytes, path, c, epochs[i]);
      out.epoch = epochs[i];
      out.bytes = std::move(bytes);
      return out;
    } catch (const std::exception& ex) {
      ++out.unusable;
      if (report)
        std::fprintf(stderr, "weft-train: checkpoint %s is unusable (%s); %s\n", path.c_str(),
                     ex.what(),
                     i + 1 < epochs.size() ? "trying the previous one" : "it was the oldest");
    }
  }
  return out;
}

void remove_stale_temp_files(const std::string& dir, bool report) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    // save()'s temp files are "<file>.tmp.<pid>.<n>"; a live one exists only while rank 0
    // writes, and no rank writes before every rank has got this far.
    const bool ours = (n.rfind("epoch-", 0) == 0 && n.find(".safetensors.tmp.") == 10) ||
                      n.rfind(kProbePrefix, 0) == 0;
    std::error_code rm;
    if (ours && fs::remove(e.path(), rm) && report)
      std::printf("removed %s, left by a checkpoint write that was interrupted\n",
                  e.path().string().c_str());
  }
}

void prepare_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  WEFT_CHECK(!ec, "cannot create the checkpoint directory '", dir, "': ", ec.message(),
             " (--checkpoint-dir)");
  const std::string probe = dir + "/" + kProbePrefix + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  const int err = errno;
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
  }
  WEFT_CHECK(fd >= 0, "the checkpoint directory '", dir,
             "' is not writable (creating a file in it failed: ", std::strerror(err),
             "); stopping before the first epoch, whose checkpoint could not be saved "
             "(--checkpoint-dir)");
}

}  // namespace weft_train
