// Glue between Tensor and the byte-level safetensors format, with the per-tensor checksums.
#include <cstring>

#include "serialize/torch_load/formats.h"
#include "weft/autograd.h"
#include "weft/ops.h"
#include "weft/serialize.h"
#include "weft/serialize/safetensors_format.h"

namespace weft {

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::Float32:
      return "F32";
    case DType::Int64:
      return "I64";
    case DType::BFloat16:
      return "BF16";
    case DType::Float16:
      return "F16";
  }
  return "?";
}

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

Tensor from_view(const serialize::TensorView& v) {
  const Shape shape(v.shape.begin(), v.shape.end());
  const int64_t n = shape_numel(shape);
  const std::string& d = v.dtype;
  if (d == "F32") return from_blob(v.data, shape, kFloat32);
  if (d == "I64") return from_blob(v.data, shape, kInt64);
  if (d == "BF16" || d == "F16")
    return from_blob(v.data, shape, d == "BF16" ? DType::BFloat16 : DType::Float16);
  if (d == "F64") {
    Tensor t = make_empty(shape, kFloat32);
    float* o = t.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) o[i] = (float)read_le<double>(v.data + 8 * i);
    return t;
  }
  Tensor t = make_empty(shape, kInt64);
  int64_t* o = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = v.data + i * serialize::dtype_itemsize(d);
    if (d == "I32")
      o[i] = read_le<int32_t>(p);
    else if (d == "U32")
      o[i] = read_le<uint32_t>(p);
    else if (d == "I16")
      o[i] = read_le<int16_t>(p);
    else if (d == "U16")
      o[i] = read_le<uint16_t>(p);
    else if (d == "I8")
      o[i] = read_le<int8_t>(p);
    else if (d == "U8" || d == "BOOL")
      o[i] = p[0];
    else
      WEFT_ERROR("tensor '", v.name, "' has dtype ", d, ", which weft cannot load");
  }
  return t;
}

// Checksums first: a corrupt file is reported as such, before any of its values are used.
TensorDict to_dict(const serialize::SafetensorsFile& f, const std::string& name, Device device,
                   std::map<std::string, std::string>* metadata) {
  std::map<std::string, std::string> rest = serialize::verify_checksums(f, name);
  TensorDict out;
  for (const auto& v : f.tensors()) out.insert(v.name, from_view(v).to(device));
  if (metadata) *metadata = std::move(rest);
  return out;
}

}  // namespace

void save(const TensorDict& tensors, const std::string& path,
          const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> keep;
  std::vector<serialize::TensorView> views;
  for (const auto& [name, t] : tensors) {
    WEFT_CHECK(t.defined(), "save: tensor '", name, "' is undefined");
    Tensor c = t.detach().to(Device::CPU()).contiguous();
    keep.push_back(c);
    views.push_back({name, st_dtype(c.dtype()), c.sizes(),
                     static_cast<const uint8_t*>(c.raw_data()), c.nbytes()});
  }
  std::map<std::string, std::string> with_checksums = metadata;
  serialize::add_checksums(views, &with_checksums);
  serialize::write_safetensors(path, views, with_checksums);
}

TensorDict load(const std::string& path, Device device,
                std::map<std::string, std::string>* metadata) {
  // torch.save checkpoints too, told apart by their first bytes.
  if (auto torch = serialize::load_if_not_safetensors(path, device, metadata)) return *torch;
  return to_dict(serialize::SafetensorsFile::read(path), path, device, metadata);
}

TensorDict load_from_bytes(std::vector<uint8_t> bytes, std::map<std::string, std::string>* metadata,
                           const std::string& name) {
  if (auto torch = serialize::load_if_not_safetensors(bytes, metadata)) return *torch;
  serialize::SafetensorsFile f;
  try {
    f = serialize::SafetensorsFile::parse(std::move(bytes));
  } catch (const Error& e) {
    // As SafetensorsFile::read names the path: rethrown whole, keeping one file:line suffix.
    throw Error("in '" + name + "': " + e.what());
  }
  return to_dict(f, name, Device::CPU(), metadata);
}

}  // namespace weft
