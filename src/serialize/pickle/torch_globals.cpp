// The allow-list of the restricted unpickler and what its globals do (Note [Restricted unpickler]).
#include "serialize/pickle/torch_globals.h"

#include <limits>

#include "weft/error.h"

namespace weft::serialize::pickle {
namespace {

constexpr size_t kMaxDims = 64;  // as PyTorch

struct StorageType {
  const char* name;  // torch.<name>
  DType dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", DType::Float32}, {"DoubleStorage", DType::Float64},
    {"HalfStorage", DType::Float16},  {"BFloat16Storage", DType::BFloat16},
    {"LongStorage", DType::Int64},    {"IntStorage", DType::Int32},
    {"ShortStorage", DType::Int16},   {"CharStorage", DType::Int8},
    {"ByteStorage", DType::UInt8},    {"BoolStorage", DType::Bool},
};

struct Callable {
  const char* module;
  const char* name;
  Global global;
};
constexpr Callable kCallables[] = {
    {"collections", "OrderedDict", Global::OrderedDict},
    {"torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2},
    {"torch._utils", "_rebuild_tensor", Global::RebuildTensor},
    {"torch._utils", "_rebuild_parameter", Global::RebuildParameter},
    {"torch._utils", "_rebuild_parameter_with_state", Global::RebuildParameterWithState},
    {"torch._tensor", "_rebuild_from_type_v2", Global::RebuildFromTypeV2},
    {"torch._tensor", "Tensor", Global::TensorClass},
    {"torch", "Tensor", Global::TensorClass},
    {"torch.nn.parameter", "Parameter", Global::TensorClass},
};

const char* global_name(Global g) {
  for (const auto& c : kCallables)
    if (c.global == g) return c.name;
  return "a storage class";
}

const Object& arg(const Object& args, size_t i, Kind kind, const char* fn, const char* what) {
  const Object& a = *args.items[i];
  WEFT_CHECK(a.kind == kind, fn, ": argument ", i + 1, " (", what, ") is ", kind_name(a.kind),
             ", expected ", kind_name(kind));
  return a;
}

void check_arity(const Object& args, size_t lo, size_t hi, const char* fn) {
  WEFT_CHECK(args.items.size() >= lo && args.items.size() <= hi, fn, " takes ", lo,
             lo == hi ? "" : " to " + std::to_string(hi), " arguments, the pickle gives ",
             args.items.size());
}

std::vector<int64_t> int_tuple(const Object& t, const char* fn, const char* what) {
  WEFT_CHECK(t.items.size() <= kMaxDims, fn, ": ", what, " has ", t.items.size(),
             " dimensions, more than ", kMaxDims);
  std::vector<int64_t> out;
  for (const Object* d : t.items) {
    WEFT_CHECK(d->kind == Kind::Int, fn, ": ", what, " holds ", kind_name(d->kind),
               ", expected ints");
    WEFT_CHECK(d->integer >= 0, fn, ": ", what, " holds ", d->integer, ", which is negative");
    out.push_back(d->integer);
  }
  return out;
}

// A tensor over `storage`: every element it reaches must lie inside the storage.
Object* make_tensor(Arena& arena, const Object& storage, int64_t offset, const Object& size,
                    const Object& stride, const char* fn) {
  Object* t = arena.make(Kind::Tensor);
  t->storage = &storage;
  t->sizes = int_tuple(size, fn, "size");
  t->strides = int_tuple(stride, fn, "stride");
  WEFT_CHECK(t->sizes.size() == t->strides.size(), fn, ": size has ", t->sizes.size(),
             " dimensions but stride has ", t->strides.size());
  WEFT_CHECK(offset >= 0, fn, ": storage offset ", offset, " is negative");
  t->integer = offset;
  int64_t numel = 1, last = offset;
  for (size_t d = 0; d < t->sizes.size(); ++d) {
    int64_t reach = 0;
    const bool ok =
        !__builtin_mul_overflow(numel, t->sizes[d], &numel) &&
        !__builtin_mul_overflow(t->sizes[d] == 0 ? 0 : t->sizes[d] - 1, t->strides[d], &reach) &&
        !__builtin_add_overflow(last, reach, &last);
    WEFT_CHECK(ok, fn, ": size/stride of the tensor over storage '", storage.str, "' overflow");
  }
  if (numel == 0) {
    WEFT_CHECK(offset <= storage.integer, fn, ": storage offset ", offset,
               " is past the end of storage '", storage.str, "' (", storage.integer, " elements)");
  } else {
    WEFT_CHECK(last < storage.integer, fn, ": the tensor reaches element ", last,
               ", outside storage '", storage.str, "' of ", storage.integer, " elements");
  }
  return t;
}

Object* rebuild_tensor(Arena& arena, const Object& args, bool v2) {
  const char* fn = v2 ? "torch._utils._rebuild_tensor_v2" : "torch._utils._rebuild_tensor";
  if (v2)
    check_arity(args, 6, 7, fn);  // (storage, offset, size, stride, requires_grad, hooks[, meta])
  else
    check_arity(args, 4, 4, fn);
  const Object& storage = arg(args, 0, Kind::Storage, fn, "storage");
  const int64_t offset = arg(args, 1, Kind::Int, fn, "storage_offset").integer;
  const Object& size = arg(args, 2, Kind::Tuple, fn, "size");
  const Object& stride = arg(args, 3, Kind::Tuple, fn, "stride");
  Object* t = make_tensor(arena, storage, offset, size, stride, fn);
  if (v2) {
    t->boolean = arg(args, 4, Kind::Bool, fn, "requires_grad").boolean;
    arg(args, 5, Kind::Dict, fn, "backward_hooks");
    if (args.items.size() == 7)
      WEFT_CHECK(args.items[6]->kind == Kind::Dict || args.items[6]->kind == Kind::None, fn,
                 ": argument 7 (metadata) is ", kind_name(args.items[6]->kind));
  }
  return t;
}

Object* rebuild_parameter(Arena& arena, const Object& args, bool with_state) {
  const char* fn =
      with_state ? "torch._utils._rebuild_parameter_with_state" : "torch._utils._rebuild_parameter";
  check_arity(args, with_state ? 4 : 3, with_state ? 4 : 3, fn);
  const Object& data = arg(args, 0, Kind::Tensor, fn, "data");
  Object* t = arena.make(Kind::Tensor);
  *t = data;  // a new Parameter object over the same storage
  t->boolean = arg(args, 1, Kind::Bool, fn, "requires_grad").boolean;
  arg(args, 2, Kind::Dict, fn, "backward_hooks");
  return t;
}

}  // namespace

Object* Arena::make(Kind kind) {
  WEFT_CHECK(out_.objects.size() < limits_.max_objects, "pickle: more than ", limits_.max_objects,
             " objects");
  out_.objects.push_back(std::make_unique<Object>());
  out_.objects.back()->kind = kind;
  return out_.objects.back().get();
}

Object* resolve_global(Arena& arena, const std::string& module, const std::string& name) {
  for (const auto& c : kCallables) {
    if (module == c.module && name == c.name) {
      Object* g = arena.make(Kind::Global);
      g->global = c.global;
      return g;
    }
  }
  if (module == "torch") {
    for (const auto& s : kStorageTypes) {
      if (name == s.name) {
        Object* g = arena.make(Kind::Global);
        g->global = Global::StorageClass;
        g->dtype = s.dtype;
        return g;
      }
    }
    WEFT_CHECK(name.size() < 7 || name.compare(name.size() - 7, 7, "Storage") != 0,
               "pickle: storage type 'torch.", name,
               "' is not supported (weft loads float32/64, float16, bfloat16, int64/32/16/8, "
               "uint8 and bool storages)");
  }
  WEFT_ERROR("pickle: refusing global '", module, ".", name,
             "': only tensors, storages and OrderedDict/dict/list/tuple/int/float/str/bool/None "
             "may be loaded (PyTorch's weights_only=True allow-list); loading runs no code");
}

Object* call_global(Arena& arena, const Object& callable, const Object& args) {
  WEFT_CHECK(callable.kind == Kind::Global, "pickle: cannot call ", kind_name(callable.kind));
  WEFT_CHECK(args.kind == Kind::Tuple, "pickle: the arguments of ", global_name(callable.global),
             " are ", kind_name(args.kind), ", not a tuple");
  switch (callable.global) {
    case Global::OrderedDict: {
      WEFT_CHECK(args.items.empty(), "pickle: collections.OrderedDict is given ", args.items.size(),
                 " arguments; weft accepts only OrderedDict()");
      Object* d = arena.make(Kind::Dict);
      d->boolean = true;
      return d;
    }
    case Global::RebuildTensorV2:
    case Global::RebuildTensor:
      return rebuild_tensor(arena, args, callable.global == Global::RebuildTensorV2);
    case Global::RebuildParameter:
    case Global::RebuildParameterWithState:
      return rebuild_parameter(arena, args, callable.global == Global::RebuildParameterWithState);
    case Global::RebuildFromTypeV2: {
      const char* fn = "torch._tensor._rebuild_from_type_v2";
      check_arity(args, 4, 4, fn);  // (func, new_type, args, state)
      const Object& func = arg(args, 0, Kind::Global, fn, "func");
      const Object& type = arg(args, 1, Kind::Global, fn, "new_type");
      WEFT_CHECK(type.global == Global::TensorClass, fn, ": new_type is ", global_name(type.global),
                 ", not torch.Tensor or torch.nn.Parameter");
      WEFT_CHECK(func.global != Global::RebuildFromTypeV2 && func.global != Global::OrderedDict, fn,
                 ": func is ", global_name(func.global), ", not a tensor rebuild function");
      Object* t = call_global(arena, func, arg(args, 2, Kind::Tuple, fn, "args"));
      WEFT_CHECK(t->kind == Kind::Tensor, fn, ": func did not give a tensor");
      return t;
    }
    case Global::TensorClass:
    case Global::StorageClass:
      break;
  }
  WEFT_ERROR("pickle: ", global_name(callable.global), " cannot be called while loading");
}

void build(const Object& target, const Object& state) {
  WEFT_CHECK(target.kind == Kind::Dict || target.kind == Kind::Tensor,
             "pickle: BUILD (setting an object's state) on ", kind_name(target.kind),
             " is not allowed");
  WEFT_CHECK(state.kind == Kind::Dict || state.kind == Kind::Tuple || state.kind == Kind::None,
             "pickle: BUILD with ", kind_name(state.kind), " as the state is not allowed");
}

Object* persistent_load(Arena& arena, const Object& pid) {
  WEFT_CHECK(pid.kind == Kind::Tuple && (pid.items.size() == 5 || pid.items.size() == 6) &&
                 pid.items[0]->kind == Kind::Str && pid.items[0]->str == "storage",
             "pickle: persistent id is not ('storage', type, key, location, numel)");
  const char* fn = "persistent_load";
  const Object& type = arg(pid, 1, Kind::Global, fn, "storage type");
  WEFT_CHECK(type.global == Global::StorageClass, "pickle: persistent id names ",
             global_name(type.global), " as its storage type");
  const std::string& key = arg(pid, 2, Kind::Str, fn, "key").str;
  WEFT_CHECK(!key.empty() && key.size() <= 64 &&
                 key.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyz"
                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-") == std::string::npos &&
                 key != "." && key != "..",
             "pickle: storage key '", key.substr(0, 64), "' is not a plain name");
  const std::string& location = arg(pid, 3, Kind::Str, fn, "location").str;
  const int64_t numel = arg(pid, 4, Kind::Int, fn, "numel").integer;
  const int64_t max_numel =
      std::numeric_limits<int64_t>::max() / static_cast<int64_t>(dtype_itemsize(type.dtype));
  WEFT_CHECK(numel >= 0 && numel <= max_numel, "pickle: storage '", key, "' has ", numel,
             " elements");
  if (pid.items.size() == 6)
    WEFT_CHECK(pid.items[5]->kind == Kind::None, "pickle: storage '", key,
               "' is a view of another storage (view_metadata), which weft does not load");

  auto [it, fresh] = arena.storages_by_key().emplace(key, nullptr);
  if (!fresh) {
    const Object& s = *it->second;
    WEFT_CHECK(s.dtype == type.dtype && s.integer == numel, "pickle: storage '", key,
               "' is named twice with different types or sizes (", dtype_name(s.dtype), "[",
               s.integer, "] and ", dtype_name(type.dtype), "[", numel, "])");
    return it->second;
  }
  Object* s = arena.make(Kind::Storage);
  s->str = key;
  s->location = location;
  s->integer = numel;
  s->dtype = type.dtype;
  it->second = s;
  arena.result().storages.push_back(s);
  return s;
}

}  // namespace weft::serialize::pickle
