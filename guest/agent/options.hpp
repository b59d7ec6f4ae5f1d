#pragma once
// Options of the agent's server loop. The defaults are what the VM uses; the
// unit tests shrink or widen some of them (chunk sizes, user database).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace forkvm::agent {

class HygieneActions;  // guest/agent/hygiene.hpp

struct Options {
    std::string agent_version = "forkvm-agent/0.1.0";
    // Data bytes per ExecOutput/FileData frame. Small, so a control reply
    // waits for at most one such frame on a slow UART.
    std::size_t bulk_chunk = 4096;
    // Bulk bytes (encoded frames) queued for the channel before the agent
    // stops reading pipes and files; credit bounds it too.
    std::size_t max_bulk_queue = 64 * 1024;
    // Control bytes queued before the agent stops reading requests (a host
    // that sends pings without reading the replies gets back-pressure).
    std::size_t max_control_queue = 1024 * 1024;
    // Largest incoming payload accepted (FrameDecoder's max_payload).
    std::uint32_t max_payload = 1U << 20U;
    // Credit window granted for WriteFile data (refilled as data is written).
    std::uint32_t write_window = 64 * 1024;
    // After an exec's leader exits, how long its pipes may stay open (held by
    // background descendants) before ExecExit is reported anyway.
    int exit_grace_ms = 200;
    std::size_t max_execs = 32;
    // Sum of argv and env bytes per exec.
    std::size_t max_exec_arg_bytes = 512 * 1024;
    // Upper bound for ListDir entries (also applies when max_entries is 0).
    std::uint32_t max_dir_entries = 2048;
    // User database (busybox system: parsed by hand, no NSS in a static binary).
    std::string passwd_path = "/etc/passwd";
    std::string group_path = "/etc/group";
    // Account used when ExecStart.user is empty.
    std::string default_user = "user";
    // Become a child subreaper (prctl), so orphans of execs are reparented to
    // the agent and reaped even when it is not PID 1 (tests).
    bool child_subreaper = true;
    // Clone-hygiene mailbox (guest/agent/hygiene.hpp): the page the host
    // fills at guest-physical kMailbox (vmm/layout.hpp), read through
    // /dev/mem. Tests point it at a temporary file; an empty path or a
    // missing file turns the check off.
    std::string mailbox_path = "/dev/mem";
    std::uint64_t mailbox_offset = 0x9f000;
    // The egress proxy's listener on the guest's loopback (0 = none), the
    // credit window of each proxy stream, and how many may be open at once
    // (the host enforces each sandbox's policy limit; this bounds the
    // agent's fds).
    std::uint16_t proxy_port = 3128;
    std::uint32_t proxy_window = 64 * 1024;
    std::size_t max_proxy_streams = 256;
    // What applying a page does; null means the real system calls
    // (RNDADDENTROPY, RNDRESEEDCRNG, clock_settime, sethostname).
    std::shared_ptr<HygieneActions> hygiene_actions;
};

}  // namespace forkvm::agent
