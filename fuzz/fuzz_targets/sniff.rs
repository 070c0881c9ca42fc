//! Arbitrary text into the hot-path sniff and into pg_query: whenever the parser and
//! the rules find DDL, the sniff must have flagged the text (else the DDL would pass
//! through unrewritten). Also: the sniff never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgshift::sql::analysis::analyze;
use pgshift::sql::sniff::may_be_ddl;

fuzz_target!(|data: &[u8]| {
    let flagged = may_be_ddl(data);
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(analysis) = analyze(sql) else { return };
    if let Some(s) = analysis.statements.iter().find(|s| s.finding.is_some()) {
        assert!(flagged, "the sniff misses DDL ({:?}) in {sql:?}", s.sql);
    }
});
