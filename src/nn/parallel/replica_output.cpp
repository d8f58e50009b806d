// Note [Replica output]: std::cout's and std::cerr's stream buffers are wrapped, once, by a line
// assembler. Threads outside a replica pass straight through to the original buffer; a replica
// thread's text collects in its scope until a newline, and each run of whole lines goes to the
// original buffer in one write, under a lock shared with the pass-through writes.
#include "nn/parallel/replica_output.h"

#include <iostream>
#include <mutex>
#include <streambuf>

namespace weft::nn::parallel::detail {

namespace {

thread_local std::string* t_pending[2] = {nullptr, nullptr};

class LineAssembler : public std::streambuf {
 public:
  LineAssembler(std::streambuf* inner, int slot) : inner_(inner), slot_(slot) {}

  // Writes a replica's held text (whole lines, or what is left at the end of its scope).
  void emit(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    inner_->sputn(text.data(), static_cast<std::streamsize>(text.size()));
  }

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }

  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::string* held = t_pending[slot_];
    if (!held) {
      std::lock_guard<std::mutex> lock(mu_);
      return inner_->sputn(s, n);
    }
    held->append(s, static_cast<size_t>(n));
    const size_t nl = held->rfind('\n');
    if (nl != std::string::npos) {
      emit(held->substr(0, nl + 1));
      held->erase(0, nl + 1);
    }
    return n;
  }

  // A flush (std::cerr flushes after every <<) keeps a replica's unfinished line: the line is
  // written when it ends, or when the replica does.
  int sync() override {
    std::lock_guard<std::mutex> lock(mu_);
    return inner_->pubsync();
  }

 private:
  std::streambuf* inner_;
  const int slot_;
  std::mutex mu_;
};

// Never destroyed: std::cout and std::cerr use them until the very end of the process.
LineAssembler* g_assemblers[2] = {nullptr, nullptr};

void install() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_assemblers[0] = new LineAssembler(std::cout.rdbuf(), 0);
    g_assemblers[1] = new LineAssembler(std::cerr.rdbuf(), 1);
    std::cout.rdbuf(g_assemblers[0]);
    std::cerr.rdbuf(g_assemblers[1]);
  });
}

}  // namespace

ReplicaOutputScope::ReplicaOutputScope() {
  install();
  for (int i = 0; i < 2; ++i) {
    previous_[i] = t_pending[i];
    t_pending[i] = &pending_[i];
  }
}

ReplicaOutputScope::~ReplicaOutputScope() {
  for (int i = 0; i < 2; ++i) {
    t_pending[i] = previous_[i];
    if (!pending_[i].empty()) g_assemblers[i]->emit(pending_[i]);
  }
}

}  // namespace weft::nn::parallel::detail
