// Whole lines from DataParallel's replica threads (Note [Replica output]): while a
// ReplicaOutputScope is alive, what its thread writes to std::cout and std::cerr is held until a
// newline and then written in one piece, so that a line printed in several << steps (or a
// multi-line tensor) from one replica never has another replica's text inside it.
#pragma once

#include <string>

namespace weft::nn::parallel::detail {

class ReplicaOutputScope {
 public:
  ReplicaOutputScope();   // installs the line assembler on std::cout and std::cerr (once)
  ~ReplicaOutputScope();  // writes what is left of an unfinished line
  ReplicaOutputScope(const ReplicaOutputScope&) = delete;
  ReplicaOutputScope& operator=(const ReplicaOutputScope&) = delete;

 private:
  std::string pending_[2];    // this thread's unfinished line, for std::cout and std::cerr
  std::string* previous_[2];  // an enclosing scope's (nested DataParallel), restored after
};

}  // namespace weft::nn::parallel::detail
