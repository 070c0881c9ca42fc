//! Feeds arbitrary bytes, cut at arbitrary points, to the hot-path frame scanner in
//! both directions. Invariants: no panic, the forwardable prefix never exceeds the
//! buffer, and the result does not depend on how the bytes were cut.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshift::wire::scanner::{Flow, Scanner};

fn run(flow: Flow, data: &[u8], cuts: &[usize]) -> Option<(usize, u8)> {
    let mut scanner = Scanner::new(flow, 1 << 16);
    let mut buf = BytesMut::new();
    let mut ready = 0;
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(fed, data.len());
        buf.extend_from_slice(&data[fed..cut]);
        fed = cut;
        ready = scanner.scan(&mut buf, ready).ok()?;
        assert!(ready <= buf.len());
    }
    Some((ready, scanner.tx_status))
}

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (data, cuts) = input;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c as usize % (data.len() + 1)).collect();
    cuts.sort_unstable();
    for flow in [Flow::ClientToServer, Flow::ServerToClient] {
        let whole = run(flow, &data, &[]);
        let pieces = run(flow, &data, &cuts);
        if let (Some(a), Some(b)) = (whole, pieces) {
            assert_eq!(a, b);
        }
    }
});
