//! signalfd: the signal mask, from fdinfo; recreated with signalfd4.

use std::path::Path;

use super::{bad, extra, nonblock};
use crate::error::Result;
use crate::image::proto::{file_desc, SignalFd};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;

const TARGET: &str = "anon_inode:[signalfd]";

pub struct Signalfd;

impl FdKind for Signalfd {
    fn name(&self) -> &'static str {
        "signalfd"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let mask = extra(f.info()?, "sigmask")
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| bad(f.pid, f.fd, "sigmask"))?;
        let mut s = SignalFd::new();
        s.sigmask = mask;
        s.flags = f.flags();
        Ok(Some(file_desc::Kind::Signalfd(s)))
    }

    fn validate(&self, k: &file_desc::Kind, _path: &Path, _obj: &str) -> Result<()> {
        match k {
            file_desc::Kind::Signalfd(_) => Ok(()),
            _ => Err(not_mine(self)),
        }
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Signalfd(s) = k else {
            return Err(not_mine(self));
        };
        calls.signalfd4(s.sigmask, libc::SFD_CLOEXEC | nonblock(s.flags))
    }
}
