//! `pgshift demo`: a throwaway Postgres with pgshift in front, a pgbench load
//! direct and through the proxy side by side, then unsafe migrations against a
//! busy table, direct and through pgshift (`demo_ddl`), then the proxy keeps serving.

use pgshift::cli::DemoArgs;
use pgshift::cluster::{bin_dir, Cluster, ClusterOptions};
use pgshift::config::Config;
use pgshift::server::Server;
use std::process::{Command, ExitCode};

pub fn run(args: DemoArgs) -> ExitCode {
    match demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgshift demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    println!("starting a throwaway Postgres ...");
    let cluster = Cluster::start(&ClusterOptions::default())?;
    println!("  Postgres on 127.0.0.1:{}", cluster.port);
    let mut config = Config::default();
    config.upstream.address = cluster.tcp_address();
    config.server.listen = args.listen.clone();
    config.log.level = "warn".into();
    pgshift::logging::init(&config.log);
    let runtime = crate::build_runtime()?;
    let server = match runtime.block_on(Server::bind(config.clone())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("  {e}; using a free port instead");
            config.server.listen = "127.0.0.1:0".into();
            config.metrics.listen = "127.0.0.1:0".into();
            runtime.block_on(Server::bind(config))?
        }
    };
    let addr = server.local_addr();
    let handle = server.handle();
    let serving = std::thread::spawn(move || runtime.block_on(server.run()));
    println!("  pgshift on {addr}, in front of it\n");

    let pgbench = bin_dir()?.join("pgbench");
    let proxy_port = addr.port().to_string();
    let direct_port = cluster.port.to_string();
    bench(&pgbench, &proxy_port, &["-i", "-s", "2", "-q"])?;
    println!(
        "pgbench -S (select-only), 4 clients, {} s each:",
        args.seconds
    );
    let secs = args.seconds.to_string();
    let load = ["-S", "-c", "4", "-j", "2", "-T", secs.as_str()];
    let direct = tps(&bench(&pgbench, &direct_port, &load)?);
    let proxied = tps(&bench(&pgbench, &proxy_port, &load)?);
    println!("  direct   {direct:>10.0} TPS");
    println!(
        "  pgshift  {proxied:>10.0} TPS  ({:.2}x direct)",
        proxied / direct
    );
    let stats = handle.stats();
    println!(
        "  through pgshift: {} connections, {} queries, {} bytes in, {} bytes out\n",
        stats.connections_total, stats.queries, stats.bytes_from_clients, stats.bytes_from_servers
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::demo_ddl::run(cluster.port, addr.port()))?;
    println!();
    if !args.exit {
        println!(
            "try it: psql -h {} -p {} -U postgres postgres",
            addr.ip(),
            addr.port()
        );
        println!("Ctrl-C stops pgshift and the throwaway Postgres.");
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    handle.shutdown();
    let _ = serving.join();
    drop(cluster);
    Ok(())
}

fn bench(
    pgbench: &std::path::Path,
    port: &str,
    args: &[&str],
) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(pgbench)
        .args(["-h", "127.0.0.1", "-p", port, "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .output()?;
    if !out.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tps(output: &str) -> f64 {
    output
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l[6..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
