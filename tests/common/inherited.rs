//! The test process's inherited descriptors (issue 14).

/// Marks every descriptor above 2 that the test process inherited without
/// close-on-exec (a runner's pipe, a shell's job-control fds) close-on-exec,
/// once, so that workloads, which the harness starts with stdin, stdout and
/// stderr only, do not inherit them: a dump refuses a pipe whose other end
/// is outside the tree. Everything the tests open themselves is
/// close-on-exec already (Rust opens with O_CLOEXEC).
pub fn no_leaked_fds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let fds: Vec<i32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in fds {
            if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFD) {
                let fl = FdFlag::from_bits_truncate(fl);
                if !fl.contains(FdFlag::FD_CLOEXEC) {
                    let _ = fcntl(fd, FcntlArg::F_SETFD(fl | FdFlag::FD_CLOEXEC));
                }
            }
        }
    });
}
