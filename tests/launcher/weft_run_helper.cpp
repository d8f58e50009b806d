// A stand-in training script for tests/test_launcher.cpp: one program with modes that print
// the launcher's environment, flood the output, fail on a chosen rank, sleep until killed,
// ignore SIGTERM, leave a grandchild behind, or fail until a given restart count.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : -1;
}

[[noreturn]] void sleep_forever() {
  for (;;) pause();
}

// Several write() calls per line, so a launcher that forwarded raw chunks would interleave.
void write_str(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n <= 0) std::exit(9);
    off += static_cast<size_t>(n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 64;
  std::string mode = argv[1];
  int rank = env_int("RANK");
  if (mode == "env") {
    for (const char* k :
         {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
          "GROUP_RANK", "TORCHELASTIC_RESTART_COUNT", "WEFT_RESTART_COUNT", "WEFT_RDZV_TIMEOUT",
          "WEFT_RUN_ID", "WEFT_STORE_TOKEN", "WEFT_STORE_LISTEN_FD", "WEFT_STDOUT_IS_TTY"}) {
      const char* v = std::getenv(k);
      std::printf("%s=%s\n", k, v ? v : "<unset>");
    }
    for (int i = 2; i < argc; ++i) std::printf("ARG%d=%s\n", i - 2, argv[i]);
    return 0;
  }
  if (mode == "bind") {  // rank 0 binds MASTER_ADDR:MASTER_PORT itself, as PyTorch's TCPStore does
    if (rank != 0) return 0;
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(env_int("MASTER_PORT")));
    inet_pton(AF_INET, std::getenv("MASTER_ADDR"), &a.sin_addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::printf("bind failed: %s\n", std::strerror(errno));
      return 1;
    }
    std::printf("bound\n");
    return 0;
  }
  if (mode == "redraw") {  // rank 0: a progress bar redrawn in place, then a last line
    // Other ranks print nothing: a whole line of theirs may land between rank 0's redraws.
    if (rank != 0) return 0;
    for (const char* piece : {"step 1\r", "step 2\r", "done\n"}) write_str(1, piece);
    return 0;
  }
  if (mode == "spam") {  // spam N: N lines on stdout and on stderr
    int n = argc > 2 ? std::atoi(argv[2]) : 1000;
    for (int i = 0; i < n; ++i) {
      for (int fd : {1, 2}) {
        write_str(fd, std::string(fd == 1 ? "out " : "err ") + std::to_string(rank) + " ");
        write_str(fd, std::to_string(i) + " ");
        write_str(fd, std::string(40, 'a' + static_cast<char>(rank % 26)) + "\n");
      }
    }
    return 0;
  }
  if (mode == "tail") {  // a last line without '\n'
    write_str(1, "complete\nno newline");
    return 0;
  }
  if (mode == "sleep") {
    std::printf("pid %d\n", static_cast<int>(getpid()));
    std::fflush(stdout);
    sleep_forever();
  }
  if (mode == "ignore-term") {
    signal(SIGTERM, SIG_IGN);
    std::printf("pid %d\n", static_cast<int>(getpid()));
    std::fflush(stdout);
    sleep_forever();
  }
  if (mode == "exit-rank" || mode == "grandchild") {  // MODE R CODE: rank R exits CODE
    if (argc < 4) return 64;
    if (mode == "grandchild") {
      pid_t g = fork();
      if (g == 0) sleep_forever();
      std::printf("grandchild %d\n", static_cast<int>(g));
      std::fflush(stdout);
    }
    if (rank == std::atoi(argv[2])) {
      usleep(100 * 1000);  // let the others start, so there is something to stop
      return std::atoi(argv[3]);
    }
    sleep_forever();
  }
  if (mode == "fail-until") {  // fail-until N: exit 1 while the restart count is below N
    int restart = env_int("WEFT_RESTART_COUNT");
    if (restart < (argc > 2 ? std::atoi(argv[2]) : 1)) return 1;
    std::printf("restart %d ok\n", restart);
    return 0;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 64;
}
