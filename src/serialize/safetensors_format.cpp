#include "weft/serialize/safetensors_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "weft/error.h"
#include "weft/read_file.h"

namespace weft::serialize {
namespace {

constexpr uint64_t kMaxHeaderSize = 100'000'000;  // the official reader's limit
constexpr const char* kMetadataKey = "__metadata__";

// `rank` is the position in the Rust crate's Dtype enum: its writer orders tensors by decreasing
// rank, then by name, and we do the same so our files are byte-identical to the Python package's.
struct DtypeInfo {
  const char* name;
  size_t itemsize;
  int rank;
};
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 1, 0},    {"U8", 1, 4},   {"I8", 1, 5},   {"F8_E5M2", 1, 6}, {"F8_E4M3", 1, 7},
    {"F8_E8M0", 1, 8}, {"I16", 2, 9},  {"U16", 2, 10}, {"F16", 2, 11},    {"BF16", 2, 12},
    {"I32", 4, 13},    {"U32", 4, 14}, {"F32", 4, 15}, {"C64", 8, 16},    {"F64", 8, 17},
    {"I64", 8, 18},    {"U64", 8, 19},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// numel(shape) * itemsize, refusing overflow; dims must already be non-negative.
uint64_t checked_nbytes(const std::vector<int64_t>& shape, size_t itemsize,
                        const std::string& name) {
  // A zero dim makes the product 0 whatever the other dims are.
  if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d == 0; })) return 0;
  uint64_t n = itemsize;
  for (int64_t d : shape) {
    WEFT_CHECK(!__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n), "safetensors: tensor '",
               name, "': element count of its shape overflows");
  }
  // Keep byte counts representable as int64 so Tensor code can use signed sizes.
  WEFT_CHECK(n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             "safetensors: tensor '", name, "': element count of its shape overflows");
  return n;
}

// A JSON number that is a non-negative integer fitting in int64, or an error naming `what`.
uint64_t json_index(const nlohmann::json& v, const std::string& name, const char* what) {
  WEFT_CHECK(v.is_number_integer(), "safetensors: tensor '", name, "': ", what,
             " is not an integer");
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    WEFT_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
               "safetensors: tensor '", name, "': ", what, " ", u, " is too large");
    return u;
  }
  const int64_t s = v.get<int64_t>();
  WEFT_CHECK(s >= 0, "safetensors: tensor '", name, "': ", what, " ", s, " is negative");
  return static_cast<uint64_t>(s);
}

const nlohmann::json& required(const nlohmann::json& entry, const std::string& name,
                               const char* field) {
  auto it = entry.find(field);
  WEFT_CHECK(it != entry.end(), "safetensors: tensor '", name, "' has no ", field);
  return *it;
}

std::string errno_text() { return std::strerror(errno); }

// Writes all of `bytes`, retrying short writes and EINTR.
bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, 1u << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

size_t dtype_itemsize(const std::string& dtype) {
  const DtypeInfo* d = find_dtype(dtype);
  WEFT_CHECK(d != nullptr, "safetensors: unknown dtype '", dtype, "'");
  return d->itemsize;
}

SafetensorsFile SafetensorsFile::read(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path, "safetensors");
  try {
    return parse(std::move(bytes));
  } catch (const Error& e) {
    // Rethrown directly (not via WEFT_ERROR) so the message keeps a single file:line suffix.
    throw Error("in '" + path + "': " + e.what());
  }
}

namespace {

// The header's JSON, parsed with duplicate keys refused: nlohmann keeps the last of duplicate
// keys silently, so a callback tracks the keys of each open object (an ambiguous file is bad).
nlohmann::json parse_header_json(const char* begin, uint64_t n) {
  WEFT_CHECK(n > 0 && begin[0] == '{', "safetensors: header is not a JSON object");
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool has_duplicate = false;
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int, Event ev, nlohmann::json& parsed) {
    if (ev == Event::object_start) {
      open_objects.emplace_back();
    } else if (ev == Event::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (ev == Event::key && !has_duplicate && !open_objects.empty() && parsed.is_string()) {
      if (!open_objects.back().insert(parsed.get<std::string>()).second) {
        has_duplicate = true;
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(begin, begin + n, callback);
  } catch (const nlohmann::json::exception& e) {
    WEFT_ERROR("safetensors: header is not valid JSON: ", e.what());
  }
  WEFT_CHECK(!has_duplicate, "safetensors: duplicate key '", duplicate, "' in the header");
  WEFT_CHECK(header.is_object(), "safetensors: header is not a JSON object");
  return header;
}

struct Entry {
  uint64_t begin, end;
  TensorView view;
};

// One tensor's header entry, checked against the data buffer it points into.
Entry parse_entry(const std::string& key, const nlohmann::json& value, const uint8_t* data_base,
                  uint64_t data_size) {
  WEFT_CHECK(value.is_object(), "safetensors: entry of tensor '", key, "' is not a JSON object");
  Entry e;
  e.view.name = key;

  const auto& dtype = required(value, key, "dtype");
  WEFT_CHECK(dtype.is_string(), "safetensors: tensor '", key, "': dtype is not a string");
  e.view.dtype = dtype.get<std::string>();
  const DtypeInfo* info = find_dtype(e.view.dtype);
  WEFT_CHECK(info != nullptr, "safetensors: tensor '", key, "' has unknown dtype '", e.view.dtype,
             "'");

  const auto& shape = required(value, key, "shape");
  WEFT_CHECK(shape.is_array(), "safetensors: tensor '", key, "': shape is not an array");
  for (const auto& d : shape)
    e.view.shape.push_back(static_cast<int64_t>(json_index(d, key, "shape dimension")));

  const auto& offsets = required(value, key, "data_offsets");
  WEFT_CHECK(offsets.is_array() && offsets.size() == 2, "safetensors: tensor '", key,
             "': data_offsets is not an array [begin, end]");
  e.begin = json_index(offsets[0], key, "data_offsets begin");
  e.end = json_index(offsets[1], key, "data_offsets end");
  WEFT_CHECK(e.begin <= e.end, "safetensors: tensor '", key, "': data_offsets [", e.begin, ", ",
             e.end, "] has begin > end");
  WEFT_CHECK(e.end <= data_size, "safetensors: tensor '", key, "': data_offsets end ", e.end,
             " is past the end of the ", data_size, "-byte data buffer (truncated file?)");
  const uint64_t expected = checked_nbytes(e.view.shape, info->itemsize, key);
  WEFT_CHECK(e.end - e.begin == expected, "safetensors: tensor '", key, "' has ", e.end - e.begin,
             " bytes but its dtype and shape need ", expected);
  e.view.data = data_base + e.begin;
  e.view.nbytes = static_cast<size_t>(e.end - e.begin);
  return e;
}

// As the official reader: sorted by offsets, the tensors must tile the data buffer exactly,
// which rules out overlaps (aliasing), gaps and trailing bytes alike.
void check_tiling(std::vector<Entry>& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.view.name) < std::tie(b.begin, b.end, b.view.name);
  });
  uint64_t cursor = 0;
  const std::string* prev = nullptr;
  for (const Entry& e : entries) {
    WEFT_CHECK(e.begin >= cursor, "safetensors: tensor '", e.view.name, "' (data_offsets [",
               e.begin, ", ", e.end, "]) overlaps tensor '", prev ? *prev : std::string(), "'");
    WEFT_CHECK(e.begin == cursor, "safetensors: tensor '", e.view.name, "' starts at ", e.begin,
               ", leaving a gap after offset ", cursor);
    cursor = e.end;
    prev = &e.view.name;
  }
  WEFT_CHECK(cursor == data_size, "safetensors: ", data_size - cursor,
             " trailing bytes after the last tensor's data");
}

}  // namespace

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes) {
  SafetensorsFile f;
  f.bytes_ = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  const std::vector<uint8_t>& b = *f.bytes_;

  WEFT_CHECK(b.size() >= 8, "safetensors: file is ", b.size(),
             " bytes, shorter than the 8-byte header size");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(b[i]) << (8 * i);
  WEFT_CHECK(n <= kMaxHeaderSize, "safetensors: header size ", n, " exceeds the limit of ",
             kMaxHeaderSize, " bytes");
  WEFT_CHECK(n <= b.size() - 8, "safetensors: header size ", n, " is larger than the ",
             b.size() - 8, " bytes that follow it (truncated file?)");
  const nlohmann::json header = parse_header_json(reinterpret_cast<const char*>(b.data() + 8), n);

  const uint64_t data_size = b.size() - 8 - n;
  const uint8_t* data_base = b.data() + 8 + n;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      WEFT_CHECK(value.is_object(), "safetensors: __metadata__ is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        WEFT_CHECK(mv.is_string(), "safetensors: __metadata__ value of key '", mk,
                   "' is not a string");
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(key, value, data_base, data_size));
  }
  check_tiling(entries, data_size);

  f.tensors_.reserve(entries.size());
  for (Entry& e : entries) {
    f.index_.emplace(e.view.name, f.tensors_.size());
    f.tensors_.push_back(std::move(e.view));
  }
  return f;
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<uint8_t> serialize_safetensors(const std::vector<TensorView>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<const TensorView*, const DtypeInfo*>> order;
  std::set<std::string> names;
  for (const TensorView& t : tensors) {
    WEFT_CHECK(t.name != kMetadataKey, "safetensors: '", kMetadataKey,
               "' is reserved and cannot name a tensor");
    WEFT_CHECK(names.insert(t.name).second, "safetensors: duplicate tensor name '", t.name, "'");
    const DtypeInfo* info = find_dtype(t.dtype);
    WEFT_CHECK(info != nullptr, "safetensors: tensor '", t.name, "' has unknown dtype '", t.dtype,
               "'");
    for (int64_t d : t.shape)
      WEFT_CHECK(d >= 0, "safetensors: tensor '", t.name, "' has a negative dimension ", d);
    const uint64_t expected = checked_nbytes(t.shape, info->itemsize, t.name);
    WEFT_CHECK(t.nbytes == expected, "safetensors: tensor '", t.name, "' has ", t.nbytes,
               " bytes but its dtype and shape need ", expected);
    WEFT_CHECK(t.data != nullptr || t.nbytes == 0, "safetensors: tensor '", t.name,
               "' has no data");
    order.emplace_back(&t, info);
  }
  // Decreasing dtype rank (hence itemsize) keeps each tensor aligned to its itemsize once the
  // header is padded to 8; ties by name make the output deterministic.
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    if (a.second->rank != b.second->rank) return a.second->rank > b.second->rank;
    return a.first->name < b.first->name;
  });

  // ordered_json keeps insertion order: "__metadata__" first, then tensors in data order, each
  // with dtype, shape, data_offsets, exactly as serde serializes the Rust structs.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& [t, info] : order) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = t->dtype;
    entry["shape"] = t->shape;
    entry["data_offsets"] = {offset, offset + t->nbytes};
    offset += t->nbytes;
    header[t->name] = std::move(entry);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    WEFT_ERROR("safetensors: tensor names and metadata must be valid UTF-8: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& [t, info] : order)
    if (t->nbytes > 0) out.insert(out.end(), t->data, t->data + t->nbytes);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Serialize first: invalid input must fail before the file system is touched.
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors, metadata);

  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? std::string(".") : (slash == 0 ? "/" : path.substr(0, slash));
  // The temp file lives in the target's directory so rename() is atomic (same file system). Its
  // name is unique per process and call; O_EXCL refuses to reuse a stale one.
  static std::atomic<uint64_t> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    // 0666 & ~umask: the same permissions as a plain create would give.
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    WEFT_CHECK(fd >= 0 || (errno == EEXIST && attempt < 100), "safetensors: cannot create '", tmp,
               "' to write '", path, "': ", errno_text());
  }
  auto fail = [&](const char* what) {
    const std::string why = errno_text();
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    WEFT_ERROR("safetensors: writing '", path, "' failed (", what, " of '", tmp, "'): ", why);
  };
  if (!write_all(fd, bytes.data(), bytes.size())) fail("write");
  if (::fsync(fd) != 0) fail("fsync");
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");

  // Make the rename itself durable. Some file systems refuse fsync on directories (EINVAL); the
  // data is in place by then, so only a real I/O error is reported.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int drc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    WEFT_CHECK(drc == 0 || err == EINVAL || err == EROFS, "safetensors: fsync of directory '", dir,
               "' after writing '", path, "' failed: ", std::strerror(err));
  }
}

}  // namespace weft::serialize
