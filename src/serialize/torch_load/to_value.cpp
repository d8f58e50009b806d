#include "serialize/torch_load/to_value.h"

#include <bit>
#include <cstring>

#include "weft/cuda.h"
#include "weft/error.h"
#include "weft/ops.h"

namespace weft::serialize {
namespace {

using pickle::Kind;
using PDType = pickle::DType;

// The dtype weft holds a storage of the file's dtype in (see TorchValue::file_dtype).
DType weft_dtype(PDType d) {
  switch (d) {
    case PDType::Float32:
    case PDType::Float64:
      return DType::Float32;
    case PDType::Float16:
      return DType::Float16;
    case PDType::BFloat16:
      return DType::BFloat16;
    default:
      return DType::Int64;
  }
}

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Widens n little-endian elements of dtype d into `out`, of the dtype weft holds them in.
void widen(PDType d, const uint8_t* src, int64_t n, Tensor& out) {
  if (d == PDType::Float64) {
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(read_le<double>(src + 8 * i));
    return;
  }
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    switch (d) {
      case PDType::Int32:
        o[i] = read_le<int32_t>(src + 4 * i);
        break;
      case PDType::Int16:
        o[i] = read_le<int16_t>(src + 2 * i);
        break;
      case PDType::Int8:
        o[i] = static_cast<int8_t>(src[i]);
        break;
      case PDType::UInt8:
        o[i] = src[i];
        break;
      default:  // Bool
        o[i] = src[i] != 0;
        break;
    }
  }
}

// The N of "cuda" (0) or "cuda:N"; -1 for any other location.
int cuda_index(const std::string& loc) {
  if (loc == "cuda") return 0;
  if (loc.rfind("cuda:", 0) != 0 || loc.size() < 6 || loc.size() > 8 ||
      loc.find_first_not_of("0123456789", 5) != std::string::npos)
    return -1;
  return std::stoi(loc.substr(5));
}

}  // namespace

Device ValueBuilder::device_for(const pickle::Object& s) const {
  if (map_location_) return *map_location_;
  const std::string& loc = s.location;
  if (loc == "cpu") return Device::CPU();
  const int index = cuda_index(loc);
  WEFT_CHECK(index >= 0, "storage '", s.str, "' was saved on '", loc,
             "', a device weft does not have; pass map_location (e.g. Device::CPU())");
  WEFT_CHECK(cuda::is_available(), "storage '", s.str, "' was saved on '", loc,
             "' but CUDA is not available; on a CPU-only machine pass map_location = "
             "Device::CPU(), as torch.load(..., map_location='cpu')");
  WEFT_CHECK(index < cuda::device_count(), "storage '", s.str, "' was saved on '", loc,
             "' but this machine has ", cuda::device_count(), " CUDA devices; pass map_location");
  return Device::CUDA(index);
}

Tensor ValueBuilder::storage_tensor(const pickle::Object& s) {
  auto it = storages_.find(&s);
  if (it != storages_.end()) return it->second;
  WEFT_CHECK(std::endian::native == std::endian::little,
             "loading PyTorch checkpoints needs a little-endian machine");
  const Device device = device_for(s);
  const int64_t n = s.integer;
  const size_t nbytes = static_cast<size_t>(n) * pickle::dtype_itemsize(s.dtype);
  const DType dt = weft_dtype(s.dtype);
  Tensor t = make_empty({n}, dt, Device::CPU());
  if (itemsize(dt) == pickle::dtype_itemsize(s.dtype)) {
    read_(s, static_cast<uint8_t*>(t.raw_data()), nbytes);  // the same layout: read in place
  } else {
    std::vector<uint8_t> raw(nbytes);
    read_(s, raw.data(), nbytes);
    widen(s.dtype, raw.data(), n, t);
  }
  if (device != Device::CPU()) t = t.to(device);
  storages_.emplace(&s, t);
  return t;
}

TorchValue ValueBuilder::value(const pickle::Object& o, size_t depth) {
  WEFT_CHECK(depth <= limits_.max_depth, "the pickle nests deeper than ", limits_.max_depth,
             " levels (or holds a recursive structure)");
  WEFT_CHECK(++values_ <= limits_.max_objects, "the pickle's shared objects unfold into more than ",
             limits_.max_objects, " values");
  TorchValue v;
  switch (o.kind) {
    case Kind::None:
      break;
    case Kind::Bool:
      v.kind = TorchValue::Kind::Bool;
      v.boolean = o.boolean;
      break;
    case Kind::Int:
      v.kind = TorchValue::Kind::Int;
      v.integer = o.integer;
      break;
    case Kind::Float:
      v.kind = TorchValue::Kind::Float;
      v.real = o.real;
      break;
    case Kind::Str:
    case Kind::Bytes:
      v.kind = o.kind == Kind::Str ? TorchValue::Kind::Str : TorchValue::Kind::Bytes;
      v.str = o.str;
      break;
    case Kind::Tuple:
    case Kind::List:
      v.kind = o.kind == Kind::Tuple ? TorchValue::Kind::Tuple : TorchValue::Kind::List;
      for (const pickle::Object* i : o.items) v.items.push_back(value(*i, depth + 1));
      break;
    case Kind::Dict:
      v.kind = TorchValue::Kind::Dict;
      v.ordered = o.boolean;
      for (size_t i = 0; i + 1 < o.items.size(); i += 2)
        v.entries.emplace_back(value(*o.items[i], depth + 1), value(*o.items[i + 1], depth + 1));
      break;
    case Kind::Storage:  // a bare storage: all of it, as a 1-d tensor
      v.kind = TorchValue::Kind::Tensor;
      v.tensor = storage_tensor(o);
      v.file_dtype = pickle::dtype_name(o.dtype);
      break;
    case Kind::Tensor: {
      v.kind = TorchValue::Kind::Tensor;
      const Tensor base = storage_tensor(*o.storage);
      v.tensor = make_view(base, o.sizes, o.strides, o.integer);
      if (o.boolean && is_floating_point(v.tensor.dtype())) v.tensor.requires_grad_(true);
      v.file_dtype = pickle::dtype_name(o.storage->dtype);
      break;
    }
    case Kind::Global:
      WEFT_ERROR("the pickle holds a class or function as a value, which weft cannot load");
  }
  return v;
}

}  // namespace weft::serialize
