//! What the file system holding the data has room for.

use std::path::Path;

/// Space on the file system holding `path`: (total bytes, bytes an unprivileged process may
/// still use), as `statvfs` reports them.
pub fn space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` points to
    // writable memory of the right type, which statvfs fills in when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized `stat`.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize as u64;
    Ok((
        (stat.f_blocks as u64).saturating_mul(block),
        (stat.f_bavail as u64).saturating_mul(block),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_current_directory_has_a_size() {
        let (total, usable) = super::space(std::path::Path::new(".")).unwrap();
        assert!(total > 0 && usable <= total, "{total} {usable}");
        assert!(super::space(std::path::Path::new("/no/such/dir")).is_err());
    }
}
