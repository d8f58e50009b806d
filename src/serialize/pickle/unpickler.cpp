// The opcode machine of the restricted unpickler (Note [Restricted unpickler]): pickle protocols
// 2 to 5 in their binary opcodes, as torch.save writes them; what globals may do is in
// torch_globals.cpp. The machine is iterative (no recursion on the input's nesting), and every
// read is checked against the end of the input.
#include "serialize/pickle/unpickler.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "serialize/pickle/torch_globals.h"
#include "weft/error.h"

namespace weft::serialize::pickle {
namespace {

constexpr size_t kMaxLine = 256;  // GLOBAL's module and name

bool valid_utf8(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = p[i];
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; ++k)
      if ((p[i + k] & 0xc0) != 0x80) return false;
    i += len;
  }
  return true;
}

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const Limits& limits, Unpickled& out)
      : p_(data), size_(size), limits_(limits), arena_(out, limits) {}

  const Object* run();
  size_t position() const { return pos_; }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    WEFT_ERROR("pickle: ", args..., " (opcode at offset ", op_pos_, ")");
  }
  const uint8_t* take(size_t n) {
    if (n > size_ - pos_) fail("truncated: needs ", n, " more bytes, ", size_ - pos_, " left");
    const uint8_t* q = p_ + pos_;
    pos_ += n;
    return q;
  }
  uint64_t le(size_t n) {
    const uint8_t* q = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(q[i]) << (8 * i);
    return v;
  }
  std::string line();
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  Object* pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    Object* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Object* top() {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Object*> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    std::vector<Object*> items(stack_.begin() + static_cast<ptrdiff_t>(marks_.back()),
                               stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Object* make(Kind kind) { return arena_.make(kind); }
  Object* make_int(int64_t v) {
    Object* o = make(Kind::Int);
    o->integer = v;
    return o;
  }
  Object* make_tuple(std::vector<Object*> items) {
    Object* t = make(Kind::Tuple);
    t->items = std::move(items);
    return t;
  }
  Object* make_string(size_t n, Kind kind);
  Object* make_long(size_t n);
  void memo_put(uint64_t index, Object* o) {
    if (memo_.size() >= limits_.max_memo && !memo_.count(index))
      fail("more than ", limits_.max_memo, " memo entries");
    memo_[index] = o;
  }
  Object* memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry ", index, " is read before it is written");
    return it->second;
  }
  void append(Object* list, const std::vector<Object*>& items) {
    if (list->kind != Kind::List) fail("APPEND to ", kind_name(list->kind), ", not a list");
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void set_items(Object* dict, const std::vector<Object*>& kv);
  void key_of(const Object& k, std::string& out, size_t depth);
  bool control(uint8_t op);
  bool scalar(uint8_t op);
  bool container(uint8_t op);
  bool object(uint8_t op);

  const uint8_t* p_;
  size_t size_, pos_ = 0, op_pos_ = 0;
  const Limits& limits_;
  Arena arena_;
  std::vector<Object*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Object*> memo_;
  // Per dict: canonical key -> index of the key in its items, so that a repeated key replaces
  // the value as in Python, in O(1).
  std::unordered_map<const Object*, std::unordered_map<std::string, size_t>> dict_index_;
  Object* none_ = nullptr;
  Object* bools_[2] = {nullptr, nullptr};
};

std::string Machine::line() {
  const uint8_t* start = p_ + pos_;
  const size_t avail = size_ - pos_;
  const void* nl = std::memchr(start, '\n', std::min(avail, kMaxLine + 1));
  if (!nl) fail("GLOBAL name is not a line of at most ", kMaxLine, " bytes");
  const size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nl) - start);
  pos_ += n + 1;
  return std::string(reinterpret_cast<const char*>(start), n);
}

Object* Machine::make_string(size_t n, Kind kind) {
  if (n > limits_.max_string)
    fail("a string of ", n, " bytes exceeds the limit of ", limits_.max_string);
  const uint8_t* q = take(n);
  if (kind == Kind::Str && !valid_utf8(q, n)) fail("a str is not valid UTF-8");
  Object* o = make(kind);
  o->str.assign(reinterpret_cast<const char*>(q), n);
  return o;
}

// LONG1/LONG4: n bytes of little-endian two's complement; weft keeps ints in int64.
Object* Machine::make_long(size_t n) {
  if (n > 8) fail("an integer of ", n, " bytes does not fit in 64 bits");
  uint64_t v = le(n);
  if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
  return make_int(static_cast<int64_t>(v));
}

// Python's dict keys compare by value across int/bool/float (1 == True == 1.0): the canonical
// form maps equal keys to equal strings. Only hashable kinds may be keys.
void Machine::key_of(const Object& k, std::string& out, size_t depth) {
  if (depth > limits_.max_depth) fail("a dict key nests deeper than ", limits_.max_depth);
  if (out.size() > limits_.max_string) fail("a dict key is longer than ", limits_.max_string);
  // Built by appends: GCC 12 warns falsely (-Wrestrict) on "I" + std::to_string(...).
  auto integer = [&](int64_t v) {
    out += 'I';
    out += std::to_string(v);
    out += ';';
  };
  switch (k.kind) {
    case Kind::None:
      out += 'N';
      return;
    case Kind::Bool:
      integer(k.boolean ? 1 : 0);
      return;
    case Kind::Int:
      integer(k.integer);
      return;
    case Kind::Float:
      if (k.real > -9.2e18 && k.real < 9.2e18 && k.real == std::trunc(k.real)) {  // NaN: no
        integer(static_cast<int64_t>(k.real));
      } else {
        uint64_t bits;
        std::memcpy(&bits, &k.real, 8);
        out += 'F';
        out += std::to_string(bits);
        out += ';';
      }
      return;
    case Kind::Str:
    case Kind::Bytes:
      out += k.kind == Kind::Str ? 'S' : 'B';
      out += std::to_string(k.str.size());
      out += ':';
      out += k.str;
      return;
    case Kind::Tuple:
      out += "T(";
      for (const Object* i : k.items) key_of(*i, out, depth + 1);
      out += ")";
      return;
    default:
      fail(kind_name(k.kind), " cannot be a dict key");
  }
}

void Machine::set_items(Object* dict, const std::vector<Object*>& kv) {
  if (dict->kind != Kind::Dict) fail("SETITEM on ", kind_name(dict->kind), ", not a dict");
  if (kv.size() % 2 != 0) fail("SETITEMS with an odd number of keys and values");
  auto& index = dict_index_[dict];
  for (size_t i = 0; i < kv.size(); i += 2) {
    std::string key;
    key_of(*kv[i], key, 0);
    auto [it, fresh] = index.emplace(std::move(key), dict->items.size());
    if (fresh) {
      dict->items.push_back(kv[i]);
      dict->items.push_back(kv[i + 1]);
    } else {
      dict->items[it->second + 1] = kv[i + 1];
    }
  }
}

// Each group handles its opcodes and returns false for any other (STOP is run()'s).
// Protocol, framing and the stack itself.
bool Machine::control(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      const uint8_t v = *take(1);
      if (v > 5) fail("pickle protocol ", int(v), " is newer than 5");
      return true;
    }
    case 0x95:  // FRAME: a length hint only
      take(8);
      return true;
    case '(':  // MARK
      if (marks_.size() >= limits_.max_depth) fail("more than ", limits_.max_depth, " open MARKs");
      marks_.push_back(stack_.size());
      return true;
    case '0':  // POP
      if (!marks_.empty() && stack_.size() == marks_.back())
        marks_.pop_back();
      else
        pop();
      return true;
    case '1':  // POP_MARK
      pop_mark();
      return true;
    case '2':  // DUP
      stack_.push_back(top());
      return true;
    default:
      return false;
  }
}

// Opcodes that push one scalar: None, bools, ints, floats, strings and bytes.
bool Machine::scalar(uint8_t op) {
  switch (op) {
    case 'N':
      stack_.push_back(none_ ? none_ : (none_ = make(Kind::None)));
      return true;
    case 0x88:    // NEWTRUE
    case 0x89: {  // NEWFALSE
      Object*& b = bools_[op == 0x88];
      if (!b) {
        b = make(Kind::Bool);
        b->boolean = op == 0x88;
      }
      stack_.push_back(b);
      return true;
    }
    case 'J':  // BININT
      stack_.push_back(make_int(static_cast<int32_t>(le(4))));
      return true;
    case 'K':  // BININT1
      stack_.push_back(make_int(static_cast<int64_t>(le(1))));
      return true;
    case 'M':  // BININT2
      stack_.push_back(make_int(static_cast<int64_t>(le(2))));
      return true;
    case 0x8a:  // LONG1
      stack_.push_back(make_long(le(1)));
      return true;
    case 0x8b:  // LONG4
      stack_.push_back(make_long(le(4)));
      return true;
    case 'G': {  // BINFLOAT: big-endian IEEE double
      const uint8_t* q = take(8);
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | q[i];
      Object* f = make(Kind::Float);
      std::memcpy(&f->real, &bits, 8);
      stack_.push_back(f);
      return true;
    }
    case 'X':  // BINUNICODE
    case 'T':  // BINSTRING (Python 2 str)
      stack_.push_back(make_string(le(4), Kind::Str));
      return true;
    case 0x8c:  // SHORT_BINUNICODE
    case 'U':   // SHORT_BINSTRING
      stack_.push_back(make_string(le(1), Kind::Str));
      return true;
    case 0x8d:  // BINUNICODE8
      stack_.push_back(make_string(le(8), Kind::Str));
      return true;
    case 'B':  // BINBYTES
      stack_.push_back(make_string(le(4), Kind::Bytes));
      return true;
    case 'C':  // SHORT_BINBYTES
      stack_.push_back(make_string(le(1), Kind::Bytes));
      return true;
    case 0x8e:  // BINBYTES8
      stack_.push_back(make_string(le(8), Kind::Bytes));
      return true;
    default:
      return false;
  }
}

// Tuples, lists and dicts.
bool Machine::container(uint8_t op) {
  switch (op) {
    case ')':  // EMPTY_TUPLE
      stack_.push_back(make_tuple({}));
      return true;
    case 't':  // TUPLE
      stack_.push_back(make_tuple(pop_mark()));
      return true;
    case 0x85:    // TUPLE1
    case 0x86:    // TUPLE2
    case 0x87: {  // TUPLE3
      std::vector<Object*> items(op - 0x84);
      for (size_t i = items.size(); i-- > 0;) items[i] = pop();
      stack_.push_back(make_tuple(std::move(items)));
      return true;
    }
    case ']':  // EMPTY_LIST
      stack_.push_back(make(Kind::List));
      return true;
    case 'l': {  // LIST
      Object* l = make(Kind::List);
      l->items = pop_mark();
      stack_.push_back(l);
      return true;
    }
    case 'a': {  // APPEND
      Object* v = pop();
      append(top(), {v});
      return true;
    }
    case 'e': {  // APPENDS
      std::vector<Object*> items = pop_mark();
      append(top(), items);
      return true;
    }
    case '}':  // EMPTY_DICT
      stack_.push_back(make(Kind::Dict));
      return true;
    case 'd': {  // DICT
      std::vector<Object*> kv = pop_mark();
      Object* d = make(Kind::Dict);
      set_items(d, kv);
      stack_.push_back(d);
      return true;
    }
    case 's': {  // SETITEM
      Object* v = pop();
      Object* k = pop();
      set_items(top(), {k, v});
      return true;
    }
    case 'u': {  // SETITEMS
      std::vector<Object*> kv = pop_mark();
      set_items(top(), kv);
      return true;
    }
    default:
      return false;
  }
}

// The memo, globals and what may be done with them (torch_globals.cpp decides).
bool Machine::object(uint8_t op) {
  switch (op) {
    case 'q':  // BINPUT
      memo_put(le(1), top());
      return true;
    case 'r':  // LONG_BINPUT
      memo_put(le(4), top());
      return true;
    case 0x94:  // MEMOIZE
      memo_put(memo_.size(), top());
      return true;
    case 'h':  // BINGET
      stack_.push_back(memo_get(le(1)));
      return true;
    case 'j':  // LONG_BINGET
      stack_.push_back(memo_get(le(4)));
      return true;
    case 'c': {  // GLOBAL
      const std::string module = line();
      const std::string name = line();
      stack_.push_back(resolve_global(arena_, module, name));
      return true;
    }
    case 0x93: {  // STACK_GLOBAL
      Object* name = pop();
      Object* module = pop();
      if (module->kind != Kind::Str || name->kind != Kind::Str)
        fail("STACK_GLOBAL needs two strs, not ", kind_name(module->kind), " and ",
             kind_name(name->kind));
      stack_.push_back(resolve_global(arena_, module->str, name->str));
      return true;
    }
    case 'R':     // REDUCE
    case 0x81: {  // NEWOBJ
      Object* args = pop();
      Object* callable = pop();
      stack_.push_back(call_global(arena_, *callable, *args));
      return true;
    }
    case 'b': {  // BUILD
      Object* state = pop();
      build(*top(), *state);
      return true;
    }
    case 'Q': {  // BINPERSID
      Object* pid = pop();
      stack_.push_back(persistent_load(arena_, *pid));
      return true;
    }
    default:
      return false;
  }
}

const Object* Machine::run() {
  for (;;) {
    op_pos_ = pos_;
    const uint8_t op = *take(1);
    if (op == '.') break;  // STOP
    if (!control(op) && !scalar(op) && !container(op) && !object(op))
      fail("unsupported opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15],
           op >= 0x20 && op < 0x7f ? std::string(" '") + char(op) + "'" : std::string(),
           " (weft reads the binary pickle protocols 2-5 that torch.save writes)");
  }
  return pop();
}

}  // namespace

const char* dtype_name(DType d) {
  static const char* const names[] = {"float32", "float64", "float16", "bfloat16", "int64",
                                      "int32",   "int16",   "int8",    "uint8",    "bool"};
  return names[static_cast<int>(d)];
}

size_t dtype_itemsize(DType d) {
  static const size_t sizes[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};
  return sizes[static_cast<int>(d)];
}

const char* kind_name(Kind k) {
  static const char* const names[] = {"None",   "a bool",   "an int",    "a float",
                                      "a str",  "bytes",    "a tuple",   "a list",
                                      "a dict", "a global", "a storage", "a tensor"};
  return names[static_cast<int>(k)];
}

Unpickled unpickle(const uint8_t* data, size_t size, const Limits& limits) {
  Unpickled out;
  Machine m(data, size, limits, out);
  out.root = m.run();
  out.end = m.position();
  return out;
}

}  // namespace weft::serialize::pickle
