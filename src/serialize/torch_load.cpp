// torch_load and torch_state_dict: the file-level API over the two torch.save formats
// (src/serialize/torch_load/), and weft::load's dispatch to them.
#include "weft/serialize/torch_load.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include "serialize/torch_load/file_kind.h"
#include "serialize/torch_load/formats.h"
#include "weft/error.h"
#include "weft/read_file.h"

namespace weft {
namespace {

// Where checkpoints keep the model's state_dict beside other things (optimizer, epoch).
constexpr const char* kStateDictKeys[] = {"state_dict", "model_state_dict", "model", "net"};

TorchValue load_bytes(const uint8_t* data, size_t size, std::optional<Device> map_location) {
  const serialize::FileKind kind = serialize::sniff_file_kind(data, size);
  if (kind == serialize::FileKind::Zip) return serialize::load_torch_zip(data, size, map_location);
  if (kind == serialize::FileKind::TorchLegacy)
    return serialize::load_torch_legacy(data, size, map_location);
  WEFT_ERROR("this is ", serialize::describe_file_kind(kind), ", not a torch.save checkpoint");
}

std::string a(TorchValue::Kind k) {
  const char* name = TorchValue::kind_name(k);
  if (k == TorchValue::Kind::None) return name;
  return std::string(k == TorchValue::Kind::Int ? "an " : "a ") + name;
}

// "a dict with keys 'model' (a dict), 'epoch' (an int)", "a list", ... for messages.
std::string describe(const TorchValue& v) {
  std::string out = a(v.kind);
  if (!v.is(TorchValue::Kind::Dict)) return out;
  if (v.entries.empty()) return out + " with no keys";
  out += " with keys ";
  for (size_t i = 0; i < v.entries.size() && i < 12; ++i) {
    const TorchValue& k = v.entries[i].first;
    out += i ? ", " : "";
    // Appends only: GCC 12 warns falsely (-Wrestrict) on "(" + std::string + ")".
    if (k.is(TorchValue::Kind::Str)) {
      out += '\'';
      out += k.str;
      out += '\'';
    } else {
      out += '(';
      out += a(k.kind);
      out += ')';
    }
    if (!v.entries[i].second.is(TorchValue::Kind::Tensor)) {
      out += " (";
      out += a(v.entries[i].second.kind);
      out += ')';
    }
  }
  if (v.entries.size() > 12) {
    out += ", ... (";
    out += std::to_string(v.entries.size());
    out += " in all)";
  }
  return out;
}

std::string scalar_text(const TorchValue& v) {
  switch (v.kind) {
    case TorchValue::Kind::Bool:
      return v.boolean ? "True" : "False";
    case TorchValue::Kind::Int:
      return std::to_string(v.integer);
    case TorchValue::Kind::Float: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v.real);
      return buf;
    }
    default:
      return v.str;
  }
}

// load()'s answer for a torch.save checkpoint: its state_dict, and as metadata the scalar
// entries beside it (a checkpoint's 'epoch', 'best_acc', ...).
OrderedDict<Tensor> checkpoint_state_dict(const TorchValue& obj,
                                          std::map<std::string, std::string>* metadata) {
  OrderedDict<Tensor> out = torch_state_dict(obj);
  if (metadata) {
    metadata->clear();
    for (const auto& [k, v] : obj.entries) {
      const bool scalar = v.is(TorchValue::Kind::Bool) || v.is(TorchValue::Kind::Int) ||
                          v.is(TorchValue::Kind::Float) || v.is(TorchValue::Kind::Str);
      if (k.is(TorchValue::Kind::Str) && scalar) (*metadata)[k.str] = scalar_text(v);
    }
  }
  return out;
}

}  // namespace

const TorchValue* TorchValue::find(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k.is(Kind::Str) && k.str == key) return &v;
  return nullptr;
}

bool TorchValue::is_tensor_dict() const {
  if (!is(Kind::Dict)) return false;
  for (const auto& [k, v] : entries)
    if (!k.is(Kind::Str) || !v.is(Kind::Tensor)) return false;
  return true;
}

const char* TorchValue::kind_name(Kind k) {
  static const char* const names[] = {"None",  "bool",   "int",  "float", "str",
                                      "bytes", "tensor", "list", "tuple", "dict"};
  return names[static_cast<int>(k)];
}

TorchValue torch_load(const std::string& path, std::optional<Device> map_location) {
  const std::vector<uint8_t> bytes = read_file(path, "torch_load");
  try {
    return load_bytes(bytes.data(), bytes.size(), map_location);
  } catch (const Error& e) {
    // Rethrown directly (not via WEFT_ERROR) so the message keeps a single file:line suffix.
    throw Error("torch_load: in '" + path + "': " + e.what());
  }
}

TorchValue torch_load_from_bytes(const std::vector<uint8_t>& bytes,
                                 std::optional<Device> map_location) {
  try {
    return load_bytes(bytes.data(), bytes.size(), map_location);
  } catch (const Error& e) {
    throw Error(std::string("torch_load: ") + e.what());
  }
}

OrderedDict<Tensor> torch_state_dict(const TorchValue& obj, const std::string& key) {
  const TorchValue* sd = nullptr;
  if (!key.empty()) {
    sd = obj.find(key);
    WEFT_CHECK(sd, "torch_state_dict: the checkpoint has no key '", key, "': it is ",
               describe(obj));
    WEFT_CHECK(sd->is_tensor_dict(), "torch_state_dict: '", key,
               "' is not a state_dict (a dict "
               "of str -> tensor): it is ",
               describe(*sd));
  } else if (obj.is_tensor_dict()) {
    sd = &obj;
  } else {
    for (const char* k : kStateDictKeys) {
      const TorchValue* v = obj.find(k);
      if (v && v->is_tensor_dict()) {
        sd = v;
        break;
      }
    }
    WEFT_CHECK(sd,
               "torch_state_dict: the checkpoint holds no state_dict (a dict of str -> "
               "tensor, itself or under 'state_dict', 'model_state_dict', 'model' or 'net'): "
               "it is ",
               describe(obj), "; pass the key that holds it");
  }
  OrderedDict<Tensor> out;
  for (const auto& [k, v] : sd->entries) out.insert(k.str, v.tensor);
  return out;
}

namespace serialize {

const pickle::Limits& torch_pickle_limits() {
  static const pickle::Limits limits;
  return limits;
}

namespace {

// nullopt for files load() reads as safetensors (or is told why not by the safetensors parser:
// a truncated one); a torch.save checkpoint's state_dict; an error naming any other kind of
// file. A file of unknown kind with 9 bytes or more has no '{' at byte 8, so the safetensors
// parser would refuse it too, with a message about header sizes that says less.
std::optional<OrderedDict<Tensor>> load_by_kind(const uint8_t* head, size_t n,
                                                const std::string& where,
                                                const std::function<TorchValue()>& torch,
                                                std::map<std::string, std::string>* metadata) {
  const FileKind kind = sniff_file_kind(head, n);
  if (kind == FileKind::Safetensors || (kind == FileKind::Unknown && n < 9)) return std::nullopt;
  if (kind == FileKind::Unknown) {
    char hex[3 * 8 + 1] = {};
    for (size_t i = 0; i < 8; ++i) std::snprintf(hex + 3 * i, 4, "%02x ", head[i]);
    WEFT_ERROR("load: ", where,
               " is neither a safetensors file nor a torch.save checkpoint: it "
               "is a file of unknown format, starting with the bytes ",
               std::string(hex, 23));
  }
  WEFT_CHECK(kind == FileKind::Zip || kind == FileKind::TorchLegacy, "load: ", where, " is ",
             describe_file_kind(kind), "; weft loads safetensors files and torch.save checkpoints");
  return checkpoint_state_dict(torch(), metadata);
}

}  // namespace

std::optional<OrderedDict<Tensor>> load_if_not_safetensors(
    const std::vector<uint8_t>& bytes, std::map<std::string, std::string>* metadata) {
  return load_by_kind(
      bytes.data(), std::min(bytes.size(), kSniffBytes), "the data",
      [&] { return torch_load_from_bytes(bytes, Device::CPU()); }, metadata);
}

std::optional<OrderedDict<Tensor>> load_if_not_safetensors(
    const std::string& path, Device device, std::map<std::string, std::string>* metadata) {
  const std::string head = read_file_prefix(path, kSniffBytes, "load");
  return load_by_kind(
      reinterpret_cast<const uint8_t*>(head.data()), head.size(), "'" + path + "'",
      [&] { return torch_load(path, device); }, metadata);
}

}  // namespace serialize
}  // namespace weft
