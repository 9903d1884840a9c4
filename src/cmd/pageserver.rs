//! `cairn page-server`, `cairn dump --page-server` and `cairn restore
//! --lazy-pages`: the command-line side of the page server
//! ([`crate::migrate::pageserver`]). Flag names are CRIU's (`criu
//! page-server --address --port`, `criu dump --page-server --address
//! --port`, `criu restore --lazy-pages`), plus `--key`, without which
//! nothing is sent or accepted.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::migrate::pageserver::{self, PageSource, ServerOptions};
use crate::options::PageServerTarget;

#[derive(Args, Debug, Clone)]
pub struct PageServerArgs {
    /// Where the pages of a dump are written (pages.img, pagestore.img
    /// and an inventory.img that lists them, staged and moved in when
    /// the dump is complete), and where a lazy restore's pages are read
    /// from (such a directory, or any complete dump).
    #[arg(short = 'D', long = "images-dir")]
    pub images_dir: PathBuf,
    /// The address to listen on (default: every address).
    #[arg(long = "address", default_value = "0.0.0.0")]
    pub address: String,
    /// The port to listen on.
    #[arg(long = "port")]
    pub port: u16,
    /// The pre-shared key: a private regular file (mode 0600 or
    /// stricter, owned by you or root) of 16 to 4096 bytes, the same for
    /// the dump or restore, e.g. `head -c 32 /dev/urandom`.
    #[arg(long = "key", value_name = "FILE")]
    pub key: PathBuf,
    /// Exit after one dump or lazy restore (0 if it succeeded).
    #[arg(long = "once")]
    pub once: bool,
}

/// `cairn dump`'s page-server flags.
#[derive(Args, Debug, Clone, Default)]
pub struct DumpPageServerArgs {
    /// Send the pages to `cairn page-server` at --address:--port instead
    /// of the images directory (which gets every other image).
    #[arg(long = "page-server", requires_all = ["address", "port", "key"])]
    pub page_server: bool,
    /// The page server's address.
    #[arg(long = "address", requires = "page_server")]
    pub address: Option<String>,
    /// The page server's port.
    #[arg(long = "port", requires = "page_server")]
    pub port: Option<u16>,
    /// The page server's pre-shared key (see `cairn page-server --key`).
    #[arg(long = "key", value_name = "FILE", requires = "page_server")]
    pub key: Option<PathBuf>,
}

fn join(address: &str, port: u16) -> String {
    PageServerTarget::join(address, port)
}

impl DumpPageServerArgs {
    /// The page server of `--page-server`, if given.
    pub fn target(&self) -> Option<PageServerTarget> {
        match (self.page_server, &self.address, self.port, &self.key) {
            (true, Some(a), Some(p), Some(k)) => Some(PageServerTarget {
                host: a.clone(),
                port: p,
                key: k.clone(),
            }),
            _ => None,
        }
    }
}

pub fn serve(a: &PageServerArgs) -> Result<i32> {
    pageserver::serve(&ServerOptions {
        images_dir: a.images_dir.clone(),
        listen: join(&a.address, a.port),
        key: a.key.clone(),
        once: a.once,
    })
}

/// `cairn restore --lazy-pages`.
pub fn restore(a: &super::RestoreArgs) -> Result<i32> {
    let src = match (&a.page_server, &a.key) {
        (Some(address), Some(key)) => PageSource::Server {
            address: address.clone(),
            key: key.clone(),
        },
        (None, _) => PageSource::Images,
        (Some(_), None) => return Err(Error::Usage("--page-server needs --key".into())),
    };
    pageserver::restore_lazy(&a.options(), &src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(join("10.0.0.2", 7017), "10.0.0.2:7017");
        assert_eq!(join("::1", 7017), "[::1]:7017");
        assert_eq!(join("[::1]", 7017), "[::1]:7017");
    }
}
