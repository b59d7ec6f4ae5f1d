#include "guest/protocol/error_code.hpp"

#include <cerrno>

namespace forkvm::proto {

ErrorCode error_code_from_errno(int err) noexcept {
    switch (err) {
        case ENOENT: return ErrorCode::not_found;
        case EACCES:
        case EPERM:
        case EROFS: return ErrorCode::permission_denied;
        case EEXIST: return ErrorCode::already_exists;
        case ENOTDIR: return ErrorCode::not_a_directory;
        case EISDIR: return ErrorCode::is_a_directory;
        case ENOTEMPTY: return ErrorCode::not_empty;
        case EINVAL:
        case ENAMETOOLONG:
        case ELOOP:
        case EBADF: return ErrorCode::invalid_argument;
        case EFBIG:
        case E2BIG:
        case EOVERFLOW: return ErrorCode::too_large;
        case ECANCELED: return ErrorCode::cancelled;
        case EBUSY:
        case EAGAIN:
        case ETXTBSY: return ErrorCode::busy;
        case ENOSYS:
        case EOPNOTSUPP:
        case EXDEV: return ErrorCode::unsupported;
        default: return ErrorCode::io;
    }
}

std::string_view error_code_name(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::not_found: return "not_found";
        case ErrorCode::permission_denied: return "permission_denied";
        case ErrorCode::already_exists: return "already_exists";
        case ErrorCode::not_a_directory: return "not_a_directory";
        case ErrorCode::is_a_directory: return "is_a_directory";
        case ErrorCode::not_empty: return "not_empty";
        case ErrorCode::invalid_argument: return "invalid_argument";
        case ErrorCode::io: return "io";
        case ErrorCode::too_large: return "too_large";
        case ErrorCode::cancelled: return "cancelled";
        case ErrorCode::busy: return "busy";
        case ErrorCode::unsupported: return "unsupported";
        case ErrorCode::internal: return "internal";
        case ErrorCode::protocol: return "protocol";
    }
    return "unknown";
}

}  // namespace forkvm::proto
