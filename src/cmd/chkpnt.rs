//! `chkpnt` and `resume`: the two commands of the Solaris checkpointing
//! guide that inspired cairn, as thin front ends over [`crate::dump`] and
//! [`crate::restore`]:
//!
//! ```text
//! chkpnt -p <PID> [-od <DIR>] [-k] [--file-contents=all|none|SIZE] [-v]
//! resume -od <DIR> [-bp <DIR1>] [-v]
//! ```
//!
//! `chkpnt` checkpoints PID and its tree into DIR (default: a new
//! directory `.chkpnt_at_YYYY_MM_DD_-_HH_MM` in the current directory,
//! local time, with `_2`, `_3` ... added if that exists) and leaves it
//! running unless `-k`. `resume` restores from DIR and returns once the
//! tree runs (detached); `-bp DIR1` names the directory the program was
//! moved to. Both print two fixed lines on success and one line on error;
//! exit codes are cairn's (README, "Exit codes").

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::{exit, Error, Phase};
use crate::image::proto::Inventory;
use crate::image::{names, ImageDir, ImageType};
use crate::kinds::contents::ContentsLimit;
use crate::options::{DumpOptions, RestoreOptions};
use crate::sys::time::LocalTime;

pub const CHKPNT_USAGE: &str =
    "chkpnt -p <PID> [-od <DIR>] [-k] [--file-contents=all|none|SIZE] [-v]";
pub const RESUME_USAGE: &str = "resume -od <DIR> [-bp <DIR1>] [-v]";

/// The first line `chkpnt` prints on success.
pub const CHKPNT_OK: &str = "Checkpoint operation finished successfully.";
/// The first line `resume` prints on success.
pub const RESUME_OK: &str = "Resume operation finished successfully.";

/// `.chkpnt_at_YYYY_MM_DD_-_HH_MM`, the guide's directory name.
pub fn default_dir_name(t: &LocalTime) -> String {
    format!(
        ".chkpnt_at_{:04}_{:02}_{:02}_-_{:02}_{:02}",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// Creates the directory `base` (mode 0700) in `parent`, or `base_2`,
/// `base_3` ... if that exists. Returns the name it got.
pub fn create_new_dir(parent: &Path, base: &str) -> std::io::Result<String> {
    use std::os::unix::fs::DirBuilderExt;
    for n in 1..10_000 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        };
        match std::fs::DirBuilder::new()
            .mode(0o700)
            .create(parent.join(&name))
        {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!("{base}: no free name")))
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Run(T),
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ChkpntOpts {
    pub pid: i32,
    pub dir: Option<PathBuf>,
    pub kill: bool,
    pub file_contents: ContentsLimit,
    pub verbose: u8,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResumeOpts {
    pub dir: PathBuf,
    pub exe_dir: Option<PathBuf>,
    pub verbose: u8,
}

/// Walks an argument list: `-x VALUE` options and flags, nothing else.
struct Args {
    args: std::vec::IntoIter<OsString>,
}

impl Args {
    fn value(&mut self, opt: &str) -> Result<OsString, String> {
        match self.args.next() {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("{opt} needs a value")),
        }
    }
}

/// Parses `chkpnt`'s arguments (without the program name).
pub fn parse_chkpnt(args: Vec<OsString>) -> Result<Parsed<ChkpntOpts>, String> {
    let mut a = Args {
        args: args.into_iter(),
    };
    let mut pid = None;
    let mut opts = ChkpntOpts {
        pid: 0,
        dir: None,
        kill: false,
        file_contents: ContentsLimit::default(),
        verbose: 0,
    };
    while let Some(arg) = a.args.next() {
        let s = arg.to_string_lossy();
        match s.as_ref() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-p" => {
                let v = a.value("-p")?;
                let v = v.to_string_lossy();
                match v.parse::<i32>() {
                    Ok(p) if p > 0 => pid = Some(p),
                    _ => return Err(format!("-p {v}: not a process id")),
                }
            }
            "-od" => opts.dir = Some(PathBuf::from(a.value("-od")?)),
            "-k" => opts.kill = true,
            "-v" | "-vv" | "-vvv" => opts.verbose += (s.len() - 1) as u8,
            "--file-contents" => {
                let v = a.value("--file-contents")?;
                opts.file_contents = v.to_string_lossy().parse()?;
            }
            _ => match s.strip_prefix("--file-contents=") {
                Some(v) => opts.file_contents = v.parse()?,
                None => return Err(format!("unknown argument {s}")),
            },
        }
    }
    opts.pid = pid.ok_or("-p <PID> is required")?;
    Ok(Parsed::Run(opts))
}

/// Parses `resume`'s arguments (without the program name).
pub fn parse_resume(args: Vec<OsString>) -> Result<Parsed<ResumeOpts>, String> {
    let mut a = Args {
        args: args.into_iter(),
    };
    let mut dir = None;
    let mut exe_dir = None;
    let mut verbose = 0;
    while let Some(arg) = a.args.next() {
        let s = arg.to_string_lossy();
        match s.as_ref() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-od" => dir = Some(PathBuf::from(a.value("-od")?)),
            "-bp" => exe_dir = Some(PathBuf::from(a.value("-bp")?)),
            "-v" | "-vv" | "-vvv" => verbose += (s.len() - 1) as u8,
            _ => return Err(format!("unknown argument {s}")),
        }
    }
    Ok(Parsed::Run(ResumeOpts {
        dir: dir.ok_or("-od <DIR> is required")?,
        exe_dir,
        verbose,
    }))
}

fn usage_error(prog: &str, usage: &str, msg: &str) -> ExitCode {
    eprintln!("{prog}: {msg} (usage: {usage})");
    ExitCode::from(exit::USAGE)
}

fn help(usage: &str, text: &str) -> ExitCode {
    println!("usage: {usage}\n\n{text}");
    ExitCode::SUCCESS
}

const CHKPNT_HELP: &str = "Checkpoints process PID and its children (cairn dump).
  -p <PID>     the process to checkpoint
  -od <DIR>    where the images go (default: a new .chkpnt_at_YYYY_MM_DD_-_HH_MM here)
  -k           end the process after the checkpoint (default: it keeps running)
  --file-contents=all|none|SIZE
               keep the contents of open files up to SIZE each (default 64M)
  -v           more log output on stderr";

const RESUME_HELP: &str = "Restores a process checkpointed with chkpnt (cairn restore -d).
  -od <DIR>    the checkpoint directory
  -bp <DIR1>   the directory the program was moved to since the checkpoint
  -v           more log output on stderr";

/// The oracle for the guide's commands, as the test harness uses it for
/// `cairn dump`/`restore` (hidden: not in the guide's usage):
/// `CAIRN_ORACLE=1` makes chkpnt dump with `--oracle` and resume restore
/// with `--compare` (docs/ORACLE.md).
pub const ORACLE_ENV: &str = "CAIRN_ORACLE";

fn oracle_env() -> bool {
    std::env::var_os(ORACLE_ENV).is_some_and(|v| v == "1")
}

/// `chkpnt`'s main.
pub fn chkpnt_main() -> ExitCode {
    // The dump's guardian is this binary re-executed (crate::guard).
    if let Some(code) = crate::guard::run_hidden() {
        return ExitCode::from(code);
    }
    let prog = "chkpnt";
    let opts = match parse_chkpnt(std::env::args_os().skip(1).collect()) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => return help(CHKPNT_USAGE, CHKPNT_HELP),
        Ok(Parsed::Version) => {
            println!("chkpnt (cairn) {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(prog, CHKPNT_USAGE, &msg),
    };
    let _ = crate::log::init(opts.verbose, None);
    let fail = |e: Error| {
        eprintln!("Checkpoint operation failed: {e}");
        ExitCode::from(e.exit_code(Phase::Dump))
    };
    // The default directory is made here (and removed again if the dump
    // fails); the directory given with -od is created by the dump.
    let (dir, shown, made) = match &opts.dir {
        Some(d) => (d.clone(), d.display().to_string(), false),
        None => {
            let name = crate::sys::time::local_now()
                .map_err(|e| Error::io("localtime", e))
                .and_then(|t| {
                    let base = default_dir_name(&t);
                    create_new_dir(Path::new("."), &base).map_err(|e| Error::io(&base, e))
                });
            match name {
                Ok(n) => (PathBuf::from(&n), n, true),
                Err(e) => return fail(e),
            }
        }
    };
    let args = DumpOptions {
        pid: opts.pid,
        images_dir: dir.clone(),
        leave_running: !opts.kill,
        // A process started from a shell is checkpointed as a job of it.
        shell_job: true,
        ext_unix_sk: false,
        compress_level: crate::options::DEFAULT_COMPRESS_LEVEL,
        file_contents: opts.file_contents,
        tcp_established: false,
        network_lock: Default::default(),
        incr: Default::default(),
        freeze: Default::default(),
        oracle: oracle_env(),
        external: Vec::new(),
        page_server: None,
    };
    match crate::dump::dump(&args) {
        Ok(_) => {
            println!("{CHKPNT_OK}");
            println!("Process image is placed in directory : {shown}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            if made {
                let _ = std::fs::remove_dir(&dir);
            }
            fail(e)
        }
    }
}

/// `resume`'s main.
pub fn resume_main() -> ExitCode {
    // The restore's guardian is this binary re-executed (crate::guard).
    if let Some(code) = crate::guard::run_hidden() {
        return ExitCode::from(code);
    }
    let prog = "resume";
    let opts = match parse_resume(std::env::args_os().skip(1).collect()) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => return help(RESUME_USAGE, RESUME_HELP),
        Ok(Parsed::Version) => {
            println!("resume (cairn) {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(prog, RESUME_USAGE, &msg),
    };
    let _ = crate::log::init(opts.verbose, None);
    let args = RestoreOptions {
        images_dir: opts.dir.clone(),
        detached: true,
        pidfile: None,
        // A shell job comes back into resume's terminal.
        shell_job: true,
        ignore_file_changes: false,
        pid_restore: None,
        exe_dir: opts.exe_dir.clone(),
        exe_dir_flag: "-bp".into(),
        tcp_established: false,
        allow_foreign_images: false,
        compare: oracle_env(),
        inherit_fds: Vec::new(),
        pid_ns: false,
        ext_unix_sk_lose_peercred: false,
    };
    match crate::restore::restore(&args) {
        Ok(_) => {
            let pid = ImageDir::open(&opts.dir)
                .and_then(|d| d.read::<Inventory>(ImageType::Inventory, names::INVENTORY))
                .map(|i| i.root_pid)
                .unwrap_or(0);
            println!("{RESUME_OK}");
            println!(
                "Process {pid} resumed from directory : {}",
                opts.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            match &e {
                // Said by the line's own prefix already.
                Error::Restore(msg) => eprintln!("Resume operation failed: {msg}"),
                e => eprintln!("Resume operation failed: {e}"),
            }
            ExitCode::from(e.exit_code(Phase::Restore))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn dir_name_is_the_guides() {
        let t = LocalTime {
            year: 2005,
            month: 2,
            day: 16,
            hour: 10,
            minute: 59,
            second: 7,
        };
        assert_eq!(default_dir_name(&t), ".chkpnt_at_2005_02_16_-_10_59");
        let t = LocalTime {
            year: 2026,
            month: 12,
            day: 1,
            hour: 0,
            minute: 5,
            second: 0,
        };
        assert_eq!(default_dir_name(&t), ".chkpnt_at_2026_12_01_-_00_05");
    }

    #[test]
    fn new_dirs_get_a_suffix() {
        let p = std::env::temp_dir().join(format!("cairn-chkpnt-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        assert_eq!(create_new_dir(&p, ".x").unwrap(), ".x");
        assert_eq!(create_new_dir(&p, ".x").unwrap(), ".x_2");
        assert_eq!(create_new_dir(&p, ".x").unwrap(), ".x_3");
        assert!(p.join(".x_3").is_dir());
        let _ = std::fs::remove_dir_all(&p);
    }

    #[test]
    fn chkpnt_args() {
        assert_eq!(
            parse_chkpnt(os(&["-p", "29834"])),
            Ok(Parsed::Run(ChkpntOpts {
                pid: 29834,
                dir: None,
                kill: false,
                file_contents: ContentsLimit::Max(64 << 20),
                verbose: 0,
            }))
        );
        assert_eq!(
            parse_chkpnt(os(&[
                "-k",
                "-od",
                "d",
                "-p",
                "7",
                "--file-contents=none",
                "-v"
            ])),
            Ok(Parsed::Run(ChkpntOpts {
                pid: 7,
                dir: Some("d".into()),
                kill: true,
                file_contents: ContentsLimit::None,
                verbose: 1,
            }))
        );
        assert!(matches!(
            parse_chkpnt(os(&["-p", "7", "--file-contents", "1G"])),
            Ok(Parsed::Run(ChkpntOpts {
                file_contents: ContentsLimit::Max(0x4000_0000),
                ..
            }))
        ));
        assert_eq!(parse_chkpnt(os(&["--help"])), Ok(Parsed::Help));
        for bad in [
            &[][..],
            &["-p"],
            &["-p", "x"],
            &["-p", "0"],
            &["-p", "1", "-od"],
            &["-p", "1", "-x"],
            &["-p", "1", "--file-contents=lots"],
        ] {
            assert!(parse_chkpnt(os(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resume_args() {
        assert_eq!(
            parse_resume(os(&["-od", ".chkpnt_at_2005_02_16_-_10_59/"])),
            Ok(Parsed::Run(ResumeOpts {
                dir: ".chkpnt_at_2005_02_16_-_10_59/".into(),
                exe_dir: None,
                verbose: 0,
            }))
        );
        assert_eq!(
            parse_resume(os(&["-bp", "/scratch/u", "-od", "d"])),
            Ok(Parsed::Run(ResumeOpts {
                dir: "d".into(),
                exe_dir: Some("/scratch/u".into()),
                verbose: 0,
            }))
        );
        for bad in [&[][..], &["-bp", "x"], &["-od"], &["-od", "d", "-k"]] {
            assert!(parse_resume(os(bad)).is_err(), "{bad:?}");
        }
    }
}
