//! `--pid-ns`: the tree lives in a pid namespace of its own, whose init
//! (pid 1 there) is cairn's: `cairn __pidns-exec` or `cairn
//! __pidns-restore` (this binary), born in a new pid namespace with a
//! mount namespace of its own (a copy of cairn's, mounts slaved, so that
//! the host's new mounts show) where a fresh `/proc` shows that pid
//! namespace. The init reaps every orphan and exits when the tree's root
//! exits, with its status (128 + N for a signal). cairn gives it
//! PDEATHSIG, so a killed `cairn run` takes the namespace (and the job)
//! with it.
//!
//! - `run --pid-ns` starts the init, which starts CMD (pid 2 there).
//! - `restore --pid-ns` starts the init, which restores the tree itself,
//!   seeing the namespace's pids in its `/proc`: every process gets its
//!   pid there (clone3 `set_tid` at the innermost level), whatever is
//!   taken outside; the root is the init's child, as CMD was.
//! - A dump of a tree whose root is in another pid namespace than cairn
//!   (`cairn dump -t PID` from outside, or `cairn run`'s checkpoints)
//!   runs inside that namespace: `cairn dump` is started there with a
//!   `/proc` of that namespace, so it records the pids the tree knows.
//!   A tree whose processes are in different pid namespaces, or whose
//!   root is a namespace's init, is refused.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{absolute, cairn_exe, dump_argv, inner_pid, restore_argv, verbosity_args, Job};
use crate::error::{Error, Phase, Result};
use crate::image::proto::Pstree;
use crate::image::{names, ImageDir, ImageType};
use crate::options::{DumpOptions, RestoreOptions};
use crate::sys::pidns as sysns;

/// The hidden command of the init that starts CMD.
pub const EXEC_CMD: &str = "__pidns-exec";
/// The hidden command of the init that restores a tree.
pub const RESTORE_CMD: &str = "__pidns-restore";

fn spawn_err(what: &str, e: std::io::Error) -> Error {
    Error::Usage(format!("cannot start {what}: {e}"))
}

/// Spawns `cmd` as the init of a new pid namespace.
pub(crate) fn spawn_new_ns(cmd: &mut Command, prep: sysns::Prep) -> Result<Child> {
    let me = crate::sys::task::getpid();
    let own = sysns::own().map_err(|e| Error::sys(me, "open /proc/self/ns/pid", e))?;
    sysns::new_for_children()
        .map_err(|e| Error::sys(me, "unshare(CLONE_NEWPID) (needs CAP_SYS_ADMIN)", e))?;
    let r = sysns::spawn(cmd, prep);
    if let Err(e) = sysns::enter_for_children(own.as_fd()) {
        warn!("cannot go back to cairn's pid namespace for its next children: {e}");
    }
    r.map_err(|e| spawn_err("the pid namespace's init", e))
}

/// Spawns `cmd` in the pid namespace of `pid`, with `prep`.
pub fn spawn_in_ns_of(pid: i32, cmd: &mut Command, prep: sysns::Prep) -> Result<Child> {
    let me = crate::sys::task::getpid();
    let own = sysns::own().map_err(|e| Error::sys(me, "open /proc/self/ns/pid", e))?;
    let ns = sysns::of(pid).map_err(|e| Error::sys(pid, "open its pid namespace", e))?;
    sysns::enter_for_children(ns.as_fd())
        .map_err(|e| Error::sys(pid, "setns into its pid namespace", e))?;
    let r = sysns::spawn(cmd, prep);
    if let Err(e) = sysns::enter_for_children(own.as_fd()) {
        warn!("cannot go back to cairn's pid namespace for its next children: {e}");
    }
    r.map_err(|e| spawn_err("cairn in the tree's pid namespace", e))
}

/// The children of `pid` (every thread's).
pub(crate) fn children(pid: i32) -> Vec<i32> {
    crate::procfs::list_tasks(pid)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|t| crate::procfs::read_children(pid, t).unwrap_or_default())
        .collect()
}

/// Starts the init of a new pid namespace ([`EXEC_CMD`]) that runs `cmd`
/// (pid 2 there) with `env` added to cairn's environment, and waits up to
/// 30 s for it: (the init, CMD), as cairn sees them; CMD is `None` if the
/// init ended first or CMD did not start in time.
pub(crate) fn spawn_exec(
    cmd: &[OsString],
    env: &[(OsString, OsString)],
) -> Result<(i32, Option<i32>)> {
    let mut c = Command::new(cairn_exe()?);
    c.args(verbosity_args(0))
        .arg(EXEC_CMD)
        .arg("--")
        .args(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    let prep = sysns::Prep {
        own_proc: true,
        pdeathsig: true,
        setsid: true,
    };
    let ipid = spawn_new_ns(&mut c, prep)?.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(&root) = children(ipid).first() {
            return Ok((ipid, Some(root)));
        }
        // Ended (a zombie, not reaped here) or not started in time.
        let alive = crate::procfs::read_stat(ipid).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'));
        if !alive || Instant::now() > deadline {
            return Ok((ipid, None));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `run --pid-ns`: the init starts `cmd` (with `env`); the job is the
/// init.
pub(super) fn start_exec(cmd: &[OsString], env: &[(OsString, OsString)]) -> Result<Job> {
    let (ipid, root) = spawn_exec(cmd, env)?;
    let Some(root) = root else {
        // Ended already: the job's status is the init's.
        return Ok(Job {
            child: ipid,
            root: ipid,
            in_ns: true,
        });
    };
    crate::log::write(
        0,
        format_args!(
            "run: started {} as pid {root} (pid {} in its pid namespace, init {ipid})",
            cmd[0].to_string_lossy(),
            inner_pid(root).unwrap_or(0)
        ),
    );
    Ok(Job {
        child: ipid,
        root,
        in_ns: true,
    })
}

/// Starts the init that restores `args` in a new pid namespace, waits
/// until the tree runs, and returns (the init's pid, the root's pid), as
/// cairn sees them.
pub fn start_restore(args: &RestoreOptions, pdeathsig: bool) -> Result<(i32, i32)> {
    let mut ra = restore_argv(args);
    ra.remove(0);
    let mut c = Command::new(cairn_exe()?);
    c.args(verbosity_args(0))
        .arg(RESTORE_CMD)
        .args(ra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let prep = sysns::Prep {
        own_proc: true,
        pdeathsig,
        setsid: true,
    };
    let mut init = spawn_new_ns(&mut c, prep)?;
    let ipid = init.id() as i32;
    let mut line = String::new();
    if let Some(out) = init.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("err ") {
        let _ = init.wait();
        let (code, msg) = rest.split_once(' ').unwrap_or(("1", rest));
        return Err(Error::Forwarded {
            code: code.parse().unwrap_or(1),
            msg: msg.to_string(),
        });
    }
    let Some(inner) = line.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) else {
        let st = init.wait().ok().and_then(|s| s.code()).unwrap_or(1);
        return Err(Error::Restore(format!(
            "the pid namespace's init (pid {ipid}) ended before the tree ran (exit code {st})"
        )));
    };
    let root = children(ipid)
        .into_iter()
        .find(|&c| inner_pid(c).ok() == Some(inner))
        .ok_or_else(|| {
            Error::Restore(format!(
                "the restored root (pid {inner} in its namespace) is not a child of the init {ipid}"
            ))
        })?;
    info!("restored pid {root} (pid {inner} in a new pid namespace, init {ipid})");
    Ok((ipid, root))
}

/// `cairn restore --pid-ns`.
pub fn restore(args: &RestoreOptions) -> Result<i32> {
    let (init, root) = start_restore(args, !args.detached)?;
    if let Some(p) = &args.pidfile {
        crate::sys::safefs::replace_file(p, format!("{root}\n").as_bytes(), 0o644)
            .map_err(|e| Error::io(p, e))?;
    }
    if args.detached {
        return Ok(0);
    }
    match sysns::wait_exit(init, false) {
        Ok(Some((_, st))) => Ok(sysns::status_code(st)),
        Ok(None) => Ok(1),
        Err(e) => Err(Error::sys(init, "waitpid", e)),
    }
}

/// The init: reaps every child until `root` exits; its status.
fn reap_until(root: i32) -> i32 {
    loop {
        match sysns::wait_exit(-1, false) {
            Ok(Some((p, st))) if p == root => return sysns::status_code(st),
            Ok(_) => {}
            Err(_) => return 1,
        }
    }
}

/// `cairn __pidns-exec -- CMD`: the init of `run --pid-ns`.
pub fn exec_init(cmd: &[OsString]) -> Result<i32> {
    let Some(prog) = cmd.first() else {
        return Err(Error::Usage("no command".into()));
    };
    let mut c = Command::new(prog);
    c.args(&cmd[1..]);
    let prep = sysns::Prep {
        setsid: true,
        ..Default::default()
    };
    let child = match sysns::spawn(&mut c, prep) {
        Ok(ch) => ch,
        Err(e) => {
            eprintln!("cairn: cannot run {}: {e}", prog.to_string_lossy());
            return Ok(127);
        }
    };
    Ok(reap_until(child.id() as i32))
}

/// `cairn __pidns-restore RESTORE-ARGS`: the init of `restore --pid-ns`,
/// in the new namespace with its `/proc`. Says `ok PID` (the root's pid
/// in the namespace) or `err CODE MESSAGE` on stdout.
pub fn restore_init(args: &RestoreOptions) -> Result<i32> {
    use std::io::Write;
    let r = (|| -> Result<i32> {
        crate::image::allow_foreign_images(args.allow_foreign_images);
        let (dir, _) = ImageDir::load(&args.images_dir)?;
        let pstree: Pstree = dir.read(ImageType::Pstree, names::PSTREE)?;
        let ids = pstree
            .entries
            .iter()
            .flat_map(|e| std::iter::once(e.pid).chain(e.threads.iter().copied()));
        if pstree.entries.iter().any(|e| e.pid == 1) {
            return Err(Error::Restore(
                "the tree has a process with pid 1, which the new pid namespace's init \
                 (cairn's) takes: it cannot be restored with --pid-ns"
                    .into(),
            ));
        }
        // Whatever cairn starts here from now on (its guardian) gets a
        // pid above every pid of the tree.
        let max = ids.max().unwrap_or(1) as i32;
        sysns::set_last_pid(max).map_err(|e| Error::io("/proc/sys/kernel/ns_last_pid", e))?;
        let mut a = args.clone();
        a.pid_ns = false;
        a.detached = false;
        a.pidfile = None;
        crate::restore::start(&a)?.ok_or_else(|| Error::Restore("internal: detached".into()))
    })();
    let mut out = std::io::stdout();
    match r {
        Ok(root) => {
            let _ = writeln!(out, "ok {root}");
            let _ = out.flush();
            Ok(reap_until(root))
        }
        Err(e) => {
            let _ = writeln!(out, "err {} {e}", e.exit_code(Phase::Restore));
            let _ = out.flush();
            Ok(1)
        }
    }
}

/// Refuses a tree whose processes are not all in the pid namespace of
/// its root: one inside a namespace nested in the tree's could not be
/// given its pids back.
fn same_ns(root: i32) -> Result<u64> {
    let ino =
        |p: i32| sysns::ino(&p.to_string()).map_err(|e| Error::sys(p, "its pid namespace", e));
    let want = ino(root)?;
    for p in crate::procfs::descendants(root) {
        match ino(p) {
            Ok(i) if i != want => {
                return Err(Error::unsupported(
                    p,
                    format!(
                        "lives in another pid namespace than the tree's root {root} (pid {} \
                         there): a tree spanning pid namespaces is not supported",
                        inner_pid(p).unwrap_or(0)
                    ),
                ))
            }
            _ => {}
        }
    }
    Ok(want)
}

/// `cairn dump`: in cairn's pid namespace as always, or, for a tree in
/// another (a child) pid namespace, by a `cairn dump` started inside it.
pub fn dump(o: &DumpOptions) -> Result<i32> {
    let theirs = match same_ns(o.pid) {
        Ok(i) => i,
        // No such process: the dump says so.
        Err(Error::Sys { .. }) => return crate::dump::dump(o).map(|_| 0),
        Err(e) => return Err(e),
    };
    let mine = sysns::ino("self").map_err(|e| Error::io("/proc/self/ns/pid", e))?;
    if theirs == mine {
        return crate::dump::dump(o).map(|_| 0);
    }
    let inner = inner_pid(o.pid)?;
    if inner == 1 {
        return Err(Error::unsupported(
            o.pid,
            "is the init of its pid namespace (pid 1 there): cairn cannot restore a \
             namespace's init; dump the tree below it",
        ));
    }
    let mut d = o.clone();
    d.pid = inner;
    d.images_dir = absolute(&o.images_dir)?;
    if let Some(t) = d.page_server.as_mut() {
        t.key = absolute(&t.key)?;
    }
    info!(
        "pid {} lives in a child pid namespace (pid {inner} there): dumped from inside it",
        o.pid
    );
    let mut c = Command::new(cairn_exe()?);
    c.args(verbosity_args(0)).args(dump_argv(&d));
    let prep = sysns::Prep {
        own_proc: true,
        pdeathsig: true,
        setsid: false,
    };
    let mut child = spawn_in_ns_of(o.pid, &mut c, prep)?;
    let pid = child.id() as i32;
    let st = child.wait().map_err(|e| Error::sys(pid, "waitpid", e))?;
    Ok(st.code().unwrap_or(1))
}
