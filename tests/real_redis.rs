//! A real program (issue 4): redis-server from Debian's packages, with a
//! data set loaded and a client connected over TCP, checkpointed with
//! `--tcp-established`, killed and restored. The client is this test,
//! outside the dumped tree, speaking RESP: after the restore the same
//! connection finds the data set intact and goes on working, a command
//! sent while redis was checkpointed gets its answer, and new connections
//! work too. A second test dumps with `--leave-running`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const KEYS: usize = 5000;
const LIST: usize = 1000;

/// redis-server, installed from Debian's packages if missing (`cargo xtask
/// test` does that before the tests run; this covers `cargo test` alone).
/// Err: why it cannot be had.
fn redis_server() -> Result<PathBuf, String> {
    let find = || {
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("apt-get: {e}"))
    };
    let install = ["install", "-y", "--no-install-recommends", "redis-server"];
    let out = apt(&install)?;
    if !out.status.success() {
        let _ = apt(&["update"])?;
        let out = apt(&install)?;
        if !out.status.success() {
            return Err(format!(
                "apt-get install redis-server failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    find().ok_or_else(|| "redis-server still missing after apt-get install".into())
}

/// A RESP reply.
#[derive(Debug, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        b.extend_from_slice(a);
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(std::io::Error::other(format!(
            "bad RESP line {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let num = || {
        body.parse::<i64>()
            .map_err(|_| std::io::Error::other(format!("bad RESP number {body:?}")))
    };
    Ok(match line[0] {
        b'+' => Resp::Simple(body.clone()),
        b'-' => Resp::Error(body.clone()),
        b':' => Resp::Int(num()?),
        b'$' => {
            let n = num()?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut v = vec![0u8; n as usize + 2];
                r.read_exact(&mut v)?;
                v.truncate(n as usize);
                Resp::Bulk(Some(v))
            }
        }
        b'*' => {
            let n = num()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Resp::Array(items)
        }
        c => {
            return Err(std::io::Error::other(format!(
                "unknown RESP type {:?}",
                c as char
            )))
        }
    })
}

/// One client connection.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_nodelay(true)?;
        Ok(Client {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn send(&mut self, args: &[&[u8]]) {
        self.w.write_all(&encode(args)).expect("send to redis");
    }

    fn reply(&mut self) -> Resp {
        read_reply(&mut self.r).unwrap_or_else(|e| panic!("reply from redis: {e}"))
    }

    fn call(&mut self, args: &[&[u8]]) -> Resp {
        self.send(args);
        self.reply()
    }
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.extend((0..(i * 7) % 300).map(|k| b'a' + ((i + k) % 26) as u8));
    v
}

/// Loads the data set: KEYS strings (pipelined), a list and a hash.
fn load(c: &mut Client) {
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let mut b = Vec::new();
        for &i in chunk {
            let k = format!("key:{i}");
            b.extend(encode(&[b"SET", k.as_bytes(), &value(i)]));
        }
        c.w.write_all(&b).expect("pipeline SETs");
        for _ in chunk {
            assert_eq!(c.reply(), Resp::Simple("OK".into()));
        }
    }
    for i in 0..LIST {
        c.send(&[b"RPUSH", b"list", format!("item-{i}").as_bytes()]);
    }
    for i in 0..LIST {
        assert_eq!(c.reply(), Resp::Int(i as i64 + 1));
    }
    assert_eq!(
        c.call(&[b"HSET", b"hash", b"a", b"1", b"b", b"2"]),
        Resp::Int(2)
    );
}

/// Checks the whole data set over `c` (`extra` keys besides it).
fn verify(c: &mut Client, extra: i64, what: &str) {
    assert_eq!(
        c.call(&[b"DBSIZE"]),
        Resp::Int(KEYS as i64 + 2 + extra),
        "{what}: DBSIZE"
    );
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("key:{i}")).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let Resp::Array(vals) = c.call(&args) else {
            panic!("{what}: MGET did not return an array");
        };
        for (&i, v) in chunk.iter().zip(vals) {
            assert_eq!(v, Resp::Bulk(Some(value(i))), "{what}: key:{i}");
        }
    }
    let Resp::Array(items) = c.call(&[b"LRANGE", b"list", b"0", b"-1"]) else {
        panic!("{what}: LRANGE");
    };
    assert_eq!(items.len(), LIST, "{what}: list length");
    for (i, it) in items.into_iter().enumerate() {
        assert_eq!(it, Resp::Bulk(Some(format!("item-{i}").into_bytes())));
    }
    assert_eq!(
        c.call(&[b"HGET", b"hash", b"b"]),
        Resp::Bulk(Some(b"2".to_vec())),
        "{what}: hash"
    );
}

/// A redis-server of ours: own config in a temp dir, no persistence, a
/// free port; killed by pid on drop (if still our child).
struct Redis {
    child: Child,
    pid: i32,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(bin: &Path, tag: &str) -> Redis {
        let dir = fresh_dir(tag);
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nsupervised no\nsave \"\"\n\
                 appendonly no\ndir {d}\nlogfile {d}/redis.log\nprotected-mode no\n\
                 databases 1\n",
                d = dir.display()
            ),
        )
        .expect("write redis.conf");
        let mut cmd = Command::new(bin);
        cmd.arg(&conf)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setsid(2), which is async-signal-safe: redis leads its own
        // session, so its images do not refer to the test runner's.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start redis-server");
        let pid = child.id() as i32;
        let r = Redis {
            child,
            pid,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}: {}",
                tail(&r.dir.join("redis.log"), 3000)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn log(&self) -> String {
        tail(&self.dir.join("redis.log"), 3000)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // A test that failed between dump and restore leaves the dump's
        // network lock: lift it (only this redis's).
        remove_lock_tables(self.pid);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn images_of(r: &Redis) -> PathBuf {
    r.dir.join("images")
}

/// Dump (kill) with --tcp-established, restore, same connection.
#[test]
fn redis_tcp_established() {
    if skip_unless_root() {
        return;
    }
    let bin = match redis_server() {
        Ok(b) => b,
        Err(e) => {
            note_skip(&format!("redis-server is not available: {e}"));
            return;
        }
    };
    let mut r = Redis::start(&bin, "redis");
    let mut c = Client::connect(r.port).expect("connect to redis");
    assert_eq!(c.call(&[b"PING"]), Resp::Simple("PONG".into()));
    load(&mut c);
    verify(&mut c, 0, "before the dump");
    let images = images_of(&r);
    // The dump runs in the background; meanwhile the client sends a
    // command, which reaches redis frozen, or is held back by the network
    // lock: either way it must be answered after the restore.
    let mut args = vec!["dump".into(), "-t".into(), r.pid.to_string().into()];
    args.extend(["-D".into(), images.clone().into_os_string()]);
    args.extend(["--tcp-established".into(), "-v".into()]);
    let out_base = r.dir.join("cairn-dump");
    let dumper = std::thread::spawn(move || run_cairn(&args, &out_base, CAIRN_TIMEOUT));
    std::thread::sleep(Duration::from_millis(30));
    c.send(&[b"INCR", b"during-dump"]);
    let out = dumper.join().expect("dump thread");
    assert_ok(&out, &format!("dump of redis-server: {}", r.log()));
    let st = wait_timeout(&mut r.child, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("redis (pid {}) still runs after the dump", r.pid));
    assert!(!st.success(), "redis was not killed by the dump: {st}");
    assert!(wait_pid_gone(r.pid, Duration::from_secs(5)));
    let run = restore_start(&images, &["--tcp-established"], true, r.pid, None);
    // The same connection: the command sent during the dump, the data set,
    // new commands.
    assert_eq!(
        c.reply(),
        Resp::Int(1),
        "the command sent during the dump: {}",
        r.log()
    );
    verify(&mut c, 1, "after the restore, same connection");
    assert_eq!(
        c.call(&[b"SET", b"after", b"restore"]),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        c.call(&[b"GET", b"after"]),
        Resp::Bulk(Some(b"restore".to_vec()))
    );
    assert_eq!(c.call(&[b"INCR", b"during-dump"]), Resp::Int(2));
    // A new connection works too, and sees the same data.
    let mut c2 = Client::connect(r.port).expect("new connection to the restored redis");
    assert_eq!(
        c2.call(&[b"GET", b"key:4321"]),
        Resp::Bulk(Some(value(4321)))
    );
    assert_eq!(
        c2.call(&[b"GET", b"after"]),
        Resp::Bulk(Some(b"restore".to_vec()))
    );
    drop(c2);
    assert_eq!(c.call(&[b"PING"]), Resp::Simple("PONG".into()));
    let tables = Command::new("nft").args(["list", "tables"]).output();
    if let Ok(t) = tables {
        let t = String::from_utf8_lossy(&t.stdout);
        assert!(
            !t.contains(&format!("cairn_{}_", r.pid)),
            "network lock left: {t}"
        );
    }
    drop(run); // kills the restored redis through its pidfd
}

/// --leave-running: redis and its client go on undisturbed; the images
/// restore (once the original is gone) with the data set intact.
#[test]
fn redis_leave_running() {
    if skip_unless_root() {
        return;
    }
    let bin = match redis_server() {
        Ok(b) => b,
        Err(e) => {
            note_skip(&format!("redis-server is not available: {e}"));
            return;
        }
    };
    let mut r = Redis::start(&bin, "redis-lr");
    let mut c = Client::connect(r.port).expect("connect to redis");
    load(&mut c);
    let images = images_of(&r);
    let out = dump(
        r.pid,
        &images,
        &["--tcp-established", "--leave-running", "-v"],
    );
    assert_ok(&out, &format!("dump --leave-running of redis: {}", r.log()));
    verify(&mut c, 0, "after a --leave-running dump");
    assert_eq!(c.call(&[b"SET", b"x", b"1"]), Resp::Simple("OK".into()));
    drop(c);
    let _ = r.child.kill();
    let _ = r.child.wait();
    assert!(wait_pid_gone(r.pid, Duration::from_secs(5)));
    let run = restore_start(&images, &["--tcp-established"], true, r.pid, None);
    let mut c2 = Client::connect(r.port).expect("connect to the restored redis");
    verify(&mut c2, 0, "restored from a --leave-running dump");
    drop(run);
}
