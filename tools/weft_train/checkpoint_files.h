// One rank's checkpoint directory (--checkpoint-dir, which may be node-local): the
// epoch-NNNN.safetensors files rank 0 writes after each epoch (atomically, with per-tensor
// checksums and the CSV rows so far), the newest of them that is usable (its checksums hold, it
// is of --model, every value is finite), stale temp files of killed writes removed, and the
// directory's writability checked before any training (Note [Resuming a job]).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "options.h"
#include "weft/weft.h"

namespace weft_train {

struct Checkpoint {
  int epoch = 0;  // epochs completed
  weft::nn::StateDict model;
  weft::optim::OptimizerState optim;
  std::map<std::string, std::string> scaler, meta;
  // The metrics rows of epochs 1..epoch; absent in files of an older weft-train.
  std::optional<std::vector<std::string>> metrics_rows;
};

std::string checkpoint_path(const std::string& dir, int epoch);

// Writes epoch `epoch`'s checkpoint into c.checkpoint_dir and removes all but the two newest
// (the previous one is the fallback if the newest is damaged).
void save_checkpoint(const Config& c, int epoch, const weft::nn::Module& model,
                     const weft::optim::Optimizer& opt, const weft::amp::GradScaler& scaler,
                     const std::vector<std::string>& metrics_rows);

// The checkpoint in a file's bytes, which must be epoch `epoch`'s; `name` stands for the file
// in messages. Throws weft::Error saying why it is unusable (corrupt, another model, NaN/Inf).
Checkpoint decode_checkpoint(std::vector<uint8_t> bytes, const std::string& name, const Config& c,
                             int epoch);

struct NewestCheckpoint {
  int epoch = 0;               // 0: none usable
  std::vector<uint8_t> bytes;  // its file's bytes
  int unusable = 0;            // checkpoint files skipped as unusable
};
// The newest checkpoint in c.checkpoint_dir that decodes. With `report`, each one skipped is
// reported on stderr with the reason.
NewestCheckpoint find_newest_checkpoint(const Config& c, bool report);

// Removes the temp files that writes killed midway left in `dir`; with `report`, says so.
void remove_stale_temp_files(const std::string& dir, bool report);
// Creates `dir` if needed and checks that files can be created in it: an error now rather
// than after the first epoch's work.
void prepare_checkpoint_dir(const std::string& dir);

}  // namespace weft_train
