//! The processes below a root, as /proc shows them now: what the
//! post-copy pager and guardian kill when the tree must go (and what
//! `cairn run` can share: `crate::run` keeps a copy of its own for now).

/// `root` and every process below it (the children lists of every
/// thread), parents before their children; at most 100,000.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() && out.len() < 100_000 {
        let p = out[i];
        for t in crate::procfs::list_tasks(p).unwrap_or_default() {
            out.extend(crate::procfs::read_children(p, t).unwrap_or_default());
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_a_child() {
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let d = super::descendants(me);
        let _ = c.kill();
        let _ = c.wait();
        assert_eq!(d[0], me);
        assert!(d.contains(&(c.id() as i32)), "{d:?}");
    }
}
