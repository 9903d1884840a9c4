//! `cargo xtask deb [--out DIR] [--bin CAIRN] [--check]`: a Debian package of cairn,
//! built with dpkg-deb from a staging tree (no cargo-deb needed):
//!
//! - /usr/bin/cairn, the release binary with its debug info stripped
//!   (`strip --strip-debug`; the build's own binary keeps it for the
//!   tests' backtraces), and the chkpnt and resume links to it;
//! - man pages (usr/share/man/man1, gzipped) and bash, zsh and fish
//!   completions, generated from the clap definitions (`man.rs`);
//! - README.md, docs/OPERATIONS.md and the copyright file in
//!   /usr/share/doc/cairn;
//! - Depends: the packages of the shared libraries `ldd` lists, which
//!   must be only the C library's (libc6, with the newest GLIBC symbol
//!   version the binary uses) and libgcc-s1: libbpf, libelf and zlib are
//!   linked statically (Cargo.toml), and a build that needs them (or
//!   anything else) is refused.
//!
//! `--check` then installs it on this machine with `dpkg -i`, runs
//! `/usr/bin/cairn check` and `/usr/bin/cairn demo` and the chkpnt link,
//! removes it with `dpkg --purge`, and checks that none of its files is
//! left. It refuses to run where a cairn package or /usr/bin/cairn is
//! already installed (it would replace or remove it).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{root, run, Result};

const PKG: &str = "cairn";

fn out(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn version() -> Result<String> {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| "no version in Cargo.toml".into())
}

/// The packages a cairn binary may depend on: the C library and the
/// unwinder's libgcc_s, which every Debian system has.
const BASE_DEPENDS: &[&str] = &["libc6", "libgcc-s1"];

/// The newest `GLIBC_x.y` symbol version `bin` asks for, as "x.y".
fn glibc_version(bin: &Path) -> Result<Option<String>> {
    let syms = out(Command::new("readelf")
        .args(["--dyn-syms", "--wide"])
        .arg(bin))?;
    let mut best: Option<(Vec<u32>, String)> = None;
    for v in syms
        .split("@GLIBC_")
        .skip(1)
        .filter_map(|r| r.split(|c: char| !c.is_ascii_digit() && c != '.').next())
    {
        let key: Vec<u32> = v.split('.').filter_map(|n| n.parse().ok()).collect();
        if !key.is_empty() && best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, v.to_string()));
        }
    }
    Ok(best.map(|(_, v)| v))
}

/// The Depends line: the Debian packages of the shared libraries the
/// binary needs, which must be [`BASE_DEPENDS`] only.
fn depends(bin: &Path) -> Result<String> {
    let mut pkgs = Vec::new();
    for line in out(Command::new("ldd").arg(bin))?.lines() {
        let Some(lib) = line
            .split("=>")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'))
        else {
            continue;
        };
        // The path may be a link the package does not list (usr merge).
        let real = std::fs::canonicalize(lib).unwrap_or_else(|_| PathBuf::from(lib));
        let owner = out(Command::new("dpkg").arg("-S").arg(lib))
            .or_else(|_| out(Command::new("dpkg").arg("-S").arg(&real)))?;
        if let Some(p) = owner.lines().next().and_then(|l| l.split(':').next()) {
            if !BASE_DEPENDS.contains(&p) {
                return Err(format!(
                    "{} needs {lib} (package {p}): only the C library may be linked \
                     dynamically (libbpf, libelf and zlib statically: libbpf-rs feature \
                     \"static\" in Cargo.toml)",
                    bin.display()
                ));
            }
            if !pkgs.contains(&p.to_string()) {
                pkgs.push(p.to_string());
            }
        }
    }
    pkgs.sort();
    if let (Some(libc), Some(v)) = (pkgs.iter_mut().find(|p| *p == "libc6"), glibc_version(bin)?) {
        *libc = format!("libc6 (>= {v})");
    }
    Ok(pkgs.join(", "))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::copy(from, to).map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", to.display()))
}

/// Builds the package of `bin` (by default cairn and cairn-gen are built
/// first, and target/release/cairn is packaged; `cargo xtask test` gives
/// the release binary it built and the cairn-gen of its test build);
/// returns its path.
pub fn build(out_dir: &Path, bin: Option<&Path>) -> Result<PathBuf> {
    let release = root().join("target/release/cairn");
    let bin = match bin {
        Some(b) => b,
        None => {
            super::man::build_gen()?;
            &release
        }
    };
    let ver = version()?;
    let arch = out(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let stage = root()
        .join("target/deb")
        .join(format!("{PKG}_{ver}_{arch}"));
    if stage.exists() {
        // Only our own staging tree, made by an earlier run.
        std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    copy(bin, &stage.join("usr/bin/cairn"), 0o755)?;
    let bin = stage.join("usr/bin/cairn");
    run(Command::new("strip").arg("--strip-debug").arg(&bin))?;
    for link in ["chkpnt", "resume"] {
        std::os::unix::fs::symlink("cairn", stage.join("usr/bin").join(link))
            .map_err(|e| format!("{link}: {e}"))?;
    }
    let man = stage.join("usr/share/man/man1");
    std::fs::create_dir_all(&man).map_err(|e| e.to_string())?;
    super::man::generate("man", &man)?;
    super::man::check_man(&man)?;
    run(Command::new("sh")
        .arg("-c")
        .arg("gzip -9n *.1")
        .current_dir(&man))?;
    let comp = root().join("target/deb/completions");
    if comp.exists() {
        std::fs::remove_dir_all(&comp).map_err(|e| e.to_string())?;
    }
    super::man::generate("completions", &comp)?;
    super::man::check_bash(&comp)?;
    for (f, to) in [
        ("cairn.bash", "usr/share/bash-completion/completions/cairn"),
        ("_cairn", "usr/share/zsh/vendor-completions/_cairn"),
        (
            "cairn.fish",
            "usr/share/fish/vendor_completions.d/cairn.fish",
        ),
    ] {
        copy(&comp.join(f), &stage.join(to), 0o644)?;
    }
    let doc = stage.join("usr/share/doc/cairn");
    copy(&root().join("README.md"), &doc.join("README.md"), 0o644)?;
    copy(
        &root().join("docs/OPERATIONS.md"),
        &doc.join("OPERATIONS.md"),
        0o644,
    )?;
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: cairn\n\n\
         Files: *\nLicense: GPL-2.0-only\n \
         On Debian systems the full text is in /usr/share/common-licenses/GPL-2.\n",
    )
    .map_err(|e| e.to_string())?;
    let size_kb = out(Command::new("du").args(["-sk"]).arg(&stage))?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let control = format!(
        "Package: {PKG}\nVersion: {ver}\nArchitecture: {arch}\nMaintainer: cairn developers <cairn@localhost>\n\
         Installed-Size: {size_kb}\nDepends: {}\nSection: admin\nPriority: optional\n\
         Description: checkpoint/restore for Linux process trees\n \
         cairn dumps a running process tree to an image directory and restores\n \
         it later or elsewhere, like CRIU; chkpnt and resume are DMTCP-style\n \
         front ends.\n",
        depends(&bin)?
    );
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian).map_err(|e| e.to_string())?;
    std::fs::write(debian.join("control"), control).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let deb = out_dir.join(format!("{PKG}_{ver}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

/// Whether a cairn package or /usr/bin/cairn is installed here.
fn installed() -> bool {
    Command::new("dpkg")
        .args(["-s", PKG])
        .output()
        .is_ok_and(|o| o.status.success())
        || Path::new("/usr/bin/cairn").exists()
}

/// Installs, runs, removes and checks that nothing is left.
pub fn check(deb: &Path) -> Result<()> {
    if installed() {
        return Err(
            "a cairn package or /usr/bin/cairn is already installed here: \
                    not replacing it (dpkg --purge cairn first)"
                .into(),
        );
    }
    let files: Vec<String> = out(Command::new("dpkg-deb").arg("-c").arg(deb))?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .filter(|p| !p.ends_with('/'))
        .collect();
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let result = try_installed();
    let purge = run(Command::new("dpkg").args(["--purge", PKG]));
    result?;
    purge?;
    let left: Vec<&String> = files
        .iter()
        .filter(|f| Path::new(f).symlink_metadata().is_ok())
        .collect();
    if !left.is_empty() {
        return Err(format!("left after dpkg --purge: {left:?}"));
    }
    if Path::new("/var/lib/dpkg/info/cairn.list").exists() {
        return Err("dpkg still lists cairn".into());
    }
    Ok(())
}

/// Runs the installed package's commands and checks what it installed.
fn try_installed() -> Result<()> {
    let v = out(Command::new("/usr/bin/cairn").arg("--version"))?;
    if !v.starts_with("cairn ") {
        return Err(format!("/usr/bin/cairn --version: {v}"));
    }
    // The verdict; its exit code says whether this machine can
    // checkpoint, which it must for the demo.
    out(Command::new("/usr/bin/cairn").arg("check"))?;
    let demo = out(Command::new("/usr/bin/cairn").arg("demo"))?;
    println!("{demo}");
    let h = Command::new("/usr/bin/chkpnt")
        .arg("--help")
        .output()
        .map_err(|e| e.to_string())?;
    if !String::from_utf8_lossy(&h.stdout).contains("usage: chkpnt") {
        return Err("/usr/bin/chkpnt --help is not chkpnt's".into());
    }
    let dbg = out(Command::new("readelf").args(["-S", "/usr/bin/cairn"]))?;
    if dbg.contains(".debug_info") {
        return Err("/usr/bin/cairn has debug info".into());
    }
    if !Path::new("/usr/share/man/man1/cairn-show.1.gz").exists() {
        return Err("no cairn-show.1.gz installed".into());
    }
    Ok(())
}

/// The package part of `cargo xtask test`: the package of `bin` built
/// (with the man page and completion checks), installed, run and removed.
/// `Ok(Some(why))` when the round trip cannot run here: not root, or a
/// cairn package already installed (it is not replaced).
pub fn test_round_trip(bin: &Path) -> Result<Option<String>> {
    let deb = build(&root().join("target/deb"), Some(bin))?;
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return Ok(Some("dpkg -i needs root".into()));
    }
    if installed() {
        return Ok(Some(
            "a cairn package or /usr/bin/cairn is already installed here".into(),
        ));
    }
    check(&deb)?;
    Ok(None)
}

pub fn deb(args: &[String]) -> Result<u8> {
    let mut out_dir = root().join("target/deb");
    let mut do_check = false;
    let mut bin = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out_dir = PathBuf::from(it.next().ok_or("--out needs a directory")?),
            "--check" => do_check = true,
            // A cairn binary built already, with target/release/cairn-gen
            // (e.g. by a test build): nothing is built.
            "--bin" => bin = Some(PathBuf::from(it.next().ok_or("--bin needs a path")?)),
            other => {
                return Err(format!(
                    "usage: cargo xtask deb [--out DIR] [--bin CAIRN] [--check]: {other:?}"
                ))
            }
        }
    }
    let deb = build(&out_dir, bin.as_deref())?;
    println!("xtask deb: {}", deb.display());
    if do_check {
        check(&deb)?;
        println!("xtask deb: installed, ran cairn check and demo, removed, nothing left");
    }
    Ok(0)
}
