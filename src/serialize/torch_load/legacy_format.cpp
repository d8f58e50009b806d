// torch.save's format before PyTorch 1.6 (_use_new_zipfile_serialization=False): five pickles
// in a row (magic number, protocol version 1001, system info, the object, its storage keys),
// then for each key in that list the storage's element count (int64) and its bytes.
#include <cstring>

#include "serialize/torch_load/file_kind.h"
#include "serialize/torch_load/formats.h"
#include "serialize/torch_load/to_value.h"
#include "weft/error.h"

namespace weft::serialize {
namespace {

constexpr size_t kMagicBytes = 15;  // the pickled magic number, checked by sniff_file_kind
constexpr int64_t kProtocolVersion = 1001;

const pickle::Object* dict_get(const pickle::Object& d, const char* key) {
  for (size_t i = 0; i + 1 < d.items.size(); i += 2)
    if (d.items[i]->kind == pickle::Kind::Str && d.items[i]->str == key) return d.items[i + 1];
  return nullptr;
}

struct Span {
  size_t offset, nbytes;
};

}  // namespace

TorchValue load_torch_legacy(const uint8_t* data, size_t size, std::optional<Device> map_location) {
  WEFT_CHECK(sniff_file_kind(data, size) == FileKind::TorchLegacy,
             "legacy torch.save file: no magic number");
  size_t pos = kMagicBytes;
  auto next = [&](const char* what) {
    try {
      pickle::Unpickled u = pickle::unpickle(data + pos, size - pos, torch_pickle_limits());
      pos += u.end;
      return u;
    } catch (const Error& e) {
      throw Error(std::string("legacy torch.save file, the pickle of ") + what + ": " + e.what());
    }
  };
  const pickle::Unpickled version = next("the protocol version");
  WEFT_CHECK(version.root->kind == pickle::Kind::Int && version.root->integer == kProtocolVersion,
             "legacy torch.save file: protocol version is not ", kProtocolVersion);
  const pickle::Unpickled sys_info = next("the system info");
  WEFT_CHECK(sys_info.root->kind == pickle::Kind::Dict,
             "legacy torch.save file: the system info is not a dict");
  const pickle::Object* little = dict_get(*sys_info.root, "little_endian");
  WEFT_CHECK(!little || (little->kind == pickle::Kind::Bool && little->boolean),
             "the checkpoint was saved big-endian, which weft does not load");
  const pickle::Unpickled main = next("the object");
  const pickle::Unpickled keys = next("the storage keys");
  WEFT_CHECK(keys.root->kind == pickle::Kind::List,
             "legacy torch.save file: the storage keys are not a list");

  // Each storage's bytes follow in the order of the key list.
  std::map<std::string, const pickle::Object*> by_key;
  for (const pickle::Object* s : main.storages) by_key[s->str] = s;
  std::map<std::string, Span> spans;
  for (const pickle::Object* k : keys.root->items) {
    WEFT_CHECK(k->kind == pickle::Kind::Str, "legacy torch.save file: a storage key is ",
               pickle::kind_name(k->kind));
    auto it = by_key.find(k->str);
    WEFT_CHECK(it != by_key.end(), "legacy torch.save file: storage '", k->str,
               "' has data but no tensor uses it");
    const pickle::Object& s = *it->second;
    WEFT_CHECK(size - pos >= 8, "legacy torch.save file: truncated before storage '", s.str, "'");
    int64_t numel;
    std::memcpy(&numel, data + pos, 8);
    WEFT_CHECK(numel == s.integer, "legacy torch.save file: storage '", s.str, "' has ", numel,
               " elements in the data but ", s.integer, " in the pickle");
    const size_t nbytes = static_cast<size_t>(numel) * pickle::dtype_itemsize(s.dtype);
    WEFT_CHECK(nbytes <= size - pos - 8, "legacy torch.save file: storage '", s.str,
               "' is truncated (", nbytes, " bytes needed, ", size - pos - 8, " left)");
    WEFT_CHECK(spans.emplace(s.str, Span{pos + 8, nbytes}).second,
               "legacy torch.save file: storage '", s.str, "' is listed twice");
    pos += 8 + nbytes;
  }
  for (const pickle::Object* s : main.storages)
    WEFT_CHECK(spans.count(s->str), "legacy torch.save file: storage '", s->str,
               "' has no data in the file");

  ValueBuilder builder(
      map_location,
      [&](const pickle::Object& s, uint8_t* dst, size_t n) {
        const Span& span = spans.at(s.str);
        WEFT_CHECK(span.nbytes == n, "storage '", s.str, "' has ", span.nbytes, " bytes, expected ",
                   n);
        if (n) std::memcpy(dst, data + span.offset, n);
      },
      torch_pickle_limits());
  return builder.convert(*main.root);
}

}  // namespace weft::serialize
