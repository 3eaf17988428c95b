//! How this process gives memory back. A pass over a mass leak builds structures of tens of
//! MiB and frees them; glibc's malloc would keep serving later large blocks from its heap
//! (its mmap threshold rises with each large free), so that freed blocks stay resident and
//! a daemon keeps the peak of its worst pass. Blocks from 128 KiB go straight to mmap
//! instead, and return to the system when freed.

/// glibc's `M_MMAP_THRESHOLD` (malloc.h).
#[cfg(target_env = "gnu")]
const M_MMAP_THRESHOLD: libc::c_int = -3;

/// Large blocks from this size are mapped on their own.
const LARGE_BLOCK: libc::c_int = 128 * 1024;

/// Make large blocks mapped on their own, whatever was freed before. Call once, early.
pub fn return_large_frees() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's parameters; it is called before any thread
    // starts, and a refusal (0) leaves the defaults.
    unsafe {
        libc::mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = LARGE_BLOCK;
}
