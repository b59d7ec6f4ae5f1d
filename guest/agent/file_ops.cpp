#include "guest/agent/file_ops.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "vmm/unique_fd.hpp"  // header-only, std-only: shared with the host

namespace forkvm::agent {
namespace {

// Deepest directory nesting a recursive remove descends into (one fd per level).
constexpr int kMaxRemoveDepth = 256;

proto::FileType file_type_of(mode_t mode) {
    if (S_ISREG(mode)) return proto::FileType::file;
    if (S_ISDIR(mode)) return proto::FileType::directory;
    if (S_ISLNK(mode)) return proto::FileType::symlink;
    return proto::FileType::other;
}

proto::Error invalid(std::string message) {
    return proto::Error{proto::ErrorCode::invalid_argument, 0, std::move(message)};
}

// Removes the entry `name` of directory `dirfd`, recursing into directories
// without ever following a symlink (O_NOFOLLOW | O_DIRECTORY on each level,
// unlinkat on the entry itself). Returns 0 or an errno.
int remove_tree_at(int dirfd, const char* name, int depth) {
    if (::unlinkat(dirfd, name, 0) == 0) return 0;
    if (errno != EISDIR && errno != EPERM) return errno;
    // EISDIR (Linux) or EPERM (POSIX) for a directory: empty it first.
    if (depth >= kMaxRemoveDepth) return ELOOP;
    UniqueFd sub(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return errno == ENOTDIR ? EPERM : errno;
    const int dup_fd = ::dup(sub.get());
    if (dup_fd < 0) return errno;
    DIR* dir = ::fdopendir(dup_fd);
    if (dir == nullptr) {
        const int err = errno;
        ::close(dup_fd);
        return err;
    }
    int result = 0;
    while (true) {
        errno = 0;
        const dirent* ent = ::readdir(dir);
        if (ent == nullptr) {
            result = errno;
            break;
        }
        if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
        if (const int err = remove_tree_at(sub.get(), ent->d_name, depth + 1); err != 0) {
            result = err;
            break;
        }
    }
    ::closedir(dir);
    if (result != 0) return result;
    return ::unlinkat(dirfd, name, AT_REMOVEDIR) == 0 ? 0 : errno;
}

}  // namespace

std::optional<proto::Error> check_path(const std::string& path) {
    if (path.empty()) return invalid("empty path");
    if (path.find('\0') != std::string::npos) return invalid("path contains a NUL byte");
    if (path.front() != '/') return invalid("path is not absolute");
    if (path.size() >= PATH_MAX)
        return proto::Error{proto::ErrorCode::invalid_argument, ENAMETOOLONG, "path too long"};
    return std::nullopt;
}

proto::Error errno_error(int err, const std::string& what, const std::string& path) {
    return proto::Error{proto::error_code_from_errno(err), err,
                        what + " " + path + ": " + std::strerror(err)};
}

int make_dirs(const std::string& path, std::uint32_t mode) {
    // Walk the components left to right; mkdir each missing one.
    std::size_t pos = 0;
    while (pos < path.size()) {
        pos = path.find('/', pos + 1);
        if (pos == std::string::npos) pos = path.size();
        const std::string prefix = path.substr(0, pos);
        if (prefix.empty() || prefix == "/") continue;
        if (::mkdir(prefix.c_str(), static_cast<mode_t>(mode & 07777U)) == 0) continue;
        const int err = errno;
        struct stat st {};
        if (err == EEXIST && ::stat(prefix.c_str(), &st) == 0) {
            if (!S_ISDIR(st.st_mode)) return pos == path.size() ? EEXIST : ENOTDIR;
            continue;
        }
        return err;
    }
    return 0;
}

proto::Message do_stat(const proto::Stat& req) {
    if (auto e = check_path(req.path)) return *e;
    struct stat st {};
    const int rc = req.follow_symlinks ? ::stat(req.path.c_str(), &st) : ::lstat(req.path.c_str(), &st);
    if (rc != 0) return errno_error(errno, "stat", req.path);
    proto::StatResult r;
    r.type = file_type_of(st.st_mode);
    r.mode = static_cast<std::uint32_t>(st.st_mode & 07777U);
    r.size = static_cast<std::uint64_t>(st.st_size);
    r.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    r.uid = st.st_uid;
    r.gid = st.st_gid;
    return r;
}

proto::Message do_list_dir(const proto::ListDir& req, std::uint32_t max_entries_cap) {
    if (auto e = check_path(req.path)) return *e;
    const std::uint32_t limit =
        (req.max_entries == 0 || req.max_entries > max_entries_cap) ? max_entries_cap : req.max_entries;
    UniqueFd fd(::open(req.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return errno_error(errno, "list", req.path);
    const int dup_fd = ::dup(fd.get());
    if (dup_fd < 0) return errno_error(errno, "list", req.path);
    DIR* dir = ::fdopendir(dup_fd);
    if (dir == nullptr) {
        const int err = errno;
        ::close(dup_fd);
        return errno_error(err, "list", req.path);
    }
    proto::DirEntries out;
    int err = 0;
    while (true) {
        errno = 0;
        const dirent* ent = ::readdir(dir);
        if (ent == nullptr) {
            err = errno;
            break;
        }
        if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
        if (out.entries.size() >= limit) {
            out.truncated = true;
            break;
        }
        proto::DirEntry e;
        e.name = ent->d_name;
        struct stat st {};
        if (::fstatat(fd.get(), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            e.type = file_type_of(st.st_mode);
            e.size = static_cast<std::uint64_t>(st.st_size);
            e.mode = static_cast<std::uint32_t>(st.st_mode & 07777U);
        } else {
            // Raced with a removal: keep the name, type "other".
            e.type = proto::FileType::other;
        }
        out.entries.push_back(std::move(e));
    }
    ::closedir(dir);
    if (err != 0) return errno_error(err, "list", req.path);
    return out;
}

proto::Message do_exists(const proto::Exists& req) {
    if (auto e = check_path(req.path)) return *e;
    struct stat st {};
    // lstat: a dangling symlink exists (it is an entry that can be removed).
    if (::lstat(req.path.c_str(), &st) == 0) return proto::Bool{true};
    if (errno == ENOENT || errno == ENOTDIR) return proto::Bool{false};
    return errno_error(errno, "exists", req.path);
}

proto::Message do_remove(const proto::Remove& req) {
    if (auto e = check_path(req.path)) return *e;
    if (req.path.find_first_not_of('/') == std::string::npos) return invalid("refusing to remove /");
    if (!req.recursive) {
        if (::unlink(req.path.c_str()) == 0) return proto::Ok{};
        if (errno != EISDIR) return errno_error(errno, "remove", req.path);
        if (::rmdir(req.path.c_str()) == 0) return proto::Ok{};
        const int err = errno == EEXIST ? ENOTEMPTY : errno;
        return errno_error(err, "remove", req.path);
    }
    // Split into parent + last component so the entry itself is never
    // followed if it is a symlink.
    std::string p = req.path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    const std::size_t slash = p.rfind('/');
    const std::string parent = slash == 0 ? std::string("/") : p.substr(0, slash);
    const std::string name = p.substr(slash + 1);
    if (name == "." || name == "..") return invalid("refusing to remove . or ..");
    UniqueFd dirfd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) return errno_error(errno, "remove", req.path);
    if (const int err = remove_tree_at(dirfd.get(), name.c_str(), 0); err != 0) {
        return errno_error(err, "remove", req.path);
    }
    return proto::Ok{};
}

proto::Message do_rename(const proto::Rename& req) {
    if (auto e = check_path(req.from)) return *e;
    if (auto e = check_path(req.to)) return *e;
    if (::rename(req.from.c_str(), req.to.c_str()) != 0) return errno_error(errno, "rename", req.from);
    return proto::Ok{};
}

proto::Message do_mkdir(const proto::Mkdir& req) {
    if (auto e = check_path(req.path)) return *e;
    if (req.mode > 07777U) return invalid("mode out of range");
    bool created = true;
    if (req.parents) {
        struct stat before {};
        created = !(::stat(req.path.c_str(), &before) == 0 && S_ISDIR(before.st_mode));
        if (const int err = make_dirs(req.path, 0755); err != 0) return errno_error(err, "mkdir", req.path);
    } else if (::mkdir(req.path.c_str(), static_cast<mode_t>(req.mode)) != 0) {
        return errno_error(errno, "mkdir", req.path);
    }
    // Exact mode, whatever the umask (only for a directory created here, like mkdir -p).
    if (created) (void)::chmod(req.path.c_str(), static_cast<mode_t>(req.mode));
    return proto::Ok{};
}

}  // namespace forkvm::agent
