// torch.distributed's debug level (TORCH_DISTRIBUTED_DEBUG) as WEFT_DISTRIBUTED_DEBUG: OFF (the
// default), INFO (DistributedDataParallel logs its bucket layout and names unused parameters) or
// DETAIL (INFO, and every collective of a group made by init_process_group/new_group first
// checks across ranks that op, dtype and shape agree). The variable is read once, by the first
// call; a value other than OFF, INFO or DETAIL (any case) is a DistError naming it.
#pragma once

#include <string>

namespace weft::dist {

enum class DebugLevel { OFF, INFO, DETAIL };

DebugLevel get_debug_level();
// Overrides WEFT_DISTRIBUTED_DEBUG for this process (it is then never read). Groups check
// fingerprints when they are created under DETAIL, so set it before init_process_group.
void set_debug_level(DebugLevel level);
std::string to_string(DebugLevel level);  // "OFF", "INFO", "DETAIL"

}  // namespace weft::dist
