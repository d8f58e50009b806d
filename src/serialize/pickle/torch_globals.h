// The torch half of the restricted unpickler (Note [Restricted unpickler]): the allow-list of
// globals, what REDUCE/NEWOBJ/BUILD may do with them, and persistent_load for typed storages.
// Everything here validates its arguments (types, arity, bounds) and throws weft::Error otherwise.
#pragma once

#include <map>
#include <string>

#include "serialize/pickle/unpickler.h"

namespace weft::serialize::pickle {

// Creates the objects of one Unpickled, holding the object limit.
class Arena {
 public:
  Arena(Unpickled& out, const Limits& limits) : out_(out), limits_(limits) {}
  Object* make(Kind kind);
  const Limits& limits() const { return limits_; }
  Unpickled& result() { return out_; }
  std::map<std::string, Object*>& storages_by_key() { return by_key_; }

 private:
  Unpickled& out_;
  const Limits& limits_;
  std::map<std::string, Object*> by_key_;
};

// GLOBAL/STACK_GLOBAL: the allow-listed object named module.name, or "refusing global '...'".
Object* resolve_global(Arena& arena, const std::string& module, const std::string& name);
// REDUCE (and NEWOBJ, whose class arguments come the same way): callable(*args).
Object* call_global(Arena& arena, const Object& callable, const Object& args);
// BUILD: the state of an OrderedDict (its _metadata) or a tensor is accepted and dropped.
void build(const Object& target, const Object& state);
// BINPERSID: ('storage', <storage class>, key, location, numel[, view_metadata None]).
Object* persistent_load(Arena& arena, const Object& pid);

}  // namespace weft::serialize::pickle
