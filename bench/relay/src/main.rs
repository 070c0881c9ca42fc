//! `relay`: the physical floor of one userspace TCP hop, for benchmarking pgshift.
//!
//! Accepts TCP connections and pipes the bytes to an upstream with
//! `tokio::io::copy_bidirectional`. No protocol awareness at all: whatever a
//! real proxy costs above this relay is the price of its own logic.
//!
//! Usage: `relay --listen 127.0.0.1:PORT --upstream HOST:PORT [--workers N]`
//! `--upstream /socket/dir:PORT` connects to the Unix socket `/socket/dir/.s.PGSQL.PORT`.
//! Default runtime is tokio `current_thread`; `--workers N` (N > 1) uses `multi_thread`.

use std::io;
use tokio::net::{TcpListener, TcpStream, UnixStream};

#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(String),
}

fn usage() -> ! {
    eprintln!("usage: relay --listen ADDR:PORT --upstream HOST:PORT|/SOCKDIR:PORT [--workers N]");
    std::process::exit(2)
}

fn main() -> io::Result<()> {
    let (mut listen, mut upstream, mut workers) = (None, None, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = Some(v),
            "--upstream" => upstream = Some(v),
            "--workers" => workers = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (listen, upstream) = (listen.unwrap_or_else(|| usage()), upstream.unwrap_or_else(|| usage()));
    let upstream = match upstream.rsplit_once(':') {
        Some((dir, port)) if dir.starts_with('/') => Upstream::Unix(format!("{dir}/.s.PGSQL.{port}")),
        _ => Upstream::Tcp(upstream),
    };
    let rt = if workers > 1 {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_io().build()?
    } else {
        tokio::runtime::Builder::new_current_thread().enable_io().build()?
    };
    rt.block_on(serve(listen, upstream))
}

async fn serve(listen: String, upstream: Upstream) -> io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("relay listening on {listen}");
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(client, upstream).await {
                eprintln!("relay: connection error: {e}");
            }
        });
    }
}

async fn handle(mut client: TcpStream, upstream: Upstream) -> io::Result<()> {
    client.set_nodelay(true)?;
    match upstream {
        Upstream::Tcp(addr) => {
            let mut server = TcpStream::connect(addr).await?;
            server.set_nodelay(true)?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
        Upstream::Unix(path) => {
            let mut server = UnixStream::connect(path).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
    }
    Ok(())
}
