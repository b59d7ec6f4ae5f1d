#pragma once
// Unguessable ids for VMs and sandboxes. Ids appear in URLs, so they are
// random (not sequential) to avoid leaking how many sandboxes exist and to
// make guessing another tenant's id pointless; owner checks still apply.

#include <string>
#include <string_view>

namespace forkvm::pool {

// `prefix` followed by 16 lowercase hex digits (64 random bits), e.g.
// "sb-3f9a0c71d2e4b658". Thread-safe.
std::string random_id(std::string_view prefix);

}  // namespace forkvm::pool
