// The object collectives' encoding checks and byte transport
// (weft/distributed/object_collectives.h): byte strings move as int64 tensors (a dtype every
// backend moves), lengths first.
#include "weft/distributed/object_collectives.h"

#include <algorithm>

#include "weft/ops.h"

namespace weft::dist {

namespace obj {

const char* tag_name(Tag t) {
  switch (t) {
    case Tag::BOOL:
      return "bool";
    case Tag::INT:
      return "signed integer";
    case Tag::UINT:
      return "unsigned integer";
    case Tag::FLOAT:
      return "floating-point number";
    case Tag::STRING:
      return "string";
    case Tag::VECTOR:
      return "vector";
    case Tag::MAP:
      return "map";
    case Tag::PAIR:
      return "pair";
  }
  return "unknown value";
}

void Reader::need(size_t n) {
  WEFT_CHECK_DIST(s_.size() - pos_ >= n, "the encoding ends early (byte ", pos_, " of ", s_.size(),
                  ", ", n, " more needed)");
}

void Reader::expect(Tag t) {
  need(1);
  const auto got = static_cast<Tag>(static_cast<uint8_t>(s_[pos_]));
  WEFT_CHECK_DIST(got == t, "expected a ", tag_name(t), " but found a ", tag_name(got), " (tag ",
                  static_cast<int>(got), ") at byte ", pos_);
  ++pos_;
}

uint64_t Reader::count() {
  const uint64_t n = raw<uint64_t>();
  // Every element takes at least its tag byte: a longer count cannot be genuine.
  WEFT_CHECK_DIST(n <= s_.size() - pos_, "a length of ", n, " exceeds the ", s_.size() - pos_,
                  " bytes left at byte ", pos_);
  return n;
}

std::string Reader::bytes() {
  const uint64_t n = count();
  std::string out = s_.substr(pos_, n);
  pos_ += n;
  return out;
}

void out_of_range(const char* type, const std::string& value) {
  WEFT_DIST_ERROR(type, " ", value, " does not fit the requested type");
}

void check_consumed(const Reader& r, const std::string& from) {
  WEFT_CHECK_DIST(r.at_end(), "object from ", from,
                  ": bytes are left after the value (the ranks disagree on the object's type?)");
}

void rethrow_decode(const std::exception& e, const std::string& from) {
  WEFT_DIST_ERROR("object collective: cannot decode the object from ", from, ": ", e.what());
}

}  // namespace obj

namespace detail {

namespace {

Tensor pack(const std::string& s, int64_t words) {
  Tensor t = zeros({words}, {.dtype = kInt64});
  std::copy(s.begin(), s.end(), reinterpret_cast<char*>(t.data_ptr<int64_t>()));
  return t;
}

std::string unpack(const Tensor& t, int64_t n) {
  const char* p = reinterpret_cast<const char*>(t.data_ptr<int64_t>());
  return std::string(p, p + n);
}

int64_t words_for(int64_t bytes) { return std::max<int64_t>(1, (bytes + 7) / 8); }

}  // namespace

void check_object_list(const char* op, size_t have, size_t want) {
  WEFT_CHECK_DIST(have == want, op, ": object list has ", have, " entries; expected ", want);
}

std::string broadcast_bytes(ProcessGroup& pg, const std::string& s, int root) {
  Tensor len = tensor(std::vector<int64_t>{static_cast<int64_t>(s.size())}, {1});
  pg.broadcast({len}, root)->wait();
  const int64_t n = len.item<int64_t>();
  Tensor bytes = pack(pg.rank() == root ? s : std::string(), words_for(n));
  pg.broadcast({bytes}, root)->wait();
  return unpack(bytes, n);
}

std::vector<std::string> all_gather_bytes(ProcessGroup& pg, const std::string& mine) {
  Tensor len = tensor(std::vector<int64_t>{static_cast<int64_t>(mine.size())}, {1});
  Tensor lens = make_empty({pg.size()}, kInt64);
  pg.allgather_into_tensor(lens, len)->wait();
  const auto l = lens.to_vector_int64();
  const int64_t words = words_for(*std::max_element(l.begin(), l.end()));
  Tensor all = make_empty({pg.size() * words}, kInt64);
  pg.allgather_into_tensor(all, pack(mine, words))->wait();
  std::vector<std::string> out;
  for (int r = 0; r < pg.size(); ++r) out.push_back(unpack(all.narrow(0, r * words, words), l[r]));
  return out;
}

std::vector<std::string> gather_bytes(ProcessGroup& pg, const std::string& mine, int root) {
  // Every rank learns the longest, so all send buffers of one size; then one gather.
  Tensor longest = tensor(std::vector<int64_t>{static_cast<int64_t>(mine.size())}, {1});
  pg.allreduce({longest}, ReduceOp::MAX)->wait();
  const int64_t words = words_for(longest.item<int64_t>()) + 1;  // word 0: the length
  Tensor buf = pack(std::string(8, '\0') + mine, words);
  buf.data_ptr<int64_t>()[0] = static_cast<int64_t>(mine.size());
  std::vector<Tensor> outs;
  if (pg.rank() == root) {
    for (int r = 0; r < pg.size(); ++r) outs.push_back(make_empty({words}, kInt64));
  }
  pg.gather(outs, buf, root)->wait();
  std::vector<std::string> out;
  for (const Tensor& t : outs) {
    const int64_t n = t.data_ptr<int64_t>()[0];
    WEFT_CHECK_DIST(n >= 0 && n <= (words - 1) * 8, "gather_object: a rank sent a bad length ", n);
    out.push_back(unpack(t, n + 8).substr(8));
  }
  return out;
}

}  // namespace detail

}  // namespace weft::dist
