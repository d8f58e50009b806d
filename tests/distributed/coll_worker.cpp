// coll_worker: one rank of the tests of torch.distributed's whole collective API
// (tests/test_collectives_api.cpp starts it under weft-run or mpirun). argv[1] is the scenario,
// argv[2] the backend ("gloo", "mpi", or "" to pick). Every result is checked against a closed
// form over the ranks' values; "FAIL: ..." and exit 1 on a mismatch, "OK ..." on success.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "weft/distributed/distributed.h"
#include "weft/distributed/object_collectives.h"
#include "weft/distributed/p2p.h"
#include "weft/tensor.h"
#include "worker_check.h"

using namespace weft;
using namespace weft::dist;
using weft::test::fail;
using weft::test::g_rank;

namespace {

std::string g_backend;

InitOptions options() {
  InitOptions o;
  o.backend = g_backend;
  const char* t = std::getenv("WEFT_TEST_TIMEOUT_MS");
  o.timeout = Duration(t ? std::stoll(t) : 60000);
  return o;
}

// Rank q's value at element i (q a global rank), and an int64 pattern for the bitwise ops.
float f(int q, int64_t i) { return static_cast<float>((q * 7 + i * 3) % 11) - 5.0f + 0.25f * q; }
int64_t bits(int q, int64_t i) { return (int64_t{0x5a5a} * (q + 3)) ^ (i << (q % 5)) ^ (q << 20); }

Tensor make_f(int q, int64_t n, int64_t offset = 0) {
  Tensor t = make_empty({n}, kFloat32);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = f(q, i + offset);
  return t;
}

Tensor make_bits(int q, int64_t n) {
  Tensor t = make_empty({n}, kInt64);
  for (int64_t i = 0; i < n; ++i) t.data_ptr<int64_t>()[i] = bits(q, i);
  return t;
}

void expect_close(const Tensor& t, const std::function<double(int64_t)>& want,
                  const std::string& what) {
  auto v = t.contiguous().to_vector_float();
  for (size_t i = 0; i < v.size(); ++i) {
    const double w = want(static_cast<int64_t>(i));
    if (std::abs(v[i] - w) > 1e-4 * (1 + std::abs(w)))
      fail(what + ": element " + std::to_string(i) + " is " + std::to_string(v[i]) + ", want " +
           std::to_string(w));
  }
}

void expect_ints(const Tensor& t, const std::function<int64_t(int64_t)>& want,
                 const std::string& what) {
  auto v = t.to_vector_int64();
  for (size_t i = 0; i < v.size(); ++i)
    EXPECT(v[i] == want(static_cast<int64_t>(i)), what, ": element ", i, " is ", v[i], ", want ",
           want(static_cast<int64_t>(i)));
}

// The reduction over `ranks` of value(q) (ranks are global).
double fold(ReduceOp op, const std::vector<int>& ranks, const std::function<double(int)>& value) {
  double s = 0, mx = -1e30, mn = 1e30;
  for (int q : ranks) {
    s += value(q);
    mx = std::max(mx, value(q));
    mn = std::min(mn, value(q));
  }
  return op == ReduceOp::SUM   ? s
         : op == ReduceOp::AVG ? s / ranks.size()
         : op == ReduceOp::MAX ? mx
                               : mn;
}

int64_t fold_bits(ReduceOp op, const std::vector<int>& ranks, int64_t i) {
  int64_t acc = bits(ranks[0], i);
  for (size_t j = 1; j < ranks.size(); ++j) {
    const int64_t b = bits(ranks[j], i);
    acc = op == ReduceOp::BAND ? (acc & b) : op == ReduceOp::BOR ? (acc | b) : (acc ^ b);
  }
  return acc;
}

template <typename F>
std::string dist_error_of(F&& fn, const std::string& what) {
  try {
    fn();
  } catch (const DistError& e) {
    return e.what();
  }
  fail(what + ": did not throw DistError");
}

void expect_has(const std::string& m, const std::string& part) {
  EXPECT(m.find(part) != std::string::npos, "message lacks '", part, "': ", m);
}

// Every op on group g (global ranks `ranks`; this rank is ranks[gr]).
void rooted_ops(const std::shared_ptr<ProcessGroup>& g, const std::vector<int>& ranks, int gr) {
  const int m = static_cast<int>(ranks.size()), me = ranks[gr];
  const std::string where = " on a group of " + std::to_string(m);
  const int dst = ranks[m - 1], mid = ranks[m / 2];
  for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX, ReduceOp::MIN}) {
    Tensor t = make_f(me, 29);
    reduce(t, dst, op, g);
    if (me == dst)
      expect_close(
          t, [&](int64_t i) { return fold(op, ranks, [&](int q) { return f(q, i); }); },
          "reduce " + to_string(op) + where);
  }
  for (ReduceOp op : {ReduceOp::BAND, ReduceOp::BOR, ReduceOp::BXOR}) {
    Tensor t = make_bits(me, 19), a = make_bits(me, 19);
    reduce(t, mid, op, g);
    if (me == mid)
      expect_ints(
          t, [&](int64_t i) { return fold_bits(op, ranks, i); }, "reduce " + to_string(op));
    all_reduce(a, op, g);
    expect_ints(
        a, [&](int64_t i) { return fold_bits(op, ranks, i); },
        "all_reduce " + to_string(op) + where);
  }
  // gather to the middle rank, scatter from the last.
  std::vector<Tensor> list;
  if (me == mid)
    for (int j = 0; j < m; ++j) list.push_back(make_empty({2, 3}, kFloat32));
  gather(make_f(me, 6).view({2, 3}), list, mid, g);
  for (int j = 0; j < static_cast<int>(list.size()); ++j)
    expect_close(
        list[j], [&](int64_t i) { return f(ranks[j], i); }, "gather from " + std::to_string(j));
  list.clear();
  if (me == dst)
    for (int j = 0; j < m; ++j) list.push_back(make_f(dst, 7, 100 * j));
  Tensor out = make_empty({7}, kFloat32);
  scatter(out, list, dst, g);
  expect_close(
      out, [&](int64_t i) { return f(dst, i + 100 * gr); }, "scatter" + where);
}

void tensor_ops(const std::shared_ptr<ProcessGroup>& g, const std::vector<int>& ranks, int gr) {
  const int m = static_cast<int>(ranks.size()), me = ranks[gr];
  const std::string where = " on a group of " + std::to_string(m);
  Tensor big = make_empty({m * 2, 3}, kFloat32);
  all_gather_into_tensor(big, make_f(me, 6).view({2, 3}), g);
  for (int j = 0; j < m; ++j)
    expect_close(
        big.narrow(0, 2 * j, 2), [&](int64_t i) { return f(ranks[j], i); },
        "all_gather_into_tensor block " + std::to_string(j) + where);
  // reduce_scatter_tensor: rank q's input is f(q, i); block gr of the reduction lands here.
  for (int64_t len : {5, 7777})
    for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX}) {
      Tensor o = make_empty({len}, kFloat32);
      reduce_scatter_tensor(o, make_f(me, m * len), op, g);
      expect_close(
          o, [&](int64_t i) { return fold(op, ranks, [&](int q) { return f(q, gr * len + i); }); },
          "reduce_scatter_tensor " + to_string(op) + " len " + std::to_string(len) + where);
    }
  {
    Tensor o = make_empty({4}, kInt64);
    reduce_scatter_tensor(o, make_bits(me, 4 * m), ReduceOp::BXOR, g);
    expect_ints(
        o, [&](int64_t i) { return fold_bits(ReduceOp::BXOR, ranks, gr * 4 + i); },
        "reduce_scatter_tensor BXOR");
  }
  // allreduce_into (not a torch.distributed op; Note [All-reduce into a separate output]): the
  // result in the output, through shared memory, Gloo alone, or MPI (the base class's copy).
  for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX}) {
    Tensor o = make_empty({7777}, kFloat32);
    g->allreduce_into(o, make_f(me, 7777), op)->wait();
    expect_close(
        o, [&](int64_t i) { return fold(op, ranks, [&](int q) { return f(q, i); }); },
        "allreduce_into " + to_string(op) + where);
  }
  // The list form too (Gloo: its own reduce-scatter where there is no shared memory).
  {
    std::vector<Tensor> ins;
    for (int j = 0; j < m; ++j) ins.push_back(make_f(me, 6, 50 * j));
    Tensor o = make_empty({6}, kFloat32);
    reduce_scatter(o, ins, ReduceOp::SUM, g);
    expect_close(
        o,
        [&](int64_t i) {
          return fold(ReduceOp::SUM, ranks, [&](int q) { return f(q, 50 * gr + i); });
        },
        "reduce_scatter list" + where);
  }
}

// all_to_all_single with uneven splits (some empty) and even ones; all_to_all of lists.
void alltoall_ops(const std::shared_ptr<ProcessGroup>& g, const std::vector<int>& ranks, int gr) {
  const int m = static_cast<int>(ranks.size()), me = ranks[gr];
  auto rows = [](int q, int j) -> int64_t { return (q + 2 * j) % 3; };  // q sends j that many
  auto value = [](int q, int j, int64_t k, int64_t c) -> int64_t {
    return q * 1000 + j * 100 + k * 10 + c;
  };
  std::vector<int64_t> in_splits, out_splits;
  int64_t in_rows = 0, out_rows = 0;
  for (int j = 0; j < m; ++j) {
    in_splits.push_back(rows(me, j));
    out_splits.push_back(rows(ranks[j], gr));
    in_rows += in_splits.back();
    out_rows += out_splits.back();
  }
  Tensor in = make_empty({in_rows, 2}, kInt64), out = make_empty({out_rows, 2}, kInt64);
  int64_t at = 0;
  for (int j = 0; j < m; ++j)
    for (int64_t k = 0; k < in_splits[j]; ++k, ++at)
      for (int c = 0; c < 2; ++c) in.data_ptr<int64_t>()[at * 2 + c] = value(me, j, k, c);
  auto w = all_to_all_single(out, in, out_splits, in_splits, g, /*async_op=*/true);
  w->wait();
  at = 0;
  for (int j = 0; j < m; ++j)
    for (int64_t k = 0; k < out_splits[j]; ++k, ++at)
      for (int c = 0; c < 2; ++c)
        EXPECT(out.data_ptr<int64_t>()[at * 2 + c] == value(ranks[j], gr, k, c),
               "all_to_all_single uneven: from ", j, " row ", k);
  Tensor even_in = make_f(me, 3 * m), even_out = make_empty({3 * m}, kFloat32);
  all_to_all_single(even_out, even_in, {}, {}, g);
  expect_close(
      even_out, [&](int64_t i) { return f(ranks[i / 3], gr * 3 + i % 3); },
      "all_to_all_single even");
  std::vector<Tensor> ins, outs;
  for (int j = 0; j < m; ++j) {
    ins.push_back(make_f(me, (me + j) % 3 + 1, 10 * j));
    outs.push_back(make_empty({(ranks[j] + gr) % 3 + 1}, kFloat32));
  }
  all_to_all(outs, ins, g);
  for (int j = 0; j < m; ++j)
    expect_close(
        outs[j], [&](int64_t i) { return f(ranks[j], i + 10 * gr); },
        "all_to_all from " + std::to_string(j));
}

// A ring: to the next rank, from the previous; tags matched out of order; blocking pairs.
void p2p_ops(const std::shared_ptr<ProcessGroup>& g, const std::vector<int>& ranks, int gr) {
  const int m = static_cast<int>(ranks.size()), me = ranks[gr];
  if (m < 2) return;
  const int next = ranks[(gr + 1) % m], prev = ranks[(gr + m - 1) % m];
  Tensor a = make_f(me, 11, 1), b = make_f(me, 5, 2);
  Tensor ra = make_empty({11}, kFloat32), rb = make_empty({5}, kFloat32);
  auto rw_b = irecv(rb, prev, g, 7);  // posted first, matched by tag
  auto rw_a = irecv(ra, prev, g, 5);
  auto sa = isend(a, next, g, 5);
  auto sb = isend(b, next, g, 7);
  for (auto& w : {rw_a, rw_b, sa, sb}) w->wait();
  expect_close(
      ra, [&](int64_t i) { return f(prev, i + 1); }, "irecv tag 5");
  expect_close(
      rb, [&](int64_t i) { return f(prev, i + 2); }, "irecv tag 7");
  Tensor c = make_bits(me, 9), rc = make_empty({9}, kInt64);
  auto works = batch_isend_irecv({P2POp(irecv, rc, prev, g), P2POp(isend, c, next, g)});
  for (auto& w : works) w->wait();
  expect_ints(
      rc, [&](int64_t i) { return bits(prev, i); }, "batch_isend_irecv");
  // Blocking: even group ranks send first, odd ones receive first (pairs 0-1, 2-3, ...).
  if (gr + 1 < m || gr % 2 == 1) {
    const int peer = ranks[gr % 2 == 0 ? gr + 1 : gr - 1];
    Tensor s = make_f(me, 4, 9), r2 = make_empty({4}, kFloat32);
    if (gr % 2 == 0) {
      send(s, peer, g);
      EXPECT(recv(r2, peer, g) == peer, "recv's source");
    } else {
      recv(r2, peer, g);
      send(s, peer, g);
    }
    expect_close(
        r2, [&](int64_t i) { return f(peer, i + 9); }, "blocking send/recv");
  }
}

void object_ops(const std::shared_ptr<ProcessGroup>& g, const std::vector<int>& ranks, int gr) {
  const int m = static_cast<int>(ranks.size()), me = ranks[gr];
  using Obj = std::map<std::string, std::vector<int64_t>>;
  auto obj_of = [](int q) {
    return Obj{{"rank", {q}}, {"squares" + std::to_string(q), {q * q, q * q * q, -q}}};
  };
  std::vector<Obj> all(m);
  all_gather_object(all, obj_of(me), g);
  for (int j = 0; j < m; ++j) EXPECT(all[j] == obj_of(ranks[j]), "all_gather_object ", j);
  const int src = ranks[m - 1];
  std::vector<std::string> names = {"", "", ""};
  if (me == src) names = {"from " + std::to_string(src), std::string(1000, 'x'), ""};
  broadcast_object_list(names, src, g);
  EXPECT(names[0] == "from " + std::to_string(src) && names[1] == std::string(1000, 'x') &&
             names[2].empty(),
         "broadcast_object_list");
  using P = std::pair<std::string, double>;
  std::vector<P> got(m);
  gather_object(P{std::string(me + 1, 'a' + me), me * 0.5}, me == ranks[0] ? &got : nullptr,
                ranks[0], g);
  if (me == ranks[0])
    for (int j = 0; j < m; ++j)
      EXPECT(got[j] == P(std::string(ranks[j] + 1, 'a' + ranks[j]), ranks[j] * 0.5),
             "gather_object ", j);
}

void run_suite(const std::shared_ptr<ProcessGroup>& g) {
  const std::vector<int> ranks = get_process_group_ranks(g);
  const int gr = g->rank();
  rooted_ops(g, ranks, gr);
  tensor_ops(g, ranks, gr);
  alltoall_ops(g, ranks, gr);
  p2p_ops(g, ranks, gr);
  object_ops(g, ranks, gr);
  monitored_barrier(g, Duration(60000), true);
}

void all() {
  init_process_group(options());
  const int r = get_rank(), n = get_world_size();
  g_rank = r;
  run_suite(default_group());
  // Subgroups: pairs where the world is even, else groups of one; PyTorch's new_subgroups.
  const int gs = n % 2 == 0 ? 2 : 1;
  Subgroups sub = new_subgroups(gs);
  EXPECT(static_cast<int>(sub.all.size()) == n / gs && sub.mine, "new_subgroups count");
  std::vector<int> want;
  for (int q = r / gs * gs; q < r / gs * gs + gs; ++q) want.push_back(q);
  EXPECT(get_process_group_ranks(sub.mine) == want, "new_subgroups members");
  for (int k = 0; k < n / gs; ++k)
    EXPECT((sub.all[k] == sub.mine) == (k == r / gs), "subgroup ", k);
  run_suite(sub.mine);
  // The ranks of the odd one out in a 2-rank group of the first and last rank, as new_group.
  auto ends = new_group({0, n - 1});
  if (ends) run_suite(ends);
  run_suite(default_group());
  std::printf("OK rank=%d size=%d backend=%s\n", r, n, default_group()->backend_name().c_str());
  std::fflush(stdout);
  sub = {};
  ends.reset();
  destroy_process_group();
}

// Bad arguments: each refused at the call with a message naming what is wrong; the group
// still works afterwards (the refused calls gave their sequence numbers back).
void errors() {
  init_process_group(options());
  const int r = get_rank(), n = get_world_size();
  g_rank = r;
  std::string m = dist_error_of([&] { all_gather_into_tensor(make_f(r, 5), make_f(r, 3)); }, "ag");
  expect_has(m, "allgather_into_tensor");
  expect_has(m, "must hold world size (" + std::to_string(n) + ") times the input's 3 elements");
  m = dist_error_of([&] { reduce_scatter_tensor(make_f(r, 3), make_f(r, 3 * n + 1)); }, "rs");
  expect_has(m, "reduce_scatter_tensor(SUM)");
  m = dist_error_of(
      [&] { all_to_all_single(make_f(r, n), make_f(r, n), {}, std::vector<int64_t>(n, 2)); },
      "splits");
  expect_has(m, "input_split_sizes sum to " + std::to_string(2 * n) + " but input");
  m = dist_error_of([&] { all_to_all_single(make_f(r, n + 1), make_f(r, n)); }, "even split");
  expect_has(m, "not divisible by the group size");
  m = dist_error_of([&] { all_reduce(make_f(r, 3), ReduceOp::BAND); }, "BAND on float");
  expect_has(m, "ReduceOp BAND needs an integer tensor, got float32");
  m = dist_error_of([&] { reduce(make_f(r, 3), n + 5); }, "dst");
  expect_has(m, "reduce: dst " + std::to_string(n + 5) + " is not a rank of the group");
  m = dist_error_of([&] { gather(make_f(r, 3), {make_f(r, 3)}, r == 0 ? 1 : 0); }, "gather list");
  expect_has(m, "must be empty on a non-root rank");
  m = dist_error_of([&] { isend(make_f(r, 3), r); }, "send to self");
  expect_has(m, "is this rank itself");
  m = dist_error_of([&] { (void)decode_object<int>(encode_object(std::string("x")), "rank 1"); },
                    "decode");
  expect_has(m,
             "cannot decode the object from rank 1: expected a signed integer but found a string");
  m = dist_error_of([&] { (void)decode_object<int8_t>(encode_object(1000)); }, "range");
  expect_has(m, "does not fit");
  std::vector<int> short_list(n + 1);
  m = dist_error_of([&] { all_gather_object(short_list, 1); }, "object list");
  expect_has(m, "all_gather_object: object list has");
  m = dist_error_of([&] { new_subgroups(n + 1); }, "subgroups");
  expect_has(m, "must be positive and divide the world size");
  Tensor t = make_f(r, 4);
  all_reduce(t);
  expect_close(
      t,
      [&](int64_t i) {
        double s = 0;
        for (int q = 0; q < n; ++q) s += f(q, i);
        return s;
      },
      "all_reduce after refused calls");
  std::printf("OK rank=%d errors\n", r);
  std::fflush(stdout);
  destroy_process_group();
}

// The last rank leaves after a barrier; the others' next `op` fails naming it and the peer.
void dead(const std::string& op) {
  init_process_group(options());
  const int r = get_rank(), n = get_world_size();
  g_rank = r;
  barrier();
  if (r == n - 1) {
    std::fflush(stdout);
    std::_Exit(0);
  }
  std::string m = dist_error_of(
      [&] {
        if (op == "reduce_scatter_tensor") {
          reduce_scatter_tensor(make_f(r, 1000), make_f(r, 1000 * n));
        } else if (op == "all_to_all_single") {
          all_to_all_single(make_f(r, 10 * n), make_f(r, 10 * n));
        } else if (op == "gather") {
          std::vector<Tensor> l;
          if (r == 0)
            for (int q = 0; q < n; ++q) l.push_back(make_f(r, 100));
          gather(make_f(r, 100), l, 0);
          if (r != 0) reduce(make_f(r, 100), n - 1);  // non-roots may finish: then this fails
        } else if (op == "recv") {
          recv(make_f(r, 100), n - 1);
        }
      },
      op + " with a dead peer");
  std::printf("DISTERROR: %s\nOK rank=%d\n", m.c_str(), r);
  std::fflush(stdout);
  std::_Exit(0);
}

// The last rank (the last two with wait_all) skip the barrier: they wait on a receive from rank
// 0 instead, which fails once rank 0 has reported them and left (no sleep, no deadline).
void monitored(bool wait_all) {
  init_process_group(options());
  const int r = get_rank(), n = get_world_size();
  g_rank = r;
  barrier();
  std::vector<int> missing = wait_all ? std::vector<int>{n - 2, n - 1} : std::vector<int>{n - 1};
  if (std::find(missing.begin(), missing.end(), r) != missing.end()) {
    Tensor never = make_empty({1}, kInt64);
    dist_error_of([&] { recv(never, 0, {}, 99); }, "rank 0 leaving");
    std::printf("OK rank=%d (missing)\n", r);
  } else {
    std::string m = dist_error_of([&] { monitored_barrier({}, Duration(15000), wait_all); },
                                  "monitored_barrier");
    std::printf("DISTERROR: %s\nOK rank=%d\n", m.c_str(), r);
  }
  std::fflush(stdout);
  std::_Exit(0);
}

// WEFT_DISTRIBUTED_DEBUG=DETAIL: the last rank's all_gather_into_tensor has another size.
void mismatch() {
  init_process_group(options());
  const int r = get_rank(), n = get_world_size();
  g_rank = r;
  const int64_t k = r == n - 1 ? 4 : 3;
  std::string m = dist_error_of([&] { all_gather_into_tensor(make_f(r, k * n), make_f(r, k)); },
                                "mismatched sizes");
  std::printf("DISTERROR: %s\nOK rank=%d\n", m.c_str(), r);
  std::fflush(stdout);
  std::_Exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  g_backend = argc > 2 ? argv[2] : "";
  try {
    if (scenario == "all") {
      all();
    } else if (scenario == "errors") {
      errors();
    } else if (scenario == "dead") {
      dead(argc > 3 ? argv[3] : "");
    } else if (scenario == "monitored" || scenario == "monitored_all") {
      monitored(scenario == "monitored_all");
    } else if (scenario == "mismatch") {
      mismatch();
    } else {
      fail("unknown scenario '" + scenario + "'");
    }
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::fflush(stdout);
  return 0;
}
