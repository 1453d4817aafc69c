//! `statvfs(2)`: a filesystem's size and inodes.

use std::path::Path;

/// What `statvfs(2)` says of one filesystem, in its fragment size.
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, Copy)]
pub struct FsStats {
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// `statvfs(2)` of `path`; None when the call fails (the mount went away, no permission).
pub fn statvfs(path: &Path) -> Option<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `s` points to
    // writable memory of the struct's size, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `s`.
    let s = unsafe { s.assume_init() };
    // The fields' types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Some(FsStats {
        frsize: if s.f_frsize > 0 {
            s.f_frsize
        } else {
            s.f_bsize
        } as u64,
        blocks: s.f_blocks as u64,
        bfree: s.f_bfree as u64,
        bavail: s.f_bavail as u64,
        files: s.f_files as u64,
        ffree: s.f_ffree as u64,
    })
}
