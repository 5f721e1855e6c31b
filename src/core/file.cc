#include "core/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "base/error.h"

namespace attn {
namespace fs = std::filesystem;

namespace {

// Closes on scope exit unless released; removes the temporary it names on failure.
struct TmpFile {
  int fd = -1;
  std::string path;
  bool keep = false;
  ~TmpFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

void sync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  ATTN_CHECK(fd >= 0, "cannot open '", path, "' to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  ATTN_CHECK(rc == 0, "fsync of '", path, "' failed: ", std::strerror(err));
}

void write_file(const std::string& path, std::string_view bytes, std::string_view what,
                WriteFileOptions options) {
  // Only a regular file can be replaced by a rename; a device, pipe or terminal
  // (/dev/stdout, a FIFO) is written where it is.
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st) && !fs::is_regular_file(st)) {
    ATTN_CHECK(!fs::is_directory(st), "cannot write ", what, " '", path, "': it is a directory");
    options.atomic = false;
    options.sync = false;
  }
  // A link keeps pointing where it did: the file it names is replaced.
  const std::string dest = options.atomic && fs::is_symlink(path, ec) && fs::exists(st)
                               ? fs::canonical(path, ec).string()
                               : path;
  const std::string target = options.atomic ? dest + ".tmp." + std::to_string(::getpid()) : dest;
  TmpFile f;
  f.keep = !options.atomic;
  f.fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f.fd < 0) {
    const int err = errno;
    const fs::path parent = fs::path(path).parent_path();
    ATTN_CHECK(err != ENOENT || parent.empty() || fs::is_directory(parent, ec), "cannot write ",
               what, " '", path, "': no directory '", parent.string(), "'");
    ATTN_FAIL("cannot write ", what, " '", path, "': ", std::strerror(err));
  }
  if (options.atomic) f.path = target;
  auto fail = [&](const char* step) {
    ATTN_FAIL(step, " ", what, " '", path, "' failed: ", std::strerror(errno));
  };
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(f.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EIO;  // nothing written and no reason given
    if (n <= 0) fail("writing");
    done += static_cast<size_t>(n);
  }
  if (options.sync && ::fsync(f.fd) != 0) fail("syncing");
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) fail("closing");
  if (!options.atomic) return;
  if (::rename(target.c_str(), dest.c_str()) != 0) {
    ATTN_FAIL("cannot move ", what, " '", target, "' to '", path, "': ", std::strerror(errno));
  }
  f.keep = true;
  if (options.sync) {
    const fs::path parent = fs::path(dest).parent_path();
    sync_path(parent.empty() ? "." : parent.string(), true);
  }
}

fs::path replace_directory(const fs::path& tmp, const fs::path& dest, const fs::path& old,
                           std::string_view what, const std::function<void()>& after_aside) {
  std::error_code ec;
  fs::path aside;
  if (fs::exists(fs::symlink_status(dest, ec))) {
    fs::remove_all(old, ec);
    fs::rename(dest, old, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove_all(tmp, ec);
      ATTN_FAIL("cannot move the previous ", what, " '", dest.string(), "' aside to '",
                old.string(), "': ", why);
    }
    aside = old;
    if (after_aside) after_aside();
  }
  fs::rename(tmp, dest, ec);
  if (ec) {
    const std::string why = ec.message();
    if (!aside.empty()) fs::rename(aside, dest, ec);
    fs::remove_all(tmp, ec);
    ATTN_FAIL("cannot move the new ", what, " '", tmp.string(), "' to '", dest.string(),
              "': ", why);
  }
  return aside;
}

void check_standard_output() {
  // The first failing flush reports the reason; later ones may find nothing left to write.
  errno = 0;
  std::cout.flush();
  int err = errno;
  bool ok = std::cout.good();
  errno = 0;
  if (std::fflush(stdout) != 0) {
    ok = false;
    if (err == 0) err = errno;
  }
  ok = ok && !std::ferror(stdout);
  ATTN_CHECK(ok, "cannot write the output to standard output: ",
             err ? std::strerror(err) : "write error", " (the output is incomplete)");
}

}  // namespace attn
