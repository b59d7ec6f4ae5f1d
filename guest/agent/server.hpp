#pragma once
// The agent's server: one single-threaded poll() loop over the channel, the
// pipes of every running exec, a signalfd for SIGCHLD and the exec timers.
// See docs/agent-protocol.md ("Agent behaviour") for what each flow does.

#include "guest/agent/options.hpp"

namespace forkvm::agent {

class MailboxWatcher;  // guest/agent/hygiene.hpp

// Serves the agent protocol on `channel_fd` (a tty already in raw mode, a
// socket, a virtio-console port; it is switched to non-blocking) until the
// channel reaches EOF or a write to it fails. Sends Ready first. On return
// every running exec's process group has been killed and reaped, SIGCHLD's
// mask is restored and `channel_fd` is left open (the caller owns it).
// Returns 0 on EOF, 1 if the loop could not start or the channel failed.
// Process-wide effects: blocks SIGCHLD while running, ignores SIGPIPE, makes
// sure fds 0..2 are open (on /dev/null), and optionally becomes a child
// subreaper (Options::child_subreaper). Not for use from several threads.
// Before it handles the requests of each read from the channel, the server
// checks the clone-hygiene mailbox (MailboxWatcher::check_and_apply) made
// from `options`.
int serve(int channel_fd, const Options& options);

// The same with a caller-owned watcher, so the generation last applied
// survives a restart of the loop (forkvm-agent serves again after a channel
// failure) and a page is applied once, not again after every restart.
int serve(int channel_fd, const Options& options, MailboxWatcher& mailbox);

}  // namespace forkvm::agent
