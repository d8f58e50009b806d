// A restricted unpickler for the pickles torch.save writes (Note [Restricted unpickler]): a pure
// function from bytes to an object graph of PyTorch's weights_only=True allow-list (dict,
// OrderedDict, list, tuple, int, float, str, bytes, bool, None, typed storages and tensors
// rebuilt over them). It runs no code, names any other global it meets in its error, and holds
// hard limits on nesting, objects, memo entries and string sizes; it never reads out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace weft::serialize::pickle {

struct Limits {
  size_t max_depth = 256;                // open MARKs, and nesting wherever the graph is walked
  size_t max_objects = size_t{1} << 22;  // objects created by one pickle
  size_t max_memo = size_t{1} << 22;     // memo entries
  size_t max_string = size_t{64} << 20;  // bytes of one str/bytes
};

enum class Kind : uint8_t {
  None,
  Bool,
  Int,
  Float,
  Str,
  Bytes,
  Tuple,
  List,
  Dict,
  Global,   // an allow-listed callable or class (see `global`)
  Storage,  // a typed storage from persistent_load: `str` is its key, `dtype` its element type
  Tensor,   // torch._utils._rebuild_tensor_v2 and kin, applied
};

// The allow-listed globals (torch_globals.cpp has the names).
enum class Global : uint8_t {
  OrderedDict,
  RebuildTensorV2,            // torch._utils._rebuild_tensor_v2
  RebuildTensor,              // torch._utils._rebuild_tensor
  RebuildParameter,           // torch._utils._rebuild_parameter
  RebuildParameterWithState,  // torch._utils._rebuild_parameter_with_state
  RebuildFromTypeV2,          // torch._tensor._rebuild_from_type_v2
  TensorClass,                // torch.Tensor / torch.nn.Parameter as _rebuild_from_type_v2's type
  StorageClass,               // torch.FloatStorage ...; `dtype` says which
};

// Element types of typed storages, as torch names them.
enum class DType : uint8_t {
  Float32,
  Float64,
  Float16,
  BFloat16,
  Int64,
  Int32,
  Int16,
  Int8,
  UInt8,
  Bool
};
const char* dtype_name(DType d);  // "float32", ...
size_t dtype_itemsize(DType d);

// One Python object. Containers point at objects of the same Unpickled (shared as in Python:
// one object reached twice is the same object, and the graph may even hold cycles).
struct Object {
  Kind kind = Kind::None;
  bool boolean = false;  // Bool; Dict: an OrderedDict rather than a dict; Tensor: requires_grad
  int64_t integer = 0;   // Int; Storage: numel; Tensor: storage offset
  double real = 0;       // Float
  std::string str;       // Str, Bytes; Storage: its key (the record's name)
  std::string location;  // Storage: where torch.save found it ("cpu", "cuda:0")
  std::vector<Object*> items;  // Tuple, List; Dict: key, value, key, value, ... in insertion order
  Global global = Global::OrderedDict;  // Global
  DType dtype = DType::Float32;         // Global StorageClass, Storage
  const Object* storage = nullptr;      // Tensor: its Storage
  std::vector<int64_t> sizes, strides;  // Tensor; in bounds of its storage
};

struct Unpickled {
  std::vector<std::unique_ptr<Object>> objects;  // owns every object below
  const Object* root = nullptr;
  size_t end = 0;                       // offset just past the STOP opcode
  std::vector<const Object*> storages;  // distinct storages, in the order first met
};

// Unpickles the one pickle at the start of data[0, size). Throws weft::Error, saying what was
// wrong and at which offset, for malformed input, a global outside the allow-list ("refusing
// global 'os.system'"), a tensor outside its storage, or a limit exceeded.
Unpickled unpickle(const uint8_t* data, size_t size, const Limits& limits = {});

const char* kind_name(Kind k);  // with its article, for messages: "a dict", "an int", "None"

}  // namespace weft::serialize::pickle
