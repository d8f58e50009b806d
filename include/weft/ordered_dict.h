// Insertion-ordered name -> value map used for parameters, buffers, children and
// state_dicts: iteration order is registration order, as in PyTorch. Lookups are linear,
// which is fastest at the sizes modules have (a handful of entries). update() is Python's
// dict.update: existing keys keep their place and take the new value, new keys go last.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "weft/error.h"

namespace weft {

template <typename V>
class OrderedDict {
 public:
  using Item = std::pair<std::string, V>;
  OrderedDict() = default;
  OrderedDict(std::initializer_list<Item> items) {
    for (auto& it : items) insert(it.first, it.second);
  }

  V& insert(const std::string& key, V value) {
    WEFT_CHECK(!contains(key), "key '", key, "' is already present");
    items_.emplace_back(key, std::move(value));
    return items_.back().second;
  }
  V& insert_or_assign(const std::string& key, V value) {
    if (V* v = find(key)) return *v = std::move(value);
    return insert(key, std::move(value));
  }
  // Python's dict.update (the partial-loading recipe's `model_dict.update(pretrained)`): each of
  // other's entries replaces the value under its key, in place, or is appended in other's order.
  // libtorch's OrderedDict::update throws on a present key instead; this one overwrites.
  void update(const OrderedDict& other) {
    for (const auto& [k, v] : other) insert_or_assign(k, v);
  }
  V* find(const std::string& key) {
    for (auto& it : items_)
      if (it.first == key) return &it.second;
    return nullptr;
  }
  const V* find(const std::string& key) const {
    for (auto& it : items_)
      if (it.first == key) return &it.second;
    return nullptr;
  }
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  const V& at(const std::string& key) const {
    const V* v = find(key);
    WEFT_CHECK(v, "key '", key, "' not found");
    return *v;
  }
  V& operator[](const std::string& key) {
    V* v = find(key);
    WEFT_CHECK(v, "key '", key, "' not found");
    return *v;
  }
  bool erase(const std::string& key) {
    for (auto it = items_.begin(); it != items_.end(); ++it)
      if (it->first == key) {
        items_.erase(it);
        return true;
      }
    return false;
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    for (auto& it : items_) k.push_back(it.first);
    return k;
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  void clear() { items_.clear(); }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<Item> items_;
};

}  // namespace weft
