//! Arbitrary bytes into the startup packet decoder and the backend message readers:
//! no panic, and a decoded packet consumed exactly its declared length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshift::wire::{backend, startup};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let before = buf.len();
    // Which encryption requests were answered before: any, by the input's length.
    let done = startup::Negotiated {
        ssl: data.len() % 2 == 1,
        gss: data.len() % 4 >= 2,
    };
    if let Ok(Some(packet)) = startup::decode(&mut buf, done) {
        let declared = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(before - buf.len(), declared);
        if let startup::StartupPacket::ForServer(raw) = packet {
            assert_eq!(&raw[..], &data[..declared]);
        }
    }
    let _ = backend::error_fields(data);
    let _ = backend::sasl_mechanisms(data);
    let _ = backend::parse_backend_key_data(data);
    let _ = backend::auth_code(data);
    let _ = backend::negotiated_minor(data);
    let _ = pgshift::sql::sniff::may_be_ddl(data);
});
