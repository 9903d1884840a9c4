//! The vDSO: the kernel places [vvar], [vvar_vclock] and [vdso] itself
//! when it creates a process; a restore moves them to the addresses they
//! had at dump time with `arch_prctl(ARCH_MAP_VDSO_64)` and checks that
//! this kernel's layout matches the dump's.

use crate::error::{Error, Result};
use crate::image::proto::{MmEntry, Vma, VmaKind};
use crate::procfs;
use crate::remote::Calls;

const ARCH_MAP_VDSO_64: u64 = 0x2003;

/// Moves the vDSO and its data pages of the vessel to where `mm` had
/// them (nothing if it had none).
pub(super) fn restore(agent: &mut dyn Calls, mm: &MmEntry) -> Result<()> {
    let pid = agent.pid();
    // The vDSO: [vvar], [vvar_vclock] and [vdso] move together; the
    // argument is the start of the first of them.
    let special: Vec<&Vma> = mm
        .vmas
        .iter()
        .filter(|v| {
            matches!(
                v.kind.enum_value(),
                Ok(VmaKind::VMA_VDSO | VmaKind::VMA_VVAR | VmaKind::VMA_VVAR_VCLOCK)
            )
        })
        .collect();
    if let Some(base) = special.iter().map(|v| v.start).min() {
        agent.arch_prctl("ARCH_MAP_VDSO_64", ARCH_MAP_VDSO_64, base)?;
        let now = procfs::read_maps(pid)?;
        for v in &special {
            if !now
                .iter()
                .any(|m| m.start == v.start && m.end == v.end && m.path == v.name)
            {
                return Err(Error::Restore(format!(
                    "pid {pid}: {} could not be placed at {:#x}-{:#x}: the vDSO layout of this kernel differs from the dump's",
                    v.name, v.start, v.end
                )));
            }
        }
    }
    Ok(())
}
