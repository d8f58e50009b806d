// torch.distributed's object collectives (all_gather_object, broadcast_object_list,
// gather_object) for plain data: bool, integers, floating point, std::string, and std::vector,
// std::map and std::pair of those. Objects travel in a small typed binary encoding (a tag byte
// per value, then its bytes); decoding checks every tag and bound, so a mismatch is a DistError
// naming the type expected and found. Never code: nothing is pickled or executed.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/distributed/collectives_api.h"

namespace weft::dist {

namespace obj {

enum class Tag : uint8_t { BOOL = 1, INT, UINT, FLOAT, STRING, VECTOR, MAP, PAIR };
const char* tag_name(Tag t);

class Writer {
 public:
  void tag(Tag t) { buf_.push_back(static_cast<char>(t)); }
  template <typename T>
  void raw(T v) {
    buf_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void bytes(const std::string& s) {
    raw<uint64_t>(s.size());
    buf_ += s;
  }
  std::string take() { return std::move(buf_); }

 private:
  std::string buf_;
};

class Reader {
 public:
  explicit Reader(const std::string& s) : s_(s) {}
  void expect(Tag t);  // throws DistError naming the tag expected and the one found
  template <typename T>
  T raw() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, s_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  std::string bytes();
  uint64_t count();  // a length, checked against the bytes left
  bool at_end() const { return pos_ == s_.size(); }

 private:
  void need(size_t n);
  const std::string& s_;
  size_t pos_ = 0;
};

[[noreturn]] void out_of_range(const char* type, const std::string& value);

template <typename T>
struct Codec;

template <>
struct Codec<bool> {
  static void put(Writer& w, bool v) {
    w.tag(Tag::BOOL);
    w.raw<uint8_t>(v ? 1 : 0);
  }
  static bool get(Reader& r) {
    r.expect(Tag::BOOL);
    return r.raw<uint8_t>() != 0;
  }
};

template <typename T>
requires(std::is_integral_v<T> && !std::is_same_v<T, bool>) struct Codec<T> {
  static void put(Writer& w, T v) {
    if constexpr (std::is_signed_v<T>) {
      w.tag(Tag::INT);
      w.raw<int64_t>(v);
    } else {
      w.tag(Tag::UINT);
      w.raw<uint64_t>(v);
    }
  }
  static T get(Reader& r) {
    if constexpr (std::is_signed_v<T>) {
      r.expect(Tag::INT);
      const int64_t v = r.raw<int64_t>();
      if (!std::in_range<T>(v)) out_of_range("a signed integer", std::to_string(v));
      return static_cast<T>(v);
    } else {
      r.expect(Tag::UINT);
      const uint64_t v = r.raw<uint64_t>();
      if (!std::in_range<T>(v)) out_of_range("an unsigned integer", std::to_string(v));
      return static_cast<T>(v);
    }
  }
};

template <typename T>
requires std::is_floating_point_v<T>
struct Codec<T> {
  static void put(Writer& w, T v) {
    w.tag(Tag::FLOAT);
    w.raw<double>(static_cast<double>(v));
  }
  static T get(Reader& r) {
    r.expect(Tag::FLOAT);
    return static_cast<T>(r.raw<double>());
  }
};

template <>
struct Codec<std::string> {
  static void put(Writer& w, const std::string& v) {
    w.tag(Tag::STRING);
    w.bytes(v);
  }
  static std::string get(Reader& r) {
    r.expect(Tag::STRING);
    return r.bytes();
  }
};

template <typename A, typename B>
struct Codec<std::pair<A, B>> {
  static void put(Writer& w, const std::pair<A, B>& v) {
    w.tag(Tag::PAIR);
    Codec<A>::put(w, v.first);
    Codec<B>::put(w, v.second);
  }
  static std::pair<A, B> get(Reader& r) {
    r.expect(Tag::PAIR);
    A a = Codec<A>::get(r);
    return {std::move(a), Codec<B>::get(r)};
  }
};

template <typename T>
struct Codec<std::vector<T>> {
  static void put(Writer& w, const std::vector<T>& v) {
    w.tag(Tag::VECTOR);
    w.raw<uint64_t>(v.size());
    for (const T& x : v) Codec<T>::put(w, x);
  }
  static std::vector<T> get(Reader& r) {
    r.expect(Tag::VECTOR);
    const uint64_t n = r.count();
    std::vector<T> v;
    v.reserve(n);
    for (uint64_t i = 0; i < n; ++i) v.push_back(Codec<T>::get(r));
    return v;
  }
};

template <typename K, typename V>
struct Codec<std::map<K, V>> {
  static void put(Writer& w, const std::map<K, V>& m) {
    w.tag(Tag::MAP);
    w.raw<uint64_t>(m.size());
    for (const auto& [k, v] : m) {
      Codec<K>::put(w, k);
      Codec<V>::put(w, v);
    }
  }
  static std::map<K, V> get(Reader& r) {
    r.expect(Tag::MAP);
    const uint64_t n = r.count();
    std::map<K, V> m;
    for (uint64_t i = 0; i < n; ++i) {
      K k = Codec<K>::get(r);
      m.emplace(std::move(k), Codec<V>::get(r));
    }
    return m;
  }
};

// `from` names the source in errors ("rank 2").
void check_consumed(const Reader& r, const std::string& from);
[[noreturn]] void rethrow_decode(const std::exception& e, const std::string& from);

}  // namespace obj

template <typename T>
std::string encode_object(const T& v) {
  obj::Writer w;
  obj::Codec<T>::put(w, v);
  return w.take();
}

template <typename T>
T decode_object(const std::string& bytes, const std::string& from = "the bytes given") {
  try {
    obj::Reader r(bytes);
    T v = obj::Codec<T>::get(r);
    obj::check_consumed(r, from);
    return v;
  } catch (const std::exception& e) {
    obj::rethrow_decode(e, from);
  }
}

namespace detail {
// The byte strings behind the object collectives; group ranks; non-members get {}.
std::vector<std::string> all_gather_bytes(ProcessGroup& pg, const std::string& mine);
std::vector<std::string> gather_bytes(ProcessGroup& pg, const std::string& mine, int root);
std::string broadcast_bytes(ProcessGroup& pg, const std::string& s, int root);
void check_object_list(const char* op, size_t have, size_t want);
}  // namespace detail

// object_list (the group's size) receives every rank's obj, in group rank order.
template <typename T>
void all_gather_object(std::vector<T>& object_list, const T& obj, GroupArg group = {}) {
  auto pg = group.resolve();
  if (!pg) return;
  detail::check_object_list("all_gather_object", object_list.size(), pg->size());
  auto all = detail::all_gather_bytes(*pg, encode_object(obj));
  for (size_t i = 0; i < all.size(); ++i)
    object_list[i] = decode_object<T>(all[i], "rank " + std::to_string(i) + " of the group");
}

// Every rank's object_list (same length everywhere) receives src's (src a global rank).
template <typename T>
void broadcast_object_list(std::vector<T>& object_list, int src = 0, GroupArg group = {}) {
  auto pg = group.resolve();
  if (!pg) return;
  const int root = detail::group_rank(pg, src, "broadcast_object_list", "src");
  const std::string bytes = detail::broadcast_bytes(
      *pg, pg->rank() == root ? encode_object(object_list) : std::string(), root);
  auto got = decode_object<std::vector<T>>(bytes, "global rank " + std::to_string(src));
  detail::check_object_list("broadcast_object_list", object_list.size(), got.size());
  object_list = std::move(got);
}

// On dst (a global rank), *object_gather_list (the group's size) receives every rank's obj;
// elsewhere object_gather_list must be null.
template <typename T>
void gather_object(const T& obj, std::vector<T>* object_gather_list, int dst = 0,
                   GroupArg group = {}) {
  auto pg = group.resolve();
  if (!pg) return;
  const int root = detail::group_rank(pg, dst, "gather_object", "dst");
  WEFT_CHECK_DIST((pg->rank() == root) == (object_gather_list != nullptr),
                  "gather_object: object_gather_list must be given on dst (global rank ", dst,
                  ") and only there");
  if (object_gather_list)
    detail::check_object_list("gather_object", object_gather_list->size(), pg->size());
  auto all = detail::gather_bytes(*pg, encode_object(obj), root);
  for (size_t i = 0; i < all.size(); ++i)
    (*object_gather_list)[i] = decode_object<T>(all[i], "rank " + std::to_string(i));
}

}  // namespace weft::dist
