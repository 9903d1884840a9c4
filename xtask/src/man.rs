//! `cargo xtask man [--out DIR]` and `cargo xtask completions [--out
//! DIR]`: man pages (default target/man) and bash, zsh and fish
//! completions (default target/completions) generated from cairn's clap
//! definitions by `cairn-gen` (src/bin/cairn-gen.rs, cairn's `gen`
//! feature: clap_mangen and clap_complete are not part of cairn). Each
//! then checks what it wrote: a page for every subcommand `cairn --help`
//! lists, naming every flag of that subcommand's `--help`; bash
//! completing `cairn sh` to `show`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{cargo, root, run, Result};

/// Builds cairn (release) and cairn-gen.
pub fn build_gen() -> Result<()> {
    run(cargo().args(["build", "--release", "--bin", "cairn"]))?;
    run(cargo().args([
        "build",
        "--release",
        "--features",
        "gen",
        "--bin",
        "cairn-gen",
    ]))
}

fn out_dir(args: &[String], default: &str) -> Result<PathBuf> {
    match args {
        [] => Ok(root().join("target").join(default)),
        [o, d] if o == "--out" => Ok(PathBuf::from(d)),
        _ => Err(format!("usage: cargo xtask {default} [--out DIR]")),
    }
}

/// Runs `cairn-gen WHAT DIR` (built already).
pub fn generate(what: &str, dir: &Path) -> Result<()> {
    run(Command::new(root().join("target/release/cairn-gen"))
        .arg(what)
        .arg(dir))
}

pub fn man(args: &[String]) -> Result<u8> {
    let dir = out_dir(args, "man")?;
    build_gen()?;
    generate("man", &dir)?;
    check_man(&dir)?;
    println!("xtask man: pages checked in {}", dir.display());
    Ok(0)
}

pub fn completions(args: &[String]) -> Result<u8> {
    let dir = out_dir(args, "completions")?;
    build_gen()?;
    generate("completions", &dir)?;
    check_bash(&dir)?;
    println!("xtask completions: bash checked in {}", dir.display());
    Ok(0)
}

fn help(args: &[&str]) -> Result<String> {
    let out = Command::new(root().join("target/release/cairn"))
        .args(args)
        .output()
        .map_err(|e| format!("cairn {args:?}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subcommands `cairn --help` lists.
fn subcommands() -> Result<Vec<String>> {
    let h = help(&["--help"])?;
    let list: Vec<String> = h
        .split("Commands:")
        .nth(1)
        .ok_or("cairn --help lists no commands")?
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    if list.is_empty() {
        return Err("cairn --help lists no commands".into());
    }
    Ok(list)
}

/// Every subcommand has cairn-SUB.1 naming each `--flag` of `cairn SUB
/// --help`.
pub fn check_man(dir: &Path) -> Result<()> {
    for sub in subcommands()? {
        let page = dir.join(format!("cairn-{sub}.1"));
        let text = std::fs::read_to_string(&page)
            .map_err(|e| format!("{}: {e}", page.display()))?
            .replace("\\-", "-");
        for line in help(&[&sub, "--help"])?.lines() {
            let Some(flag) = line
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .map(|w| {
                    w.trim_end_matches(',')
                        .split(['=', '[', '<', '.'])
                        .next()
                        .unwrap_or("")
                })
            else {
                continue;
            };
            if flag.len() > 2 && flag != "--help" && !text.contains(flag) {
                return Err(format!("{}: does not name {flag}", page.display()));
            }
        }
    }
    for f in ["cairn.1", "chkpnt.1", "resume.1"] {
        if !dir.join(f).is_file() {
            return Err(format!("{}: missing", dir.join(f).display()));
        }
    }
    Ok(())
}

/// bash, with the generated completion loaded, completes `cairn sh` to
/// `show`.
pub fn check_bash(dir: &Path) -> Result<()> {
    let script = format!(
        "source '{}'; COMP_WORDS=(cairn sh); COMP_CWORD=1; COMP_LINE='cairn sh'; \
         COMP_POINT=8; _cairn cairn sh cairn; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        dir.join("cairn.bash").display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    let got = String::from_utf8_lossy(&out.stdout);
    if got.trim() != "show" {
        return Err(format!(
            "bash completion of `cairn sh` gave {got:?}, not show: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
