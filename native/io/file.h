// Opening user files without blocking: only regular files are read, so a FIFO, directory,
// socket or device named config.json or model.safetensors fails with a coded error instead of
// hanging the load. Tests: test/load-robustness.test.ts.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/error.h"

#ifndef _WIN32
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace nt {

#ifndef _WIN32
// What a non-regular file is, for messages.
inline const char *file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "a special file";
}
#endif

// True when something exists at `path`. Only stats it: opening a FIFO could block.
inline bool path_exists(const std::string &path) {
#ifndef _WIN32
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
#else
  std::ifstream f(path, std::ios::binary);
  return f.good();
#endif
}

#ifndef _WIN32
// Opens `path` read-only and returns the descriptor of a regular file (st receives its stat).
// O_NONBLOCK makes opening a FIFO return at once (it has no effect on regular files), and the
// type is checked with fstat on the opened descriptor, so nothing can swap the file in between.
// Throws ERR_FILE_NOT_FOUND, or ERR_FILE_READ for anything that is not a readable regular file.
inline int open_regular_file(const std::string &path, struct stat *st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) fail(code::kFileNotFound, "no such file: " + path);
    fail(code::kFileRead, "cannot open " + path + ": " + std::strerror(errno));
  }
  const bool stat_ok = fstat(fd, st) == 0;
  if (!stat_ok || !S_ISREG(st->st_mode)) {
    const std::string kind = stat_ok ? file_kind(st->st_mode) : std::strerror(errno);
    ::close(fd);
    fail(code::kFileRead, "cannot read " + path + ": " + kind + ", not a regular file");
  }
  return fd;
}
#endif

// The whole text of the regular file `path`, refused (`too_large_code`) past `max_bytes`.
inline std::string read_regular_file(const std::string &path, uint64_t max_bytes, const char *too_large_code) {
#ifndef _WIN32
  struct stat st;
  const int fd = open_regular_file(path, &st);
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    fail(too_large_code, path + " is " + std::to_string(st.st_size) + " bytes, more than the " + std::to_string(max_bytes >> 20) +
                             " MiB limit");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd, &text[done], text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "the file shrank while being read";
      ::close(fd);
      fail(code::kFileRead, "cannot read " + path + ": " + why);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return text;
#else
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(code::kFileNotFound, "no such file: " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > max_bytes) fail(too_large_code, path + " is more than the " + std::to_string(max_bytes >> 20) + " MiB limit");
  return text;
#endif
}

}  // namespace nt
