//! The hot-path frame scanner. It walks frame headers in a read buffer and says how
//! many bytes may be forwarded as they are. Bodies stream through untouched; only a
//! few small frames are held whole and looked at: Query and Parse from the client
//! (for the SQL sniff), ReadyForQuery from the server (transaction status).

use super::activity::Activity;
use super::backend::TxStatus;
use super::described::{Described, Record};
use super::frame::{header, refused_header, FrameError, HEADER_LEN};
use super::hidden::Mapping;
use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Most a held, incomplete frame reserves at once.
const HOLD_STEP: usize = 1 << 20;

/// Server side: a DataRow to map this long or longer is not held in memory: the
/// session spills it to a file (see `session::spill`).
pub const SPILL_AT: usize = 1 << 20;

/// Which way bytes flow through a scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    ClientToServer,
    ServerToClient,
}

/// Counters a scanner keeps; the session folds them into the global stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Simple Query and extended Execute messages.
    pub queries: u64,
    /// Statements whose leading keyword says they may be DDL.
    pub ddl_candidates: u64,
    /// ErrorResponse frames from the server.
    pub errors: u64,
}

/// Puts `frame` where the `total` bytes at `pos` of `buf` stood; returns its length.
fn replace_frame(buf: &mut BytesMut, pos: usize, total: usize, frame: &[u8]) -> usize {
    let tail = buf.split_off(pos + total);
    buf.truncate(pos);
    buf.extend_from_slice(frame);
    buf.unsplit(tail);
    frame.len()
}

/// Why the client's stream ended for the server: Postgres reads nothing after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEnd {
    /// A Terminate: Postgres closes the connection without a word.
    Terminate,
    /// A header Postgres refuses (see [`refused_header`]): it closes the connection,
    /// with a FATAL of its own or without a word, depending on the message type.
    RefusedHeader,
}

#[derive(Debug)]
pub struct Scanner {
    flow: Flow,
    limit: usize,
    /// Body bytes of a streamed frame not yet seen.
    body_left: usize,
    /// Tag of the last frame whose header was seen.
    pub last_tag: u8,
    /// The status of the last ReadyForQuery; None before the first.
    tx_status: Option<TxStatus>,
    counts: Counts,
    /// The server's errors by SQLSTATE class since last taken (empty until the
    /// first error; see `super::sqlstate`).
    error_classes: Vec<u32>,
    /// Client side: stop at a Query that may be DDL, for the DDL engine.
    intercept: bool,
    /// With `intercept`: stop at every message that starts a turn (deferred DDL
    /// work waits for the transaction's end, and must run before anything after it).
    intercept_all: bool,
    /// Counts tables under rollout. Client side, with `intercept`: while it is
    /// not zero, stop at a Query that starts with COPY too (it may need a column
    /// list), and note Executes. Server side: while it is not zero, map results
    /// that have columns of pgshift's (see [`super::hidden`]).
    live: Option<Arc<AtomicUsize>>,
    /// Client side: names (lowercase) of tables whose writes may set a
    /// rollout's new column: an INSERT or UPDATE that mentions one is held.
    repeating: Option<(crate::rollout::Repeating, String)>,
    /// Server side: how the rows of the result under way map; None: not known yet
    /// (no RowDescription since the last result ended).
    rows: Option<Option<Arc<Mapping>>>,
    /// Server side: a rewritten frame, kept for the next.
    scratch: Vec<u8>,
    /// Server side, within one `scan`: bytes that rewritten DataRows left out of
    /// the buffer, closed up once at its end; what stays lies in place up to
    /// `placed`.
    gap: usize,
    placed: usize,
    /// Server side: the DataRow that starts where `scan` stopped is to be mapped
    /// through a file: its length, and how it maps. Scanning goes on after it.
    pub spill: Option<(usize, Arc<Mapping>)>,
    /// Client side: counts the changes rollouts made to tables, and the count this
    /// session's prepared statements were last renewed at (see `stale`).
    changes: Option<(Arc<AtomicU64>, u64)>,
    /// Client side: a named Parse went by: the session may have statements to renew.
    named: bool,
    /// Client side: Queries and unnamed Parses that went by (each replaces or
    /// drops the unnamed statement).
    unnamed: u64,
    /// Client side: statements that may have changed what names mean (see
    /// `sql::sniff::may_change_names`), counted while `watch_env`, and the count
    /// the session last looked at.
    env: (u64, u64),
    watch_env: bool,
    /// While the count moved since the session last looked, the session is
    /// stale (it holds statements pgshift changed).
    env_stale: bool,
    /// Named statements whose text may change what names mean: a Bind of one
    /// counts too (past `ENV_NAMES` of them, every Bind does).
    env_names: Vec<Vec<u8>>,
    env_every_bind: bool,
    /// Both sides, once rollouts are on: what the client was told its named
    /// statements return (the client's side notes Describes, Parses and Closes of
    /// statements; the server's side, the answers).
    described: Option<Arc<Record>>,
    /// Both sides, once rollouts are on: which of the session's turns are at the
    /// server, for a rollout's lock window.
    activity: Option<Arc<Activity>>,
    /// Client side: extended-protocol messages were forwarded since the last Sync.
    pub in_batch: bool,
    /// Client side: a Sync followed the last Execute (see `observe`).
    synced_after_execute: bool,
    /// Length of the held frame that starts where forwarding stopped; 0: none.
    pub held: usize,
    /// Its tag.
    held_tag: u8,
    /// The held frame is a Query or unnamed Parse the sniff flagged (not only held
    /// because `intercept_all` holds every turn).
    pub held_hit: bool,
    /// Messages that each get one ReadyForQuery: Query, Sync, FunctionCall (client
    /// side, forwarded), or ReadyForQuery frames seen (server side).
    pub turns: u64,
    /// Client side: the last frame Postgres reads went by; the scan stops after it.
    pub ended: Option<ClientEnd>,
    /// Server side: the answer to turn `.0` is to a Query pgshift sent with text
    /// added (a rollout's mirror); its error positions count in the client's
    /// text by `.1` (see [`Scanner::added_text`]).
    added: Option<(u64, Vec<(usize, usize)>)>,
}

impl Scanner {
    /// The status of the last ReadyForQuery; None before the first.
    pub fn tx_status(&self) -> Option<TxStatus> {
        self.tx_status
    }

    /// Server side: the status the DDL engine's own exchange with the server left,
    /// whose ReadyForQuery frames did not pass through this scanner.
    pub fn set_tx_status(&mut self, status: TxStatus) {
        self.tx_status = Some(status);
    }

    /// Client side: whether to stop at a Query that may be DDL.
    pub fn set_intercept(&mut self, on: bool) {
        self.intercept = on;
    }

    /// Client side: whether to stop at every message that starts a turn.
    pub fn hold_every_turn(&mut self, on: bool) {
        self.intercept_all = on;
    }

    /// Client side: stop at a COPY Query while `live` (tables under rollout) is
    /// not zero.
    pub fn hold_copies(&mut self, live: Arc<AtomicUsize>) {
        self.live = Some(live);
    }

    /// Client side: stop at an INSERT or UPDATE (a Query or a Parse) that
    /// mentions one of `names` of the session's `database` (tables whose writes
    /// may set a rollout's new column).
    pub fn hold_writes(&mut self, names: crate::rollout::Repeating, database: &str) {
        self.repeating = Some((names, database.to_string()));
    }

    /// True when `sql` is an INSERT or UPDATE that mentions a table of
    /// `repeating` in the session's database (its name as a whole word
    /// anywhere, in any case: a cheap superset).
    fn may_repeat(&self, sql: &[u8]) -> bool {
        let Some((names, database)) = &self.repeating else {
            return false;
        };
        let names = names.load();
        !names.is_empty()
            && crate::sql::sniff::starts_with_write(sql)
            && names.iter().any(|(db, n)| {
                db == database && crate::sql::sniff::contains_word_ignoring_case(sql, n.as_bytes())
            })
    }

    /// Server side: keep columns of pgshift's out of results while `live` (tables
    /// under rollout) is not zero.
    pub fn hide_columns(&mut self, live: Arc<AtomicUsize>) {
        self.live = Some(live);
    }

    /// Tables are under rollout (for `hide_columns` and `hold_copies`).
    fn live(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|live| live.load(Ordering::Relaxed) > 0)
    }

    /// Client side: watch `changes` (tables changed by rollouts); from now on, a
    /// session stops at the first message of its next turn after a change, so
    /// that its named statements can be renewed first (and it waits out a lock
    /// window on a table it names).
    pub fn watch_changes(&mut self, changes: Arc<AtomicU64>) {
        let now = changes.load(Ordering::Acquire);
        self.changes = Some((changes, now));
    }

    /// Keep `described` up to date (both sides of a session share it).
    pub fn track_described(&mut self, described: Arc<Record>) {
        self.described = Some(described);
    }

    /// Keep `activity` up to date (both sides of a session share it).
    pub fn track_activity(&mut self, activity: Arc<Activity>) {
        self.activity = Some(activity);
    }

    /// The tables of the statements the session holds that pgshift rewrote
    /// to set a new column (a lock window that renames it waits for their
    /// turns); 0 while one is being rewritten.
    pub fn set_rewritten(&self, tables: Vec<u32>) {
        if let Some(a) = &self.activity {
            a.set_rewritten(tables);
        }
    }

    /// Client side: publishes the change count the next turn starts at; comes
    /// before the stale check that lets it go (see [`Activity`]).
    pub fn publish(&self) {
        if let (Some(a), Some((changes, _))) = (&self.activity, &self.changes) {
            a.publish(changes);
        }
    }

    /// Client side: the server answered everything sent so far.
    pub fn quiet(&self) {
        if let Some(a) = &self.activity {
            a.quiet();
        }
    }

    /// Client side: unpublishes the count when no turn is out (a held message was
    /// answered by pgshift, or not sent).
    pub fn settle(&self) {
        if let Some(a) = &self.activity {
            a.settle();
        }
    }

    fn sent(&self) {
        if let Some(a) = &self.activity {
            a.sent();
        }
    }

    /// A message the server answers with a ReadyForQuery went by.
    fn owed(&self) {
        if let Some(a) = &self.activity {
            a.ended();
        }
    }

    /// The session's record, when it keeps one.
    pub fn record(&self) -> Option<Arc<Record>> {
        self.described.clone()
    }

    fn note<T>(&self, f: impl FnOnce(&mut Described) -> T) -> Option<T> {
        Some(self.described.as_ref()?.with(f))
    }

    /// True when tables changed since this session's statements were renewed (a
    /// lock window opened or closed): its next turn is held until it is renewed,
    /// and, outside a transaction block, while a window is open on a table it
    /// names (see `session::statements`).
    pub fn stale(&self) -> bool {
        self.changes
            .as_ref()
            .is_some_and(|(c, seen)| c.load(Ordering::SeqCst) != *seen)
            || self.env_stale && self.env.0 != self.env.1
    }

    /// Client side: count the statements that may change what names mean (for
    /// a lookup of what a name means, or statements pgshift changed); with
    /// `stale`, the session is stale while the count moved since it last looked.
    pub fn watch_env(&mut self, on: bool, stale: bool) {
        self.watch_env = on || stale;
        self.env_stale = stale;
    }

    /// The count of statements that may have changed what names mean.
    pub fn env(&self) -> u64 {
        self.env.0
    }

    /// The count moved since the session last looked.
    pub fn env_moved(&self) -> bool {
        self.env.0 != self.env.1
    }

    /// The session has looked again at what changed with the count `at`.
    pub fn env_seen(&mut self, at: u64) {
        self.env.1 = at;
    }

    fn env_text(&mut self, name: &[u8], text: &[u8]) {
        let named = !name.is_empty();
        if !(named && self.live() || self.watch_env) || !crate::sql::sniff::may_change_names(text) {
            return;
        }
        self.env.0 += 1;
        if named && !self.env_names.iter().any(|n| n == name) {
            match self.env_names.len() < ENV_NAMES {
                true => self.env_names.push(name.to_vec()),
                false => self.env_every_bind = true,
            }
        }
    }

    fn env_bound(&mut self, names: Option<(&[u8], &[u8])>) {
        let statement = names.map(|(_, s)| s);
        if self.env_every_bind
            || statement.is_some_and(|s| self.env_names.iter().any(|n| n == s))
            || statement.is_none() && !self.env_names.is_empty()
        {
            self.env.0 += 1;
        }
    }

    /// True once the client prepared a named statement.
    /// Client side: how many Queries and unnamed Parses went by (the unnamed
    /// statement is the one the last of them made, if a Parse).
    pub fn unnamed(&self) -> u64 {
        self.unnamed
    }

    pub fn named(&self) -> bool {
        self.named
    }

    /// The named statements were renewed for the first `count` changes.
    pub fn renewed_at(&mut self, count: u64) {
        if let Some((_, seen)) = &mut self.changes {
            *seen = count;
        }
    }

    pub fn holds_every_turn(&self) -> bool {
        self.intercept_all
    }

    /// The counts since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Hands `f` each SQLSTATE class slot with errors since the last call, and
    /// forgets them.
    pub fn take_error_classes(&mut self, mut f: impl FnMut(usize, u32)) {
        for (slot, n) in self.error_classes.iter_mut().enumerate() {
            if *n > 0 {
                f(slot, std::mem::take(n));
            }
        }
    }

    /// Counts a server ErrorResponse by its class (`body`: what of it is there).
    fn count_error_class(&mut self, tag: u8, body: &[u8]) {
        if tag == b'E' && self.flow == Flow::ServerToClient {
            if self.error_classes.is_empty() {
                self.error_classes = vec![0; super::sqlstate::SLOTS];
            }
            self.error_classes[super::sqlstate::slot_of_error(body)] += 1;
        }
    }

    pub fn new(flow: Flow, limit: usize) -> Self {
        Scanner {
            flow,
            limit,
            body_left: 0,
            last_tag: 0,
            tx_status: None,
            counts: Counts::default(),
            error_classes: Vec::new(),
            intercept: false,
            intercept_all: false,
            live: None,
            repeating: None,
            rows: None,
            scratch: Vec::new(),
            gap: 0,
            placed: 0,
            spill: None,
            changes: None,
            named: false,
            unnamed: 0,
            env: (0, 0),
            watch_env: false,
            env_stale: false,
            env_names: Vec::new(),
            env_every_bind: false,
            described: None,
            activity: None,
            held: 0,
            held_tag: 0,
            held_hit: false,
            in_batch: false,
            synced_after_execute: false,
            turns: 0,
            ended: None,
            added: None,
        }
    }

    /// Server side: the answer to the turn after those answered so far is to a
    /// Query whose text has `added` pieces (character offset in the client's
    /// text, character length), in order: positions in its errors are moved
    /// back to the client's text.
    pub fn added_text(&mut self, added: Vec<(usize, usize)>) {
        self.added = Some((self.turns, added));
    }

    /// The position `p` (1-based, in characters) in the text the server ran, as
    /// in the client's text: a position inside an added piece is where it went.
    fn original_position(added: &[(usize, usize)], p: usize) -> usize {
        let mut moved = 0;
        for &(at, len) in added {
            let start = at + moved;
            if p <= start {
                break;
            }
            if p <= start + len {
                return at + 1;
            }
            moved += len;
        }
        p - moved
    }

    /// True between frames: nothing of a streamed frame is outstanding.
    pub fn at_boundary(&self) -> bool {
        self.body_left == 0
    }

    fn holds(&self, tag: u8) -> bool {
        match self.flow {
            Flow::ClientToServer => {
                tag == b'Q'
                    || tag == b'P'
                    || starts_turn(tag) && (self.intercept_all || !self.in_batch && self.stale())
                    || self.described.is_some() && matches!(tag, b'D' | b'C')
                    // Small: held whole, so that its portal's name is known.
                    || tag == b'E' && (self.tagging() || self.live())
            }
            Flow::ServerToClient => {
                tag == b'Z'
                    || tag == b'T' && self.live()
                    || tag == b'D' && matches!(self.rows, Some(Some(_)))
                    || matches!(tag, b'E' | b'N') && self.added.is_some()
                    || matches!(tag, b't' | b'T' | b'n')
                        && self.described.as_ref().is_some_and(|d| d.waiting())
                    || matches!(tag, b'C' | b's' | b'I')
                        && self.described.as_ref().is_some_and(|d| d.executing())
            }
        }
    }

    /// Lets the held frame go as it came; counts it as `scan` would have, had it
    /// not held it. Returns its length.
    pub fn release(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        if opens_turn(self.held_tag) {
            // Published already where pgshift checked the session's statements
            // just before; otherwise now (after the DDL engine's turn).
            self.publish();
            self.sent();
        }
        match self.held_tag {
            b'Q' => self.end_turn(),
            b'P' => self.in_batch = true,
            tag => self.observe(tag),
        }
        held
    }

    /// Forgets the held frame: the engine answered it (or the batch it starts).
    pub fn consume(&mut self) {
        self.held = 0;
        self.in_batch = false;
    }

    fn end_turn(&mut self) {
        if self.flow == Flow::ClientToServer {
            self.owed();
        }
        self.turns += 1;
        self.in_batch = false;
        self.synced_after_execute = false;
    }

    /// Scans `buf[from..]` and returns the offset up to which `buf` may be forwarded.
    /// Bytes past it are the start of a frame that is held until it is complete, or,
    /// once the client's stream [`ended`](Self::ended), bytes nobody will read.
    pub fn scan(&mut self, buf: &mut BytesMut, from: usize) -> Result<usize, FrameError> {
        let scanned = self.scan_frames(buf, from);
        let gap = std::mem::take(&mut self.gap);
        if gap > 0 {
            let end = buf.len();
            buf.copy_within(self.placed..end, self.placed - gap);
            buf.truncate(end - gap);
        }
        scanned.map(|pos| pos - gap)
    }

    fn scan_frames(&mut self, buf: &mut BytesMut, from: usize) -> Result<usize, FrameError> {
        let mut pos = from;
        if self.held > 0 {
            return Ok(pos);
        }
        loop {
            if self.body_left > 0 {
                let take = self.body_left.min(buf.len() - pos);
                pos += take;
                self.body_left -= take;
                if self.body_left > 0 {
                    return Ok(pos);
                }
            }
            if self.ended.is_some() {
                return Ok(pos);
            }
            if self.flow == Flow::ClientToServer && refused_header(&buf[pos..]) {
                // The server answers the header (it has all it reads), then closes.
                self.ended = Some(ClientEnd::RefusedHeader);
                return Ok(pos + HEADER_LEN);
            }
            let Some((tag, total)) = header(&buf[pos..], self.limit)? else {
                return Ok(pos);
            };
            self.last_tag = tag;
            // The first message of a turn: published before `holds` looks at
            // whether the session's statements are stale.
            let opens = self.flow == Flow::ClientToServer && !self.in_batch && opens_turn(tag);
            if opens {
                self.publish();
            }
            if tag == b'D' && self.flow == Flow::ServerToClient {
                if self.rows.is_none() {
                    self.resolve_rows();
                }
                if let Some(Some(map)) = self.rows.as_ref().filter(|_| total >= SPILL_AT) {
                    self.spill = Some((total, map.clone()));
                    return Ok(pos);
                }
            }
            if self.holds(tag) {
                if buf.len() - pos < total {
                    // Grow in steps: a header alone must not pin its full length.
                    buf.reserve((total - (buf.len() - pos)).min(HOLD_STEP));
                    return Ok(pos);
                }
                let total = match (self.flow, tag) {
                    (Flow::ServerToClient, b'T' | b'D') => self.map_columns(tag, buf, pos, total),
                    _ => total,
                };
                let hit = self.inspect(tag, &buf[pos + HEADER_LEN..pos + total]);
                let total = match self.flow {
                    Flow::ServerToClient if matches!(tag, b'C' | b's' | b'I') => {
                        self.retag(buf, pos, total)
                    }
                    Flow::ServerToClient if matches!(tag, b'E' | b'N') => {
                        self.unshift(buf, pos, total)
                    }
                    _ => total,
                };
                // Only at the start of a turn: mid-batch, the server is waiting for
                // the rest of the batch and would never become quiescent.
                let turn = !self.in_batch && starts_turn(tag);
                if turn && (self.stale() || self.intercept && self.intercept_all)
                    || self.intercept && !self.in_batch && hit
                {
                    self.held = total;
                    self.held_tag = tag;
                    self.held_hit = hit;
                    return Ok(pos);
                }
                if opens {
                    self.sent();
                }
                match tag {
                    b'P' => self.in_batch = true,
                    b'Q' => self.end_turn(),
                    b'Z' => {
                        self.rows = None;
                        if self
                            .added
                            .as_ref()
                            .is_some_and(|(turn, _)| *turn <= self.turns)
                        {
                            self.added = None;
                        }
                        if self.described.as_ref().is_some_and(|d| d.executing()) {
                            let turn = self.turns;
                            self.note(|d| d.turn_over(turn));
                        }
                        self.end_turn();
                        if let Some(a) = &self.activity {
                            a.answered();
                        }
                    }
                    _ => {
                        self.count_error_class(tag, &buf[pos + HEADER_LEN..pos + total]);
                        self.observe(tag);
                    }
                }
                pos += total;
            } else {
                if tag == b'B' && self.flow == Flow::ClientToServer && self.described.is_some() {
                    // A Bind streams on (its parameters may be big): its names are
                    // read from its start, waited for up to BIND_NAMES_WAIT bytes.
                    let body =
                        &buf[(pos + HEADER_LEN).min(buf.len())..(pos + total).min(buf.len())];
                    let names = bind_names(body);
                    if names.is_none() && body.len() < (total - HEADER_LEN).min(BIND_NAMES_WAIT) {
                        buf.reserve(BIND_NAMES_WAIT);
                        return Ok(pos);
                    }
                    self.env_bound(names);
                    self.note(|d| d.bound(names));
                }
                if opens {
                    self.sent();
                }
                if tag == b'E' {
                    let body =
                        &buf[(pos + HEADER_LEN).min(buf.len())..(pos + total).min(buf.len())];
                    self.count_error_class(tag, body);
                }
                self.observe(tag);
                pos += HEADER_LEN;
                self.body_left = total - HEADER_LEN;
            }
        }
    }

    /// Looks at a held frame's body; true for a Query, or an unnamed Parse, that may be DDL
    /// (or a COPY, while `live`).
    fn inspect(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            b'Z' => {
                self.tx_status = body.first().copied().and_then(TxStatus::from_byte);
                false
            }
            b'Q' => {
                self.counts.queries += 1;
                // The text ends at the final byte; an embedded NUL makes Postgres
                // reject the message anyway.
                let sql = body.strip_suffix(&[0]).unwrap_or(body);
                self.unnamed += 1;
                self.env_text(b"", sql);
                if self.described.as_ref().is_some_and(|d| d.keeps())
                    && crate::sql::sniff::may_name_statements(sql)
                {
                    // SQL-level PREPARE, DEALLOCATE or DISCARD: what was known of
                    // the session's statements may be wrong now.
                    self.note(|d| d.forget_all());
                }
                if self.in_batch && self.tagging() {
                    // Postgres answers a Query inside a batch only if the batch
                    // has not failed: the count of turns may be off from here.
                    self.note(|d| d.untag());
                }
                self.sniff(sql)
                    || self.live()
                        && (crate::sql::sniff::starts_with_copy(sql) || self.may_repeat(sql))
            }
            b'P' => {
                // Parse: statement name, then the query text. Only unnamed statements
                // are candidates for interception: a named one outlives its batch.
                let name = cstr(body);
                self.named |= !name.is_empty();
                self.unnamed += u64::from(name.is_empty());
                self.note(|d| d.forget(name));
                let text = cstr(body.get(name.len() + 1..).unwrap_or_default());
                self.env_text(name, text);
                let hit = self.sniff(text);
                // A COPY, named or not, while a table is under rollout: it may
                // need the column list the application means. An INSERT or
                // UPDATE, named or not, may set a rollout's new column too.
                hit && name.is_empty()
                    || self.live()
                        && (crate::sql::sniff::starts_with_copy(text) || self.may_repeat(text))
            }
            b'D' | b'C' if self.flow == Flow::ClientToServer => {
                // Describe or Close: 'S' and a statement's name, or 'P' and a portal's.
                let name = cstr(body.get(1..).unwrap_or_default());
                let turn = self.turns;
                self.note(|d| match (tag, body.first()) {
                    (b'D', Some(b'S')) => d.asked(turn, name),
                    (b'D', Some(b'P')) => d.asked_portal(turn, name),
                    (_, Some(b'S')) => d.forget(name),
                    (_, Some(b'P')) => d.closed_portal(name),
                    _ => {}
                });
                false
            }
            b'B' if self.flow == Flow::ClientToServer => {
                self.env_bound(bind_names(body));
                self.note(|d| d.bound(bind_names(body)));
                false
            }
            b'E' if self.flow == Flow::ClientToServer && (self.tagging() || self.live()) => {
                let turn = self.turns;
                let mapping = self.live();
                self.note(|d| d.executed(turn, cstr_whole(body), mapping));
                false
            }
            b't' => {
                self.note(|d| d.parameters());
                false
            }
            b'T' | b'n' => {
                let turn = self.turns;
                let map = self.rows.clone().flatten();
                self.note(|d| d.rows(turn, (tag == b'T').then_some(body), map.as_ref()));
                false
            }
            _ => false,
        }
    }

    /// Server side: rows came with no RowDescription since the last result
    /// ended (an Execute of a statement described before): how they map, from
    /// what the client was told its statement returns.
    fn resolve_rows(&mut self) {
        let executing = self.described.as_ref().is_some_and(|d| d.executing());
        let turn = self.turns;
        self.rows = Some(match executing && self.live() {
            true => self.note(|d| d.rows_map(turn)).flatten(),
            false => None,
        });
    }

    /// Server side: the held RowDescription or DataRow at `pos` (`total` bytes)
    /// as the client gets it, without columns of pgshift's. A RowDescription
    /// says how the rows after it map. Returns the frame's length now.
    fn map_columns(&mut self, tag: u8, buf: &mut BytesMut, pos: usize, total: usize) -> usize {
        let body = &buf[pos + HEADER_LEN..pos + total];
        if tag == b'T' {
            let map = match self.live() {
                true => Mapping::of_row_description(body).map(Arc::new),
                false => None,
            };
            self.rows = Some(map);
        }
        let Some(Some(map)) = &self.rows else {
            return total;
        };
        let mapped = match tag {
            b'T' => map.row_description(body, &mut self.scratch),
            _ => map.data_row(body, &mut self.scratch),
        };
        if !mapped {
            return total;
        }
        // Never longer than the frame it replaces. A RowDescription is written in
        // its place (the record reads it there); a DataRow where what stays
        // before it ends, the gap it leaves closed up once the scan ends (rows
        // come by the thousand: closing up after each would move the rest of the
        // buffer each time).
        let len = self.scratch.len();
        if tag == b'T' {
            buf[pos..pos + len].copy_from_slice(&self.scratch);
            let end = buf.len();
            buf.copy_within(pos + total..end, pos + len);
            buf.truncate(end - (total - len));
            return len;
        }
        if self.gap > 0 {
            buf.copy_within(self.placed..pos, self.placed - self.gap);
        }
        let at = pos - self.gap;
        buf[at..at + len].copy_from_slice(&self.scratch);
        self.gap += total - len;
        self.placed = pos + total;
        total
    }

    fn tagging(&self) -> bool {
        self.described.as_ref().is_some_and(|d| d.tagging())
    }

    /// Server side: the held frame at `pos` (`total` bytes) ends an Execute; where
    /// that Execute ran a wrapped DML statement, its `SELECT n` tag becomes the
    /// statement's own (`UPDATE n`, `INSERT 0 n`, `DELETE n`). Returns the frame's
    /// length now.
    fn retag(&mut self, buf: &mut BytesMut, pos: usize, total: usize) -> usize {
        let turn = self.turns;
        let Some(tag) = self.note(|d| d.completed(turn)).flatten() else {
            return total;
        };
        let body = &buf[pos + HEADER_LEN..pos + total];
        let Some(count) = body.strip_prefix(b"SELECT ") else {
            return total;
        };
        let mut frame = Vec::with_capacity(total + 8);
        frame.push(b'C');
        frame.extend_from_slice(&((4 + tag.len() + count.len()) as u32).to_be_bytes());
        frame.extend_from_slice(tag.as_bytes());
        frame.extend_from_slice(count);
        replace_frame(buf, pos, total, &frame)
    }

    /// Server side: the held ErrorResponse or NoticeResponse at `pos` with its
    /// position in the client's text (see [`Self::added_text`]). Returns the
    /// frame's length now.
    fn unshift(&mut self, buf: &mut BytesMut, pos: usize, total: usize) -> usize {
        let Some((turn, added)) = &self.added else {
            return total;
        };
        if *turn != self.turns {
            return total;
        }
        let Some(frame) = super::backend::remap_position(&buf[pos..pos + total], |p| {
            Self::original_position(added, p)
        }) else {
            return total;
        };
        replace_frame(buf, pos, total, &frame)
    }

    fn sniff(&mut self, sql: &[u8]) -> bool {
        let hit = crate::sql::sniff::may_be_ddl(sql);
        if hit {
            self.counts.ddl_candidates += 1;
        }
        hit
    }

    /// Counts a streamed frame from its header alone.
    fn observe(&mut self, tag: u8) {
        match (self.flow, tag) {
            (Flow::ClientToServer, b'E') => {
                self.counts.queries += 1;
                self.in_batch = true;
                self.synced_after_execute = false;
            }
            (Flow::ClientToServer, b'S') => {
                self.owed();
                self.turns += 1;
                self.in_batch = false;
                self.synced_after_execute = true;
            }
            (Flow::ClientToServer, b'F') => {
                if self.in_batch && self.tagging() {
                    self.note(|d| d.untag());
                }
                self.owed();
                self.turns += 1;
                self.in_batch = false;
            }
            // CopyDone/CopyFail after an extended-protocol COPY FROM STDIN whose Sync
            // was sent early (libpq does): the server ignored that Sync in copy-in
            // mode, so it answers one turn fewer.
            (Flow::ClientToServer, b'c' | b'f') if self.synced_after_execute => {
                if let Some(a) = &self.activity {
                    a.ignored();
                }
                self.turns = self.turns.saturating_sub(1);
                self.synced_after_execute = false;
            }
            (Flow::ClientToServer, b'B' | b'D' | b'C' | b'H') => self.in_batch = true,
            (Flow::ClientToServer, b'X') => self.ended = Some(ClientEnd::Terminate),
            (Flow::ServerToClient, b'C' | b's' | b'I') => self.rows = None,
            // A Parse pgshift changed opens its turn: error and notice positions
            // count in the client's text up to its answer, not past it.
            (Flow::ServerToClient, b'1') => self.added = None,
            (Flow::ServerToClient, b'E') => {
                self.rows = None;
                self.counts.errors += 1;
                let turn = self.turns;
                self.note(|d| d.error(turn));
            }
            _ => {}
        }
    }
}

/// Frontend messages that can open a turn (all but COPY data and Sync/Flush,
/// which only continue one).
/// Named statements whose Binds count as changing what names mean.
const ENV_NAMES: usize = 32;

fn starts_turn(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'F' | b'X')
}

/// How much of a Bind the scanner waits for to read its portal and statement
/// names (past it, every portal is unknown to the record).
const BIND_NAMES_WAIT: usize = 1024;

/// Messages that open a turn the server answers with a ReadyForQuery (all of
/// [`starts_turn`] but Terminate).
fn opens_turn(tag: u8) -> bool {
    tag != b'X' && starts_turn(tag)
}

/// The portal and statement names a Bind body starts with; None when they are
/// not all there.
pub fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|&b| b == 0)?;
    let rest = &body[end + 1..];
    let stmt_end = rest.iter().position(|&b| b == 0)?;
    Some((&body[..end], &rest[..stmt_end]))
}

/// The NUL-terminated string at the start of `body`, when all of it is there.
fn cstr_whole(body: &[u8]) -> Option<&[u8]> {
    body.iter().position(|&b| b == 0).map(|end| &body[..end])
}

/// The NUL-terminated string at the start of `body`, without its terminator.
fn cstr(body: &[u8]) -> &[u8] {
    match body.iter().position(|&b| b == 0) {
        Some(end) => &body[..end],
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn streams_bodies_and_holds_ready_for_query() {
        let mut s = Scanner::new(Flow::ServerToClient, 1 << 20);
        let mut bytes = frame(b'D', &[7; 100]);
        bytes.extend(frame(b'Z', b"T"));
        // Feed the bytes in pieces: every cut point must give the same result.
        for cut in 0..bytes.len() {
            let mut s2 = Scanner::new(Flow::ServerToClient, 1 << 20);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let ready = s2.scan(&mut buf, 0).unwrap();
            assert!(ready <= cut);
            buf.extend_from_slice(&bytes[cut..]);
            let ready = s2.scan(&mut buf, ready).unwrap();
            assert_eq!(ready, bytes.len(), "cut at {cut}");
            assert_eq!(s2.tx_status, Some(TxStatus::InTransaction));
        }
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(s.scan(&mut buf, 0).unwrap(), 105);
        assert_eq!(s.tx_status, None);
    }

    fn described_field(name: &str) -> Vec<u8> {
        let mut f = name.as_bytes().to_vec();
        f.push(0);
        f.extend_from_slice(&[
            0, 0, 0, 9, 0, 1, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
        ]);
        f
    }

    fn row(values: &[&str]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v.as_bytes());
        }
        frame(b'D', &body)
    }

    #[test]
    fn pgshifts_column_is_taken_out_of_a_result_cut_anywhere() {
        let mut t = 2u16.to_be_bytes().to_vec();
        t.extend(described_field("id"));
        t.extend(described_field("id__pgshift_new"));
        let mut bytes = frame(b'T', &t);
        bytes.extend(row(&["1", "one"]));
        bytes.extend(row(&["22", "two"]));
        bytes.extend(frame(b'C', b"SELECT 2\0"));
        // A result of its own after the first: its rows go as they come.
        bytes.extend(row(&["3", "x"]));
        bytes.extend(frame(b'Z', b"I"));
        let mut want = frame(b'T', &[&[0, 1][..], &described_field("id")].concat());
        want.extend(row(&["1"]));
        want.extend(row(&["22"]));
        want.extend(frame(b'C', b"SELECT 2\0"));
        want.extend(row(&["3", "x"]));
        want.extend(frame(b'Z', b"I"));
        for cut in 0..bytes.len() {
            let mut s = Scanner::new(Flow::ServerToClient, usize::MAX);
            s.hide_columns(Arc::new(AtomicUsize::new(1)));
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut out = Vec::new();
            let ready = s.scan(&mut buf, 0).unwrap();
            out.extend(buf.split_to(ready));
            buf.extend_from_slice(&bytes[cut..]);
            let ready = s.scan(&mut buf, 0).unwrap();
            out.extend(buf.split_to(ready));
            assert_eq!(out, want, "cut at {cut}");
            assert!(buf.is_empty());
        }
        // No table under rollout: nothing is held or changed.
        let mut s = Scanner::new(Flow::ServerToClient, usize::MAX);
        s.hide_columns(Arc::new(AtomicUsize::new(0)));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(s.scan(&mut buf, 0).unwrap(), bytes.len());
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn only_writes_that_name_a_table_under_rollout_are_held() {
        let names = Arc::new(arc_swap::ArcSwap::from_pointee(vec![
            ("a".to_string(), "orders".to_string()),
            ("b".to_string(), "items".to_string()),
        ]));
        for (sql, held) in [
            (&b"UPDATE Orders SET amount = 1\0"[..], true),
            (b"UPDATE line_orders SET amount = 1\0", false),
            (b"UPDATE items SET amount = 1\0", false),
            (b" insert into public.orders (amount) values (1)\0", true),
            (b"UPDATE other SET amount = 1\0", false),
            (b"SELECT * FROM orders\0", false),
        ] {
            let mut c = Scanner::new(Flow::ClientToServer, 1 << 20);
            c.intercept = true;
            c.hold_copies(Arc::new(AtomicUsize::new(1)));
            c.hold_writes(names.clone(), "a");
            let bytes = frame(b'Q', sql);
            let mut buf = BytesMut::from(&bytes[..]);
            let ready = c.scan(&mut buf, 0).unwrap();
            assert_eq!(ready == 0, held, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn error_positions_point_into_the_clients_text() {
        // Five characters added after the tenth, three after the twentieth.
        let added = [(10, 5), (20, 3)];
        let original = |p| Scanner::original_position(&added, p);
        assert_eq!([original(1), original(10)], [1, 10]);
        assert_eq!([original(11), original(15)], [11, 11]);
        assert_eq!([original(16), original(25)], [11, 20]);
        assert_eq!([original(26), original(28), original(29)], [21, 21, 21]);
        assert_eq!(original(40), 32);
        // Only the rewritten turn's errors move, and the frame shrinks to fit.
        let mut s = Scanner::new(Flow::ServerToClient, usize::MAX);
        s.added_text(vec![(10, 5)]);
        let mut bytes = frame(b'E', b"SERROR\0C42703\0Mno\0P16\0\0");
        bytes.extend(frame(b'Z', b"I"));
        bytes.extend(frame(b'E', b"SERROR\0C42703\0Mno\0P16\0\0"));
        let mut buf = BytesMut::from(&bytes[..]);
        let ready = s.scan(&mut buf, 0).unwrap();
        let mut want = frame(b'E', b"SERROR\0C42703\0Mno\0P11\0\0");
        want.extend(frame(b'Z', b"I"));
        want.extend(frame(b'E', b"SERROR\0C42703\0Mno\0P16\0\0"));
        assert_eq!(&buf[..ready], &want[..]);
    }

    #[test]
    fn counts_queries_errors_and_ddl() {
        let mut c = Scanner::new(Flow::ClientToServer, 1 << 20);
        let mut bytes = frame(b'Q', b"select 1\0");
        bytes.extend(frame(b'P', b"s1\0create index i on t(c)\0\0\0"));
        bytes.extend(frame(b'E', b"\0\0\0\0\0"));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(c.scan(&mut buf, 0).unwrap(), bytes.len());
        assert_eq!(c.counts.queries, 2);
        assert_eq!(c.counts.ddl_candidates, 1);

        let mut s = Scanner::new(Flow::ServerToClient, 1 << 20);
        let mut buf = BytesMut::from(&frame(b'E', b"SERROR\0\0")[..]);
        s.scan(&mut buf, 0).unwrap();
        assert_eq!(s.counts.errors, 1);
        assert_eq!(s.last_tag, b'E');
    }

    #[test]
    fn nothing_after_a_terminate_is_forwarded() {
        let mut bytes = frame(b'Q', b"select 1\0");
        let upto = bytes.len() + 5;
        bytes.extend(frame(b'X', b""));
        bytes.extend(frame(b'Q', b"select 2\0"));
        bytes.extend_from_slice(b"\0\0\0\0\0garbage");
        for intercept_all in [false, true] {
            let mut c = Scanner::new(Flow::ClientToServer, 1 << 20);
            c.intercept = intercept_all;
            c.intercept_all = intercept_all;
            let mut buf = BytesMut::from(&bytes[..]);
            let mut ready = c.scan(&mut buf, 0).unwrap();
            if intercept_all {
                // Held: the Query, then the Terminate (deferred work waits for them).
                assert_eq!(c.held, upto - 5);
                assert_eq!(ready, 0);
                ready = c.release();
                ready = c.scan(&mut buf, ready).unwrap();
                assert_eq!(c.held, 5);
                ready += c.release();
                ready = c.scan(&mut buf, ready).unwrap();
            }
            assert_eq!(ready, upto);
            assert_eq!(c.ended, Some(ClientEnd::Terminate));
            assert_eq!(c.counts.queries, 1);
        }
    }

    #[test]
    fn a_refused_header_is_the_last_thing_forwarded() {
        let mut c = Scanner::new(Flow::ClientToServer, 1 << 20);
        let mut bytes = frame(b'Q', b"select 1\0");
        let upto = bytes.len() + 5;
        bytes.extend_from_slice(b"Q\0\0\0\x02more");
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(c.scan(&mut buf, 0).unwrap(), upto);
        assert_eq!(c.ended, Some(ClientEnd::RefusedHeader));
        // The server is not checked: its frames are trusted, and bad ones are errors.
        let mut s = Scanner::new(Flow::ServerToClient, 1 << 20);
        let mut buf = BytesMut::from(&b"C\0\0\0\x02"[..]);
        assert!(s.scan(&mut buf, 0).is_err());
    }

    #[test]
    fn rejects_oversize_before_buffering() {
        let mut c = Scanner::new(Flow::ClientToServer, 64);
        let mut buf = BytesMut::from(&b"d\x00\x10\x00\x00"[..]);
        assert!(matches!(
            c.scan(&mut buf, 0),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            let mut s = Scanner::new(Flow::ClientToServer, 4096);
            let mut buf = BytesMut::new();
            let mut ready = 0;
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = (seed % 40) as usize;
                buf.extend((0..n).map(|i| (seed >> (i % 8 * 8)) as u8));
                match s.scan(&mut buf, ready) {
                    Ok(r) => ready = r,
                    Err(_) => break,
                }
                assert!(ready <= buf.len());
            }
        }
    }
}
