//! mm fields: code, data, brk, stack, arguments and environment, the
//! auxiliary vector and the executable, read at dump with the VMAs, and
//! set at restore in one `prctl(PR_SET_MM, PR_SET_MM_MAP)`.

use super::plan::PagePlan;
use crate::error::{Error, IoContext, Result};
use crate::image::proto::MmEntry;
use crate::kinds::files::FileTable;
use crate::procfs::{self, MapsEntry};
use crate::remote::Calls;

/// Everything process-level needed to build the mm image.
pub struct MmInput<'a> {
    pub pid: i32,
    /// Parent process, if it is part of the dump (for copy-on-write dedup).
    pub ppid: Option<i32>,
    pub smaps: &'a [MapsEntry],
    pub stat: &'a procfs::Stat,
    pub brk: u64,
    pub auxv: Vec<u64>,
    /// /proc/PID/stat start time (incremental dumps: same process?).
    pub start_time: u64,
}

/// Builds the mm image of one process and adds its pages to `plan`.
/// `files` registers the mapped files (and keeps what the contents dump
/// reads of mapped deleted files and memfds).
pub fn dump_mm(input: MmInput, plan: &mut PagePlan, files: &mut FileTable) -> Result<MmEntry> {
    let pid = input.pid;
    let st = input.stat;
    let mut mm = MmEntry::new();
    mm.pid = pid as u32;
    mm.start_code = st.start_code;
    mm.end_code = st.end_code;
    mm.start_data = st.start_data;
    mm.end_data = st.end_data;
    mm.start_brk = st.start_brk;
    mm.brk = input.brk;
    mm.start_stack = st.start_stack;
    mm.arg_start = st.arg_start;
    mm.arg_end = st.arg_end;
    mm.env_start = st.env_start;
    mm.env_end = st.env_end;
    mm.auxv = input.auxv;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).at(format!("/proc/{pid}/exe"))?;
    let exe_path = procfs::read_link(format!("/proc/{pid}/exe"))?;
    if exe_path.ends_with(" (deleted)") {
        return Err(Error::unsupported(
            pid,
            format!("executable {exe_path} was deleted"),
        ));
    }
    mm.exe_file_id = files.register_mapped(&exe_path, &exe, false)?;

    let private_owner = plan.owner(format!("pid:{pid}"));
    if plan.chain && plan.hash_private {
        plan.hashed.insert(private_owner);
    }
    let base = plan.private_base(pid, input.start_time, private_owner)?;
    mm.aio_rings = super::aio::dump_rings(pid, input.smaps)?;
    for m in input.smaps {
        let Some(kind) = super::vma::classify(pid, m)? else {
            continue;
        };
        let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let mut v = super::vma::describe(m, kind, &map_file, files)?;
        let found = plan.add_vma(
            pid,
            input.ppid,
            m,
            kind,
            base.as_ref(),
            private_owner,
            &map_file,
        )?;
        v.guard_runs = found.guards.into_iter().flat_map(|(a, n)| [a, n]).collect();
        v.cow_runs = found.cow.into_iter().flat_map(|(a, n)| [a, n]).collect();
        mm.vmas.push(v);
    }
    Ok(mm)
}

/// struct prctl_mm_map.
pub fn set_mm_map(agent: &mut dyn Calls, mm: &MmEntry, exe_fd: u64) -> Result<()> {
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if auxv.len() > 512 * 8 {
        return Err(Error::Restore("auxv too long".into()));
    }
    let auxv_addr = agent.put(4096, &auxv)?;
    let mut b = Vec::with_capacity(104);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_addr,
    ] {
        b.extend_from_slice(&w.to_ne_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    b.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    agent.set_mm_map(&b)
}
