// The object collectives' encoding checks and byte transport
// (weft/distributed/object_collectives.h): byte strings move as int64 tensors (a dtype every
// backend moves), lengths first.
#include "weft/distributed/object_collectives.h"

#include <algorithm>
#include <cstring>

#include "weft/distributed/nccl/process_group_nccl.h"
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

// Where the group's collectives take their tensors.
Device comm_device(ProcessGroup& pg) {
  if (auto* nccl = dynamic_cast<ProcessGroupNCCL*>(&pg.backend()))
    return Device::CUDA(nccl->device());
  return Device::CPU();
}

Tensor on(const Tensor& t, Device d) { return t.device() == d ? t : t.to(d); }

Tensor pack(const std::string& s, int64_t words, Device d = Device::CPU()) {
  Tensor t = zeros({words}, {.dtype = kInt64});
  std::copy(s.begin(), s.end(), reinterpret_cast<char*>(t.data_ptr<int64_t>()));
  return on(t, d);
}

Tensor empty_on(int64_t n, Device d) { return on(make_empty({n}, kInt64), d); }

std::string unpack(const Tensor& t, int64_t n) {
  const Tensor c = on(t, Device::CPU()).contiguous();
  const char* p = reinterpret_cast<const char*>(c.data_ptr<int64_t>());
  return std::string(p, p + n);
}

int64_t first(const Tensor& t) { return on(t, Device::CPU()).to_vector_int64()[0]; }

int64_t words_for(int64_t bytes) { return std::max<int64_t>(1, (bytes + 7) / 8); }

}  // namespace

void check_object_list(const char* op, size_t have, size_t want) {
  WEFT_CHECK_DIST(have == want, op, ": object list has ", have, " entries; expected ", want);
}

std::string broadcast_bytes(ProcessGroup& pg, const std::string& s, int root) {
  const Device d = comm_device(pg);
  Tensor len = on(tensor(std::vector<int64_t>{static_cast<int64_t>(s.size())}, {1}), d);
  pg.broadcast({len}, root)->wait();
  const int64_t n = first(len);
  Tensor bytes = pack(pg.rank() == root ? s : std::string(), words_for(n), d);
  pg.broadcast({bytes}, root)->wait();
  return unpack(bytes, n);
}

std::vector<std::string> all_gather_bytes(ProcessGroup& pg, const std::string& mine) {
  const Device d = comm_device(pg);
  Tensor len = on(tensor(std::vector<int64_t>{static_cast<int64_t>(mine.size())}, {1}), d);
  Tensor lens = empty_on(pg.size(), d);
  pg.allgather_into_tensor(lens, len)->wait();
  const auto l = on(lens, Device::CPU()).to_vector_int64();
  const int64_t words = words_for(*std::max_element(l.begin(), l.end()));
  Tensor all = empty_on(pg.size() * words, d);
  pg.allgather_into_tensor(all, pack(mine, words, d))->wait();
  const Tensor host = on(all, Device::CPU());
  std::vector<std::string> out;
  for (int r = 0; r < pg.size(); ++r) out.push_back(unpack(host.narrow(0, r * words, words), l[r]));
  return out;
}

std::vector<std::string> gather_bytes(ProcessGroup& pg, const std::string& mine, int root) {
  // Every rank learns the longest, so all send buffers of one size; then one gather.
  const Device d = comm_device(pg);
  Tensor longest = on(tensor(std::vector<int64_t>{static_cast<int64_t>(mine.size())}, {1}), d);
  pg.allreduce({longest}, ReduceOp::MAX)->wait();
  const int64_t words = words_for(first(longest)) + 1;  // word 0: the length
  std::string framed(8, '\0');
  const auto len = static_cast<int64_t>(mine.size());
  std::memcpy(framed.data(), &len, sizeof len);
  Tensor buf = pack(framed + mine, words, d);
  std::vector<Tensor> outs;
  if (pg.rank() == root) {
    for (int r = 0; r < pg.size(); ++r) outs.push_back(empty_on(words, d));
  }
  pg.gather(outs, buf, root)->wait();
  std::vector<std::string> out;
  for (const Tensor& t : outs) {
    const int64_t n = first(t);
    WEFT_CHECK_DIST(n >= 0 && n <= (words - 1) * 8, "gather_object: a rank sent a bad length ", n);
    out.push_back(unpack(t, n + 8).substr(8));
  }
  return out;
}

}  // namespace detail

}  // namespace weft::dist
