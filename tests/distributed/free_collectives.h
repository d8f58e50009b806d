// pg_worker's "free_collectives" scenario: torch.distributed's free functions (dist::all_reduce,
// broadcast, all_gather, reduce_scatter, barrier) on the default group and on a subgroup of
// global ranks {1, n-1}, checked against closed forms; non-members' calls do nothing; bad
// arguments are DistErrors naming what is wrong. Needs a world of at least 3.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "weft/distributed/distributed.h"
#include "worker_check.h"

namespace weft::test {

inline Tensor filled(int64_t n, double v) {
  Tensor t = make_empty({n}, kFloat32);
  t.fill_(v);
  return t;
}

inline void expect_all(const Tensor& t, double want, const std::string& what) {
  for (float v : t.contiguous().to_vector_float())
    EXPECT(std::abs(v - want) < 1e-5 * (1 + std::abs(want)), what, ": ", v, " want ", want);
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

inline void free_collectives(dist::InitOptions options) {
  using namespace weft::dist;
  init_process_group(options);
  const int r = get_rank(), n = get_world_size();
  g_rank = r;
  EXPECT(n >= 3, "the scenario needs 3 ranks, got ", n);
  const double sum = n * (n + 1) / 2.0;  // of rank + 1 over the ranks

  Tensor t = filled(5, r + 1);
  EXPECT(all_reduce(t)->is_completed(), "all_reduce returned before completing");
  expect_all(t, sum, "all_reduce SUM");
  t = filled(5, r + 1);
  auto w = all_reduce(t, ReduceOp::AVG, {}, /*async_op=*/true);
  w->wait();
  expect_all(t, sum / n, "all_reduce AVG async");
  t = filled(3, r + 1);
  all_reduce(t, ReduceOp::MAX, std::nullopt);
  expect_all(t, n, "all_reduce MAX");

  t = filled(4, r * 10);
  broadcast(t, n - 1);
  expect_all(t, (n - 1) * 10, "broadcast from the last rank");

  std::vector<Tensor> list;
  for (int q = 0; q < n; ++q) list.push_back(make_empty({2}, kFloat32));
  all_gather(list, filled(2, r * r))->wait();
  for (int q = 0; q < n; ++q) expect_all(list[q], q * q, "all_gather " + std::to_string(q));

  std::vector<Tensor> inputs;
  for (int q = 0; q < n; ++q) inputs.push_back(filled(3, r + 100 * q));  // block q from rank r
  Tensor out = make_empty({3}, kFloat32);
  reduce_scatter(out, inputs, ReduceOp::MAX);
  expect_all(out, (n - 1) + 100 * r, "reduce_scatter MAX");
  barrier();
  barrier({}, true)->wait();

  // A subgroup of global ranks 1 and n-1: broadcast's src is a global rank, as in PyTorch.
  auto sub = new_group({n - 1, 1});
  const bool member = r == 1 || r == n - 1;
  EXPECT(member == (sub != nullptr), "membership");
  t = filled(4, r + 1);
  if (member) {
    EXPECT(get_process_group_ranks(sub) == std::vector<int>({1, n - 1}), "subgroup ranks");
    broadcast(t, n - 1, sub);
    expect_all(t, n, "subgroup broadcast from global rank n-1");
    all_reduce(t, ReduceOp::SUM, sub);
    expect_all(t, 2 * n, "subgroup all_reduce");
    std::string m = dist_error_of([&] { broadcast(t, 0, sub); }, "src outside the group");
    EXPECT(m.find("src 0 is not a rank of the group (its global ranks: 1, " +
                  std::to_string(n - 1) + ")") != std::string::npos,
           m);
  } else {
    // A non-member's call does nothing and returns a completed Work, as PyTorch's.
    auto done = all_reduce(t, ReduceOp::SUM, sub, true);
    EXPECT(done && done->is_completed(), "a non-member's Work is not completed");
    done->wait();
    expect_all(t, r + 1, "non-member tensor unchanged");
    broadcast(t, n - 1, sub);
    barrier(sub);
  }
  EXPECT(get_process_group_ranks(default_group()) == std::vector<int>([&] {
           std::vector<int> all;
           for (int q = 0; q < n; ++q) all.push_back(q);
           return all;
         }()),
         "default group ranks");
  std::string m = dist_error_of([&] { all_gather({filled(2, 0)}, filled(2, 0)); }, "short list");
  EXPECT(m.find("all_gather: tensor_list has 1 tensors but the group has " + std::to_string(n) +
                " ranks") != std::string::npos,
         m);
  m = dist_error_of([&] { all_reduce(Tensor()); }, "undefined tensor");
  EXPECT(m.find("all_reduce: tensor is an undefined tensor") != std::string::npos, m);
  barrier();
  std::printf("OK rank=%d free collectives\n", r);
  sub.reset();
  destroy_process_group();
}

}  // namespace weft::test
