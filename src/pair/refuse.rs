//! What a backup cannot hold while its primary lives.
//!
//! A backup is restored beside the running primary on the same machine,
//! so every object whose restore takes something the primary holds, by
//! name, machine-wide, would either fail or take it from the primary:
//!
//! - an inet socket bound to a port (a listener, a bound UDP socket):
//!   the port is the primary's;
//! - a unix socket bound to a name (a listener or a datagram socket whose
//!   path still exists, or an abstract name): the name is the primary's;
//! - a file lock or lease (POSIX, OFD, flock, lease): the primary holds
//!   it, the backup would wait or fail;
//! - a System V shared memory segment with a key: the key is the
//!   primary's segment.
//!
//! A checkpoint holding one of them is refused before a backup is made
//! from it, naming the process (pid in the job's namespace), the fd and
//! the object, and the pair ends (see `crate::pair`): the pair could not
//! keep its promise. Established TCP connections are refused by the
//! dump itself (`cairn pair` does not take `--tcp-established`).

use std::collections::HashMap;

use crate::image::proto::{file_desc, FdTable, Files};

const TCP_LISTEN: u32 = 10;
const SOCK_DGRAM: u32 = 2;

/// The first object of `files` a backup could not hold, described.
pub fn check(files: &Files, tables: &[Option<FdTable>]) -> Option<String> {
    let mut at: HashMap<u32, (u32, u32)> = HashMap::new();
    for t in tables.iter().flatten() {
        for f in &t.fds {
            at.entry(f.desc_id).or_insert((t.pid, f.fd));
        }
    }
    let where_ = |id: u32| {
        at.get(&id).map_or_else(
            || "a process of the job".to_string(),
            |(p, f)| format!("pid {p} (in the job's namespace) fd {f}"),
        )
    };
    for d in &files.descs {
        match &d.kind {
            Some(file_desc::Kind::Inet(sk)) => {
                if let Some(l) = sk.local.as_ref().filter(|l| l.port != 0) {
                    let what = match (sk.protocol, sk.state) {
                        (6, TCP_LISTEN) => "a TCP socket listening on",
                        (6, _) => "a TCP socket bound to",
                        _ => "a UDP socket bound to",
                    };
                    return Some(format!(
                        "{}: {what} {}:{}: the port is the primary's while it lives, a \
                         backup cannot hold it",
                        where_(d.id),
                        l.ip,
                        l.port
                    ));
                }
            }
            Some(file_desc::Kind::Unix(sk)) => {
                let bound = !sk.name.is_empty()
                    && !sk.deleted
                    && (sk.state == TCP_LISTEN || sk.type_ == SOCK_DGRAM);
                if bound {
                    let name = if sk.name.first() == Some(&0) {
                        format!("@{}", String::from_utf8_lossy(&sk.name[1..]))
                    } else {
                        String::from_utf8_lossy(&sk.name)
                            .trim_end_matches('\0')
                            .to_string()
                    };
                    return Some(format!(
                        "{}: a unix socket bound to {name}: the name is the primary's while \
                         it lives, a backup cannot hold it",
                        where_(d.id)
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(l) = files.locks.first() {
        return Some(format!(
            "pid {} (in the job's namespace) fd {}: holds a file lock or lease ({:?}): the \
             primary holds it while it lives, a backup cannot",
            l.pid, l.fd, l.kind
        ));
    }
    if let Some(s) = files.sysv_shm.iter().find(|s| s.key != 0) {
        return Some(format!(
            "a System V shared memory segment with key {:#x}: the key is the primary's \
             segment while it lives, a backup cannot make its own",
            s.key
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::{Fd, FileDesc, FileLock, InetAddr, InetSk, SysvShm, UnixSocket};

    fn table() -> Vec<Option<FdTable>> {
        let mut t = FdTable::new();
        t.pid = 2;
        let mut f = Fd::new();
        f.fd = 5;
        f.desc_id = 7;
        t.fds.push(f);
        vec![Some(t)]
    }

    fn desc(kind: file_desc::Kind) -> FileDesc {
        let mut d = FileDesc::new();
        d.id = 7;
        d.kind = Some(kind);
        d
    }

    #[test]
    fn refused_and_allowed() {
        let mut files = Files::new();
        assert_eq!(check(&files, &table()), None);
        // An unbound inet socket is fine, a listener is not.
        let mut sk = InetSk::new();
        sk.protocol = 6;
        sk.state = TCP_LISTEN;
        files.descs.push(desc(file_desc::Kind::Inet(sk.clone())));
        assert_eq!(check(&files, &table()), None);
        let mut a = InetAddr::new();
        a.ip = "127.0.0.1".into();
        a.port = 8080;
        sk.local = Some(a).into();
        files.descs[0] = desc(file_desc::Kind::Inet(sk));
        let m = check(&files, &table()).unwrap();
        assert!(m.contains("pid 2") && m.contains("fd 5") && m.contains("127.0.0.1:8080"));
        // A unix listener with a path; a removed one is fine.
        let mut u = UnixSocket::new();
        u.state = TCP_LISTEN;
        u.name = b"/tmp/x.sock\0".to_vec();
        files.descs[0] = desc(file_desc::Kind::Unix(u.clone()));
        assert!(check(&files, &table()).unwrap().contains("/tmp/x.sock:"));
        u.deleted = true;
        files.descs[0] = desc(file_desc::Kind::Unix(u));
        assert_eq!(check(&files, &table()), None);
        let mut s = SysvShm::new();
        s.key = 0x1234;
        files.sysv_shm.push(s);
        assert!(check(&files, &table()).unwrap().contains("0x1234"));
        files.sysv_shm[0].key = 0;
        assert_eq!(check(&files, &table()), None);
        files.locks.push(FileLock::new());
        assert!(check(&files, &table()).unwrap().contains("lock"));
    }
}
