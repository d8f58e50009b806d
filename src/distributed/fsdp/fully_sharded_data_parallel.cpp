#include "weft/distributed/fsdp/fully_sharded_data_parallel.h"

namespace weft::dist::fsdp {

WrapPolicy wrap_children() {
  return [](const std::string& name, const nn::Module& m) {
    return name.find('.') == std::string::npos && !m.parameters().empty();
  };
}

namespace {
// Post-order: a module's descendants become units before it does.
void shard_below(const std::shared_ptr<nn::Module>& m, const std::string& prefix,
                 const WrapPolicy& policy, const FSDPOptions& options) {
  for (const auto& [n, c] : m->named_children()) {
    const std::string name = prefix.empty() ? n : prefix + "." + n;
    shard_below(c, name, policy, options);
    if (policy(name, *c)) fully_shard(c, options);
  }
}
}  // namespace

FullyShardedDataParallel::FullyShardedDataParallel(std::shared_ptr<nn::Module> module,
                                                   FSDPOptions options, WrapPolicy policy)
    : module_(std::move(module)), options_(std::move(options)) {
  WEFT_CHECK(module_, "FullyShardedDataParallel: null module");
  if (policy) shard_below(module_, "", policy, options_);
  root_ = fully_shard(module_, options_);
}

}  // namespace weft::dist::fsdp
