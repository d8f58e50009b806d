// --resume across ranks (Note [Resuming a job] in docs/ARCHITECTURE.md): every rank resumes
// from the newest usable checkpoint that any rank's --checkpoint-dir holds, ranks lacking it
// receive the file by broadcast and verify it again; or the job stops with an error naming the
// rank and directory (checkpoints present but none usable, or two different files of one epoch).
#pragma once

#include <optional>

#include "checkpoint_files.h"
#include "options.h"
#include "weft/weft.h"

namespace weft_train {

// The checkpoint every rank agreed on, or nullopt where no rank has any (a fresh start). A
// collective: every rank calls it. `report`: print this rank's skipped files; `lead`: print the
// decision.
std::optional<Checkpoint> agree_on_checkpoint(const Config& c, weft::Device dev, bool report,
                                              bool lead);

// Loads `ck` into the model, optimizer, scaler and scheduler (set to the count it had after the
// checkpoint's epochs, steps_per_epoch steps each); returns the epochs it covers.
int apply_checkpoint(const Checkpoint& ck, const Config& c, weft::nn::Module& model,
                     weft::optim::Optimizer& opt, weft::amp::GradScaler& scaler,
                     weft::optim::LRScheduler* sched, int64_t steps_per_epoch);

}  // namespace weft_train
