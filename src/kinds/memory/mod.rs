//! Memory: VMAs, mm fields and page contents, dump and restore.
//!
//! Dump classifies every VMA, finds the pages worth saving with
//! /proc/PID/pagemap (private memory) or SEEK_DATA on the shmem file
//! (shared anonymous memory), and reads them with process_vm_readv (or
//! /proc/PID/mem for unreadable VMAs) on every core, compressing each 4 MiB
//! job into one zstd frame. All-zero pages are recorded as zero runs and
//! never stored; never-touched pages are not recorded at all.
//!
//! Restore maps every VMA at its address with injected mmap calls, writes
//! the pages (`pagein`: raw chunks read in place by the restored process
//! with an injected preadv, the others with process_vm_writev, shared
//! objects through their file), then applies the final protections and
//! madvise flags.
//!
//! Modules by concern: `vma` (classifying, describing and recreating
//! mappings), `mapfiles` (mapped deleted files and memfds), `plan` (which
//! pages a dump saves), `pages` (reading them,
//! writing them into a vessel), `mm` (brk, arg/env, auxv, exe,
//! `PR_SET_MM_MAP`), `vdso` (`ARCH_MAP_VDSO_64`), and the validation of
//! mm and pagemap images ([`validate`]).

pub mod aio;
pub mod bgsnap;
pub mod cow;
pub mod lazy;
mod mapfiles;
mod mm;
mod pagein;
mod pages;
mod plan;
pub mod validate;
mod vdso;
mod vma;

pub use mapfiles::MapFiles;
pub use mm::{dump_mm, set_mm_map, MmInput};
pub use pages::{copy_jobs, finish_written, Copied, Phase};
pub use pages::{restore_pages, write_pages, Written};
pub use plan::PagePlan;
pub use vma::{
    def_flags, finish_unlocked_vmas, finish_vmas, free_area, lock_vmas, precheck,
    restore_def_flags, restore_vmas, verify_flags, ShmObjects, FIXED_NOREPLACE,
};

/// Highest user address on x86-64 with 4-level paging (and 5-level off).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

// ---------------------------------------------------------------- restore
