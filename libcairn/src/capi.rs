//! The C interface (`include/cairn.h`): the Rust calls with negative
//! errno values.

use std::os::raw::{c_int, c_void};

use crate::{Error, Resumed};

fn neg(e: Error) -> c_int {
    -e.0
}

/// `int cairn_checkpoint(void)`: 0 in the process that goes on, 1 in a
/// process restored from this checkpoint, or a negative errno.
#[no_mangle]
pub extern "C" fn cairn_checkpoint() -> c_int {
    match crate::checkpoint() {
        Ok(Resumed::Continued) => 0,
        Ok(Resumed::Restored) => 1,
        Err(e) => neg(e),
    }
}

/// `int cairn_checkpoint_data(const void *buf, size_t len)`: 0 once the
/// supervisor keeps the `len` bytes at `buf`, or a negative errno
/// (-E2BIG above CAIRN_DATA_MAX).
///
/// # Safety
/// `buf` points to `len` readable bytes (or `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn cairn_checkpoint_data(buf: *const c_void, len: usize) -> c_int {
    if len == 0 {
        return crate::checkpoint_data(&[]).map_or_else(neg, |()| 0);
    }
    if buf.is_null() {
        return -libc::EFAULT;
    }
    if len > crate::DATA_MAX {
        return -libc::E2BIG;
    }
    // SAFETY: the caller gives `len` readable bytes at `buf` (not null),
    // which are only read during the call.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    crate::checkpoint_data(data).map_or_else(neg, |()| 0)
}

/// `ssize_t cairn_takeover_data(void *buf, size_t len)`: the length of
/// the newest nonrestart data, copied to `buf`, or a negative errno
/// (-ENODATA: none; -EMSGSIZE: `len` too small).
///
/// # Safety
/// `buf` points to `len` writable bytes (or `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn cairn_takeover_data(buf: *mut c_void, len: usize) -> isize {
    let out: &mut [u8] = if len == 0 {
        &mut []
    } else if buf.is_null() {
        return -(libc::EFAULT as isize);
    } else {
        // SAFETY: the caller gives `len` writable bytes at `buf` (not
        // null), used only during the call.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    match crate::takeover_data(out) {
        Ok(n) => n as isize,
        Err(e) => -(e.0 as isize),
    }
}

/// `int cairn_is_backup(void)`: 1 in a backup, 0 otherwise, or a
/// negative errno.
#[no_mangle]
pub extern "C" fn cairn_is_backup() -> c_int {
    match crate::is_backup() {
        Ok(b) => b as c_int,
        Err(e) => neg(e),
    }
}
