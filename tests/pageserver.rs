//! The page server (issue 16): `cairn page-server`, `cairn dump
//! --page-server` and `cairn restore --lazy-pages`. The page server runs
//! in one network namespace, the dump (or the lazy restore) in another,
//! joined by a veth pair that each test makes (addresses only inside
//! them; both are removed at the end). The workload is `mem_rewrite`:
//! writers that check every page before rewriting it, and at SIGTERM
//! every page against their positions, so a page that came back wrong,
//! or zero, is a FAIL.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::netns::{in_netns, Net};
use common::*;

const PORT: &str = "7017";

fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, [byte; 32]).expect("write key");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod key");
    p
}

/// `cairn page-server` in namespace B, its stderr in `DIR/../page-server-TAG.err`;
/// returns once it listens. Dropping the child is the caller's (by pid).
struct PageServer {
    child: Child,
    err: PathBuf,
}

impl PageServer {
    fn start(net: &Net, dir: &Path, key: &Path, tag: &str, once: bool) -> PageServer {
        let err = dir.with_file_name(format!("page-server-{tag}.err"));
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["-v", "page-server", "-D"])
            .arg(dir)
            .args(["--address", &net.addr_b, "--port", PORT, "--key"])
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).expect("stderr file"));
        if once {
            cmd.arg("--once");
        }
        let mut ps = PageServer {
            child: Net::spawn(&net.b, &mut cmd),
            err,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !ps.log().contains("listening on") {
            if let Ok(Some(st)) = ps.child.try_wait() {
                panic!("the page server exited ({st}): {}", ps.log());
            }
            assert!(Instant::now() < end, "the page server does not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        ps
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The flags of a dump through the page server of `net`.
fn ps_flags<'a>(net: &'a Net, key: &'a Path) -> Vec<&'a str> {
    vec![
        "-v",
        "--page-server",
        "--address",
        &net.addr_b,
        "--port",
        PORT,
        "--key",
        key.to_str().unwrap(),
    ]
}

/// `cairn dump` of `w` from namespace A (the page server is in B).
fn dump_from_a(net: &Net, w: &Workload, flags: &[&str], env: &[(&str, &str)]) -> Output {
    let pid = w.pid.to_string();
    let mut args = vec![
        "dump",
        "-t",
        &pid,
        "-D",
        w.images.to_str().unwrap(),
        "--oracle",
    ];
    args.extend_from_slice(flags);
    let err = w.dir.join(format!(
        "dump-{}.err",
        fs::read_dir(&w.dir).map_or(0, |d| d.count())
    ));
    let mut cmd = Command::new(cairn_bin());
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Net::spawn(&net.a, &mut cmd);
    let status = wait_timeout(&mut child, CAIRN_TIMEOUT).unwrap_or_else(|| {
        kill_tree(&mut child);
        panic!("cairn dump did not finish: {}", tail(&err, 8000));
    });
    Output {
        status,
        stdout: Vec::new(),
        stderr: fs::read(&err).unwrap_or_default(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The workload dumped through a page server (`--once`, which exits 0
/// once the pages are committed): `w.images` has every image but the
/// pages, `pages` has them. `extra`: more flags of the dump.
fn dump_through_page_server(net: &Net, w: &mut Workload, key: &Path, pages: &Path, extra: &[&str]) {
    let mut ps = PageServer::start(net, pages, key, "push", true);
    let mut flags = ps_flags(net, key);
    flags.extend_from_slice(extra);
    let out = dump_from_a(net, w, &flags, &[]);
    assert!(out.status.success(), "dump: {}", describe(&out));
    let st = wait_timeout(&mut ps.child, Duration::from_secs(30)).expect("page server exit");
    assert!(st.success(), "page server: {}", ps.log());
    w.expect_killed_by_dump();
    assert_eq!(
        names(pages),
        ["inventory.img", "pages.img", "pagestore.img"],
        "the page server's directory"
    );
    let local = names(&w.images);
    assert!(
        !local
            .iter()
            .any(|n| n == "pages.img" || n == "pagestore.img"),
        "pages in the dump's own directory: {local:?}"
    );
}

/// Dump through a page server in another namespace, kill, restore from
/// the two directories put together: the workload checks its memory. The
/// dump's directory alone is refused, naming the page server.
#[test]
fn page_server_dump_restore() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("1gbit");
    let mut w = Workload::start("mem_rewrite", &["--mib", "64", "--threads", "2"]);
    let key = key_file(&w.dir, "key", 0x41);
    let pages = w.dir.join("pages");
    dump_through_page_server(&net, &mut w, &key, &pages, &[]);
    let out = restore_expect_fail(&w.images, &[], w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("page server at") && err.contains("--lazy-pages"),
        "{err}"
    );
    for f in ["pages.img", "pagestore.img"] {
        fs::copy(pages.join(f), w.images.join(f)).expect("copy the pages");
    }
    restore_wait(&w.images, &[], w.pid, &w.log);
}

/// A dump with another key than the page server's: refused before the
/// tree is touched; the target runs on as before and the server goes on
/// listening (nothing written).
#[test]
fn page_server_wrong_key_refused() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("1gbit");
    let mut w = Workload::start("mem_rewrite", &["--mib", "16", "--threads", "1"]);
    let key = key_file(&w.dir, "key", 0x42);
    let other = key_file(&w.dir, "other", 0x43);
    let pages = w.dir.join("pages");
    let mut ps = PageServer::start(&net, &pages, &key, "wrongkey", true);
    let out = dump_from_a(&net, &w, &ps_flags(&net, &other), &[]);
    assert!(
        !out.status.success(),
        "dump with a wrong key: {}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong key") || err.contains("another key"),
        "{}",
        describe(&out)
    );
    assert!(
        !w.images.exists(),
        "the refused dump left {:?}",
        names(&w.images)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(ps.child.try_wait(), Ok(None)),
        "the page server stopped for a peer without the key: {}",
        ps.log()
    );
    assert!(ps.log().contains("refused"), "{}", ps.log());
    assert!(
        names(&pages).iter().all(|n| n.starts_with('.')),
        "{:?}",
        names(&pages)
    );
    ps.kill();
    w.terminate_original_expect_pass();
}

/// The page server killed while the dump waits to commit (its pages sent
/// and staged there): the dump fails, the target runs on, neither
/// directory holds a checkpoint.
#[test]
fn page_server_killed_mid_dump_target_runs_on() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("1gbit");
    let mut w = Workload::start("mem_rewrite", &["--mib", "32", "--threads", "1"]);
    let key = key_file(&w.dir, "key", 0x44);
    let pages = w.dir.join("pages");
    let go = w.dir.join("go");
    let mut ps = PageServer::start(&net, &pages, &key, "killed", true);
    let dump = std::thread::scope(|s| {
        let h = s.spawn(|| {
            dump_from_a(
                &net,
                &w,
                &ps_flags(&net, &key),
                &[
                    ("CAIRN_PAUSE_AT", "page-server-commit"),
                    ("CAIRN_PAUSE_UNTIL", go.to_str().unwrap()),
                ],
            )
        });
        // The dump is paused with every page at the server: kill it.
        let end = Instant::now() + Duration::from_secs(60);
        while !fs::read_dir(&w.dir)
            .expect("test dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("dump-"))
            .any(|e| {
                fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains("paused at page-server-commit")
            })
        {
            assert!(Instant::now() < end, "the dump did not pause");
            std::thread::sleep(Duration::from_millis(20));
        }
        ps.kill();
        fs::write(&go, "").expect("release the dump");
        h.join().expect("dump thread")
    });
    assert!(
        !dump.status.success(),
        "the dump succeeded: {}",
        describe(&dump)
    );
    assert!(
        !w.images.exists(),
        "the failed dump left {:?}",
        names(&w.images)
    );
    assert!(
        !pages.join("inventory.img").exists() && !pages.join("pages.img").exists(),
        "pages committed by a killed page server: {:?}",
        names(&pages)
    );
    w.terminate_original_expect_pass();
}

/// The image directory's flags of a lazy restore's `restore_*` helper:
/// no `--compare` (the tree runs with its memory not yet in: its RSS is
/// not the dumped one while pages come in).
const NO_COMPARE_LAZY: &str = "@no-compare: --lazy-pages: the tree runs before its memory is in";

/// The flags of a lazy restore from the page server at `server`.
fn lazy_flags<'a>(server: &'a str, key: &'a Path) -> [&'a str; 6] {
    [
        "--lazy-pages",
        "--page-server",
        server,
        "--key",
        key.to_str().unwrap(),
        NO_COMPARE_LAZY,
    ]
}

/// Restores that say the tree ran before every page was in, and then
/// that every page came.
fn assert_lazy(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("its memory follows (--lazy-pages") && err.contains("every page is in"),
        "{err}"
    );
}

/// `restore --lazy-pages` from the image directory: the tree starts
/// before its memory is in, the rest comes on fault and in the
/// background; the workload checks every page.
#[test]
fn lazy_pages_from_image_dir() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_rewrite", &["--mib", "128", "--threads", "2"]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let out = restore_wait(&w.images, &["--lazy-pages", NO_COMPARE_LAZY], w.pid, &w.log);
    assert_lazy(&out);
}

/// `restore --lazy-pages --page-server` in namespace A, from a page
/// server in B that serves the pages of a dump it received: the workload
/// checks every page.
#[test]
fn lazy_pages_from_page_server() {
    if skip_unless_root() {
        return;
    }
    lazy_from_page_server("mem_rewrite", &["--mib", "64", "--threads", "2"], 0x45);
}

/// `workload` with `args` dumped through a page server in namespace B,
/// then restored with `--lazy-pages --page-server` in A from a page
/// server that serves that dump: the workload checks itself.
fn lazy_from_page_server(workload: &str, args: &[&str], key_byte: u8) {
    let net = Net::new("1gbit");
    let mut w = Workload::start(workload, args);
    let key = key_file(&w.dir, "key", key_byte);
    let pages = w.dir.join("pages");
    dump_through_page_server(&net, &mut w, &key, &pages, &[]);
    let _ps = PageServer::start(&net, &pages, &key, "pull", true);
    let server = format!("{}:{PORT}", net.addr_b);
    let flags = lazy_flags(&server, &key);
    let out = in_netns(&net.a, || restore_wait(&w.images, &flags, w.pid, &w.log));
    assert_lazy(&out);
}

/// `lazy_contents` (a deleted file of two contents chunks held open, an
/// open memfd, a deleted /dev/shm mapping, its log written before the
/// dump, 32 MiB of private memory): the file contents live in pages.img
/// with the memory. From the image directory the restore reads them in
/// place; from a page server its pages.img is sparse until the pager has
/// fetched them, which it does before the restore begins
/// (`postcopy::restore`). Either way the workload checks every file and
/// every page.
#[test]
fn lazy_pages_file_contents() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("lazy_contents", &["--mib", "32"]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let out = restore_wait(&w.images, &["--lazy-pages", NO_COMPARE_LAZY], w.pid, &w.log);
    assert_lazy(&out);
    lazy_from_page_server("lazy_contents", &["--mib", "32"], 0x47);
}

/// A layer of a chain (its parent a local pre-dump) dumped through a page
/// server: `restore --lazy-pages --page-server` refuses it before any
/// process is restored, naming the parent and the way out (the pages
/// copied into the layer, the chain restored as usual), which works: the
/// workload checks its memory.
#[test]
fn lazy_pages_page_server_chain_layer_refused() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("1gbit");
    let mut w = Workload::start("mem_rewrite", &["--mib", "16", "--threads", "1"]);
    let key = key_file(&w.dir, "key", 0x48);
    let pages = w.dir.join("pages");
    let pre = w.dir.join("pre");
    let out = Command::new(cairn_bin())
        .args(["-v", "pre-dump", "-t", &w.pid.to_string(), "-D"])
        .arg(&pre)
        .stdin(Stdio::null())
        .output()
        .expect("cairn pre-dump");
    assert!(out.status.success(), "pre-dump: {}", describe(&out));
    let prev = ["--prev-images-dir", "../pre"];
    dump_through_page_server(&net, &mut w, &key, &pages, &prev);
    let _ps = PageServer::start(&net, &pages, &key, "pull", true);
    let server = format!("{}:{PORT}", net.addr_b);
    let flags = lazy_flags(&server, &key);
    let out = in_netns(&net.a, || restore_expect_fail(&w.images, &flags, w.pid));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a layer on") && err.contains("copy the pages into the directory"),
        "{err}"
    );
    for f in ["pages.img", "pagestore.img"] {
        fs::copy(pages.join(f), w.images.join(f)).expect("copy the pages");
    }
    restore_wait(&w.images, &[], w.pid, &w.log);
}

/// The page source killed while pages are missing: the restore kills the
/// tree (never left running on zeros) and fails.
#[test]
fn lazy_pages_source_killed_tree_killed() {
    if skip_unless_root() {
        return;
    }
    // 128 MiB over 30 Mbit/s: half a minute of pages.
    let net = Net::new("30mbit");
    let mut w = Workload::start("mem_rewrite", &["--mib", "128", "--threads", "1"]);
    let key = key_file(&w.dir, "key", 0x46);
    let pages = w.dir.join("pages");
    // The dump goes to the page server on loopback speed: its own
    // namespace pair.
    let fast = Net::new("4gbit");
    dump_through_page_server(&fast, &mut w, &key, &pages, &[]);
    drop(fast);
    let mut ps = PageServer::start(&net, &pages, &key, "pull-killed", true);
    let server = format!("{}:{PORT}", net.addr_b);
    let flags = lazy_flags(&server, &key);
    let mut run = in_netns(&net.a, || {
        restore_start(&w.images, &flags, false, w.pid, Some(&w.log))
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        matches!(ps.child.try_wait(), Ok(None)),
        "every page came before the source could be killed: {}",
        ps.log()
    );
    ps.kill();
    let st = run.wait_cairn(Duration::from_secs(60));
    assert!(
        !st.success(),
        "the restore succeeded: {}",
        describe(&run.output())
    );
    assert!(
        wait_pid_gone(w.pid, Duration::from_secs(10)),
        "pid {} runs on after its page source died",
        w.pid
    );
    let text = fs::read_to_string(&w.log).unwrap_or_default();
    assert!(
        !text.contains("FAIL"),
        "the tree ran on missing pages: {text}"
    );
}
