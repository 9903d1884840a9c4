//! timerfd: clock, time left, interval and expirations not read yet, from
//! fdinfo; recreated with timerfd_create, timerfd_settime (relative) and
//! TFD_IOC_SET_TICKS.

use std::path::Path;

use super::{bad, extra, nonblock, parse_pair_ns};
use crate::error::Result;
use crate::image::proto::{file_desc, TimerFd};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;

const TARGET: &str = "anon_inode:[timerfd]";
/// `TFD_IOC_SET_TICKS`.
const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;

pub struct Timerfd;

impl FdKind for Timerfd {
    fn name(&self) -> &'static str {
        "timerfd"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let (pid, fd, info) = (f.pid, f.fd, f.info()?);
        let mut t = TimerFd::new();
        t.clockid = extra(info, "clockid")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad(pid, fd, "clockid"))?;
        t.ticks = extra(info, "ticks")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad(pid, fd, "ticks"))?;
        t.value_ns = extra(info, "it_value")
            .and_then(parse_pair_ns)
            .ok_or_else(|| bad(pid, fd, "it_value"))?;
        t.interval_ns = extra(info, "it_interval")
            .and_then(parse_pair_ns)
            .ok_or_else(|| bad(pid, fd, "it_interval"))?;
        t.flags = f.flags();
        Ok(Some(file_desc::Kind::Timerfd(t)))
    }

    fn validate(&self, k: &file_desc::Kind, _path: &Path, _obj: &str) -> Result<()> {
        match k {
            file_desc::Kind::Timerfd(_) => Ok(()),
            _ => Err(not_mine(self)),
        }
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Timerfd(t) = k else {
            return Err(not_mine(self));
        };
        let fd = calls.timerfd_create(t.clockid, libc::TFD_CLOEXEC | nonblock(t.flags))?;
        if t.value_ns > 0 || t.interval_ns > 0 {
            // Relative: fdinfo gives the time left, whatever the original
            // settime flags were. A timer that was due is given 1 ns so
            // that it fires at once.
            calls.timerfd_settime(fd, t.interval_ns, t.value_ns.max(1))?;
        }
        if t.ticks > 0 {
            // Expirations not read yet.
            let a = calls.put(64, &t.ticks.to_ne_bytes())?;
            calls.ioctl("TFD_IOC_SET_TICKS", fd, TFD_IOC_SET_TICKS, a)?;
        }
        Ok(fd)
    }
}
