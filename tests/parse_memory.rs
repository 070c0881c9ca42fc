//! Memory around big statements: 100 unique 10 MB candidates through one session of
//! the pgshift binary, its RSS read from /proc. A test binary of its own, so that its
//! gigabytes of traffic do not run beside the latency test in tests/parse_limits.rs.

mod common;

use common::binary::Binary;
use common::fresh_db;
use std::time::Duration;

/// A session through the binary; a failure says whether the binary still runs.
async fn open(proxy: &mut Binary, db: &str) -> tokio_postgres::Client {
    match tokio_postgres::connect(&proxy.conn_str(db), tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) => panic!("connect: {e}; {}", proxy.report()),
    }
}

async fn still_serving(proxy: &mut Binary, db: &str) {
    let client = open(proxy, db).await;
    match client.query_one("SELECT 41 + 1", &[]).await {
        Ok(row) => assert_eq!(row.get::<_, i32>(0), 42),
        Err(e) => panic!("SELECT: {e}; {}", proxy.report()),
    }
}

/// RSS (MiB) of a pgshift binary around 100 unique 10 MB candidates sent through one
/// session: before, after the first 10, after all 100, and after the session closed.
async fn rss_around_big_statements(args: &[&str], name: &str) -> [u64; 4] {
    let db = fresh_db(name);
    let mut proxy = Binary::start(args);
    still_serving(&mut proxy, &db).await;
    let before = proxy.rss() >> 20;
    let client = open(&mut proxy, &db).await;
    let filler = "x".repeat(10 << 20);
    let mut warm = 0;
    for i in 0..100 {
        let sql = format!("COMMENT ON DATABASE {db} IS '{i} {filler}'");
        if let Err(e) = client.simple_query(&sql).await {
            panic!("statement {i}: {e}; {}", proxy.report());
        }
        if i == 9 {
            warm = proxy.rss() >> 20;
        }
    }
    let during = proxy.rss() >> 20;
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_serving(&mut proxy, &db).await;
    let after = proxy.rss() >> 20;
    eprintln!("{name}: RSS {before} MiB before, {warm} after 10 statements, {during} after 100, {after} after the session closed");
    [before, warm, during, after]
}

#[tokio::test]
async fn big_statements_leave_no_memory_behind() {
    // Over ddl.max_parse_bytes: not parsed, not cached. (Before the bound, each was
    // parsed on the session thread and cached: 16 MiB grew to 2,071 MiB.)
    let [before, _, _, after] = rss_around_big_statements(&[], "rss_default").await;
    assert!(
        after <= before + 48,
        "RSS grew from {before} to {after} MiB"
    );
}

#[tokio::test]
async fn parsed_big_statements_do_not_accumulate() {
    // Parsed (the limit raised past them) but too big for the parse cache. glibc
    // keeps the parser threads' peak for reuse (MALLOC_MMAP_THRESHOLD_=131072 gives
    // it back), so the bound is: no growth after the first ten.
    let [_, warm, during, after] =
        rss_around_big_statements(&["-c", "ddl.max_parse_bytes=16777216"], "rss_parsed").await;
    assert!(during <= warm + 32, "RSS grew from {warm} to {during} MiB");
    assert!(after <= warm + 32, "RSS grew from {warm} to {after} MiB");
}
