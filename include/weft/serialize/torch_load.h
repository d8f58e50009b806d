// Loading PyTorch's own checkpoints, the .pt/.pth files torch.save writes: its zip format
// (PyTorch >= 1.6) and the legacy one before it. Guarantees: loading runs no code; a restricted
// unpickler admits only PyTorch's weights_only=True allow-list and refuses anything else naming
// the global (Note [Restricted unpickler]); every tensor is checked to lie inside its storage;
// tensors that shared a storage in the file share memory after loading.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "weft/device.h"
#include "weft/ordered_dict.h"
#include "weft/tensor.h"

namespace weft {

// One Python object of a loaded file: None, bool, int, float, str, bytes, a tensor, or a list,
// tuple or dict (OrderedDict or dict) of them. Dicts keep their insertion order.
struct TorchValue {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tensor, List, Tuple, Dict };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string str;  // Str, Bytes
  // Tensor. Its dtype in the file is `file_dtype` ("float64", "int8", "bool", ...): weft holds
  // float32/float16/bfloat16/int64 as they are, float64 as float32 and the other integer types
  // and bool as int64 (as weft::load does for safetensors files).
  Tensor tensor;
  std::string file_dtype;
  std::vector<TorchValue> items;                           // List, Tuple
  std::vector<std::pair<TorchValue, TorchValue>> entries;  // Dict
  bool ordered = false;                                    // Dict: an OrderedDict

  bool is(Kind k) const { return kind == k; }
  // Dict: the value under the str key, or nullptr (also for other kinds).
  const TorchValue* find(const std::string& key) const;
  // A dict of str -> tensor (a state_dict).
  bool is_tensor_dict() const;
  // "dict", "tensor", ... for messages.
  static const char* kind_name(Kind k);
};

// torch.load(path, map_location, weights_only=True). Without map_location, tensors go where they
// were saved from ("cpu", "cuda:N"), and a CUDA location without a CUDA device is an error that
// says to pass map_location, as in PyTorch. Errors name the file and what was wrong; a file that
// is not a torch.save checkpoint is named for what it looks like ("a gzip file", ...).
TorchValue torch_load(const std::string& path, std::optional<Device> map_location = std::nullopt);
TorchValue torch_load_from_bytes(const std::vector<uint8_t>& bytes,
                                 std::optional<Device> map_location = std::nullopt);

// The state_dict in a loaded object: under `key` when one is given; otherwise the object itself
// when it is a dict of str -> tensor, or the first such dict under "state_dict",
// "model_state_dict", "model" or "net" (as checkpoints {'model': ..., 'optimizer': ...,
// 'epoch': 3} hold it). Keys are kept as they are (nn::strip_module_prefix removes
// DataParallel's "module."). Throws, listing the keys there are, when there is none.
OrderedDict<Tensor> torch_state_dict(const TorchValue& obj, const std::string& key = "");

}  // namespace weft
