// Fuzz target: parse any bytes as a state.bin. The checksum is skipped (a
// fuzz-only ParseOptions flag) so mutations reach the structure parser.
// Invariants: never crash; whatever parses re-serialises to a file that
// parses with its checksum to the same sections, and (the format being
// canonical) to the same bytes apart from the trailer.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using forkvm::snapshot::ParseOptions;
    using forkvm::snapshot::StateFile;
    std::span<const std::uint8_t> input(data, size);
    // A small cap keeps each run fast; the cap logic is itself under test.
    ParseOptions fuzz_options{.max_size = std::size_t{1} << 20, .verify_checksum = false};
    StateFile parsed;
    try {
        parsed = StateFile::parse(input, "fuzz", fuzz_options);
    } catch (const forkvm::snapshot::SnapshotError&) {
        return 0;  // typed rejection is the expected outcome for most inputs
    }

    std::vector<std::uint8_t> again = parsed.serialize();
    StateFile reparsed = StateFile::parse(again, "fuzz-reserialised");  // checksum verified
    if (reparsed.sections() != parsed.sections()) std::abort();
    const std::size_t body = size - forkvm::snapshot::kTrailerSize;
    if (again.size() != size ||
        !std::equal(again.begin(), again.begin() + static_cast<std::ptrdiff_t>(body), data)) {
        std::abort();
    }
    // Every tag looks up to its own bytes.
    for (const auto& section : parsed.sections()) {
        auto found = parsed.section(section.tag);
        if (!std::equal(found.begin(), found.end(), section.data.begin(), section.data.end())) std::abort();
    }
    return 0;
}
