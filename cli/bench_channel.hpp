#pragma once
// forkvm bench channel: the agent channel's throughput both ways, exec round
// trip and device exits per 64 KiB, for one channel device (virtio console
// or UART); bench/channel_compare.sh runs both side by side.

#include <span>

namespace forkvm::cli {

int bench_channel(std::span<char*> args);

}  // namespace forkvm::cli
