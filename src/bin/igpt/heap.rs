//! Keep freed memory in the process heap on glibc.
//!
//! A CPU training step allocates and frees attention tensors of tens of MB each. glibc's defaults give
//! such blocks back to the kernel on free and fault them in again, page by page, on the next
//! allocation: a third of the wall time of `igpt bench train --device flex` went to the kernel.
//! Raising the trim threshold and the top pad keeps them for reuse (the same as setting
//! `MALLOC_TRIM_THRESHOLD_` / `MALLOC_TOP_PAD_`). Blocks above the mmap threshold bypass the heap
//! altogether, and glibc's threshold starts at 128 KiB and only creeps up as such blocks are freed:
//! fixing it at glibc's ceiling, 32 MiB, took `bench train --preset 128x8x1` from 3,865 to 5,075
//! tokens/s (a fifth of the step had gone to page faults).

/// Call once, first thing in `main`, before any large allocation.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning values; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// The most resident memory the process has held so far (Linux's VmHWM), when the system says.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
