//! eventfd: a 64-bit counter. Dump reads the counter and the semaphore
//! flag from fdinfo; restore creates it with eventfd2 and adds the
//! counter with a write (it can exceed eventfd2's 32-bit initial value).

use std::path::Path;

use super::{bad, extra, nonblock};
use crate::error::Result;
use crate::image::proto::{file_desc, EventFd};
use crate::image::validate::bad as invalid;
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;

const TARGET: &str = "anon_inode:[eventfd]";

pub struct Eventfd;

impl FdKind for Eventfd {
    fn name(&self) -> &'static str {
        "eventfd"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let info = f.info()?;
        let count = extra(info, "eventfd-count")
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| bad(f.pid, f.fd, "eventfd-count"))?;
        let mut e = EventFd::new();
        e.count = count;
        e.semaphore = extra(info, "eventfd-semaphore").is_some_and(|v| v.trim() == "1");
        e.flags = f.flags();
        Ok(Some(file_desc::Kind::Eventfd(e)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Eventfd(e) = k else {
            return Err(not_mine(self));
        };
        if e.count == u64::MAX {
            return Err(invalid(
                path,
                obj,
                "count",
                "u64::MAX is not an eventfd count",
            ));
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Eventfd(e) = k else {
            return Err(not_mine(self));
        };
        let mut fl = libc::EFD_CLOEXEC | nonblock(e.flags);
        if e.semaphore {
            fl |= libc::EFD_SEMAPHORE;
        }
        let fd = calls.eventfd2(fl)?;
        if e.count > 0 {
            calls.write_at(0, fd, &e.count.to_ne_bytes(), "eventfd")?;
        }
        Ok(fd)
    }
}
