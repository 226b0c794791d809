//! Output piped into `head` and closed early: exit quietly, as other command-line tools do, instead
//! of panicking on the failed write (Rust's runtime ignores SIGPIPE, turning it into write errors).

/// Call once, first thing in `main`.
pub fn die_quietly_on_closed_pipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores one signal's default disposition; called before other threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
