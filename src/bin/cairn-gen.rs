//! `cairn-gen`: man pages and shell completions generated from cairn's
//! clap definitions (`cargo xtask man`, `cargo xtask completions`). Built
//! only with the `gen` feature, so clap_mangen and clap_complete are not
//! part of cairn itself.
//!
//! - `cairn-gen man DIR`: `cairn.1`, `cairn-SUBCOMMAND.1` for every
//!   visible subcommand, `chkpnt.1` and `resume.1`;
//! - `cairn-gen completions DIR`: `cairn.bash`, `_cairn` (zsh),
//!   `cairn.fish`.
#![deny(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    // Replaces only a regular file of ours; never follows a link.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a regular file", path.display()),
            ))
        }
        Err(_) => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)
}

fn man_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// The chkpnt and resume front ends parse their own arguments
/// (`cairn::cmd::chkpnt`); their pages are built from the same help text.
fn front_end(name: &'static str, about: &'static str, usage: &'static str) -> clap::Command {
    clap::Command::new(name)
        .about(about)
        .override_usage(usage)
        .long_about(format!(
            "{about}\n\n{name} is another name of the cairn binary (a link to it). See cairn(1)."
        ))
        .disable_help_flag(true)
}

fn man(dir: &Path) -> std::io::Result<usize> {
    let mut cmd = cairn::cmd::Cli::command();
    cmd.build();
    let mut n = 0;
    write_new(&dir.join("cairn.1"), &man_page(cmd.clone())?)?;
    n += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are &'static str (no "string" feature): this short
        // program leaks the few it makes.
        let name: &'static str = Box::leak(format!("cairn-{}", sub.get_name()).into_boxed_str());
        let page = sub.clone().name(name).display_name(name);
        write_new(&dir.join(format!("{name}.1")), &man_page(page)?)?;
        n += 1;
    }
    let chkpnt = front_end(
        "chkpnt",
        "Checkpoint a process and its children (cairn dump)",
        cairn::cmd::chkpnt::CHKPNT_USAGE,
    );
    write_new(&dir.join("chkpnt.1"), &man_page(chkpnt)?)?;
    let resume = front_end(
        "resume",
        "Restore a process checkpointed with chkpnt (cairn restore)",
        cairn::cmd::chkpnt::RESUME_USAGE,
    );
    write_new(&dir.join("resume.1"), &man_page(resume)?)?;
    Ok(n + 2)
}

fn completions(dir: &Path) -> std::io::Result<usize> {
    use clap_complete::Shell;
    let mut cmd = cairn::cmd::Cli::command();
    for (shell, file) in [
        (Shell::Bash, "cairn.bash"),
        (Shell::Zsh, "_cairn"),
        (Shell::Fish, "cairn.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "cairn", &mut out);
        write_new(&dir.join(file), &out)?;
    }
    Ok(3)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, dir) = match args.as_slice() {
        [w, d] if w == "man" || w == "completions" => (w.as_str(), Path::new(d)),
        _ => {
            eprintln!("usage: cairn-gen man|completions DIR");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("cairn-gen: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let r = if what == "man" {
        man(dir)
    } else {
        completions(dir)
    };
    match r {
        Ok(n) => {
            println!("{n} files in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn-gen {what}: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cairn-gen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }

    /// Every visible subcommand has its page, and the page names each of
    /// its long flags.
    #[test]
    fn man_page_per_subcommand_names_its_flags() {
        let d = tmp("man");
        man(&d).unwrap();
        let cmd = cairn::cmd::Cli::command();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let p = d.join(format!("cairn-{}.1", sub.get_name()));
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .replace("\\-", "-");
            for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(l) = a.get_long() {
                    assert!(
                        text.contains(&format!("--{l}")),
                        "{}: no --{l}",
                        p.display()
                    );
                }
            }
        }
        for f in ["cairn.1", "chkpnt.1", "resume.1"] {
            assert!(d.join(f).exists(), "{f}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// bash completes `cairn sh` to `show` and `cairn show --fu` to
    /// `--full`.
    #[test]
    fn bash_completes_a_subcommand() {
        let d = tmp("compl");
        completions(&d).unwrap();
        let run = |words: &str| -> String {
            let script = format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _cairn cairn \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                d.join("cairn.bash").display()
            );
            let out = std::process::Command::new("bash")
                .args(["-c", &script])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(run("cairn sh").trim(), "show");
        assert!(run("cairn show --fu").lines().any(|l| l == "--full"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
