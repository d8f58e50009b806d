// SyncBatchNorm over a process group: the nn::BatchNormSync that nn::SyncBatchNorm and
// nn::convert_sync_batchnorm take, combining statistics with one all-gather per forward and one
// all-reduce per backward on `pg` (null: the default group, looked up at each forward; world
// size 1 when none is initialised).
#pragma once

#include <memory>

#include "weft/distributed/process_group.h"
#include "weft/nn/batchnorm.h"

namespace weft::dist {

std::shared_ptr<nn::BatchNormSync> batchnorm_sync(std::shared_ptr<ProcessGroup> pg = nullptr);

}  // namespace weft::dist
