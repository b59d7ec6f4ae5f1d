#pragma once
// A small but well-formed snapshot directory (docs/snapshot-format.md) for
// tests of code that stores snapshots without restoring them: 64 KiB of
// "guest memory" and a state file, made with the real writer.

#include <sys/stat.h>

#include <fstream>
#include <stdexcept>
#include <string>

#include "snapshot/manifest.hpp"
#include "snapshot/state_file.hpp"

namespace forkvm::test {

inline void write_fake_snapshot(const std::string& dir, char fill = 'm') {
    if (::mkdir(dir.c_str(), 0700) != 0) throw std::runtime_error("fake snapshot: cannot create " + dir);
    {
        std::ofstream out(dir + "/memory.bin", std::ios::binary);
        const std::string memory(65536, fill);
        out.write(memory.data(), static_cast<std::streamsize>(memory.size()));
        if (!out.good()) throw std::runtime_error("fake snapshot: cannot write memory.bin");
    }
    snapshot::StateFile state;
    state.add_string("vm.config", std::string("config-") + fill);
    (void)snapshot::finalize_snapshot_dir(dir, state, "test");
}

}  // namespace forkvm::test
