//! A command that runs inside a network namespace, entered with setns(2) between fork
//! and exec: a baseline tool timed this way pays for itself, not for `ip netns exec`.
//! Included by `benches/common/mod.rs` and, by path, by the benches that use
//! `tests/common` instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `program`, to run inside the namespace whose `/run/netns` file is `netns`. The file
/// moves into the command, so it stays open for every spawn of it.
pub fn ns_command(netns: File, program: &str) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: only the async-signal-safe setns(2) runs between fork and exec, on a file
    // the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}
