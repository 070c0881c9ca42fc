//! What the client was told about the results of its named prepared statements:
//! the RowDescription the server sent in answer to its last Describe of each. A
//! rollout that changes a table changes what those statements return; to prepare
//! one again so that it returns what the client expects, pgshift must know what
//! that is, and Postgres cannot say any more (a Describe of the statement fails
//! once its result changed).
//!
//! Both scanners of a session share one record. The client's side notes each
//! Describe of a statement in order; the server's side pairs the answers with
//! them: a ParameterDescription is sent only for a Describe of a statement, and its
//! RowDescription or NoData follows at once. An error makes the server skip the
//! rest of the batch, so the Describes of that batch are dropped. A Parse or Close
//! of a name forgets what was known for it. Bounded per session: past the bounds
//! the record gives up (and says nothing more), rather than pair wrongly.

use super::hidden::Mapping;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Statements and unanswered Describes a session's record keeps, at most.
const MAX_NAMES: usize = 4096;
/// Bytes of RowDescription and names it keeps, at most.
const MAX_BYTES: usize = 1 << 20;
/// Postgres knows a statement (and a portal) by the first NAMEDATALEN - 1 bytes of
/// its name.
const NAME_BYTES: usize = 63;

/// The record both sides of a session share.
#[derive(Debug, Default)]
pub struct Record {
    /// Describes wait for their answer: the server's side holds the frames that
    /// may answer them only then (one atomic load per RowDescription otherwise).
    waiting: AtomicBool,
    /// Statements wrapped from a DML statement exist: the client's side notes each
    /// Execute (one atomic load per Execute otherwise).
    tagging: AtomicBool,
    /// Something is known of the session's statements (see `keeps`).
    keeps: AtomicBool,
    /// Executes wait for their end: the server's side holds the frames that end
    /// them, to give a wrapped DML statement its own command tag back.
    executing: AtomicBool,
    inner: Mutex<Described>,
}

impl Record {
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn tagging(&self) -> bool {
        self.tagging.load(Ordering::Acquire)
    }

    /// Something is known of the session's statements: an SQL-level PREPARE,
    /// DEALLOCATE or DISCARD must make the record forget it.
    pub fn keeps(&self) -> bool {
        self.keeps.load(Ordering::Acquire)
    }

    pub fn executing(&self) -> bool {
        self.executing.load(Ordering::Acquire)
    }

    /// Runs `f` on the record, then notes whether Describes are waiting.
    pub fn with<T>(&self, f: impl FnOnce(&mut Described) -> T) -> T {
        let mut d = self.lock();
        let out = f(&mut d);
        self.waiting.store(d.waiting(), Ordering::Release);
        self.tagging.store(!d.tags.is_empty(), Ordering::Release);
        self.keeps.store(
            !d.shapes.is_empty() || !d.wrapped.is_empty(),
            Ordering::Release,
        );
        self.executing
            .store(!d.executes.is_empty(), Ordering::Release);
        out
    }

    /// What the client was last told statement `name` returns (see [`Described::shape`]).
    pub fn shape(&self, name: &[u8]) -> Option<Option<Bytes>> {
        self.lock().shape(name)
    }

    fn lock(&self) -> MutexGuard<'_, Described> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The name Postgres knows a statement by.
fn key(name: &[u8]) -> &[u8] {
    &name[..name.len().min(NAME_BYTES)]
}

#[derive(Debug, Default)]
pub struct Described {
    /// Describes of statements not yet answered, in order.
    asked: VecDeque<Asked>,
    /// The Describe whose ParameterDescription just came.
    answering: Option<Asked>,
    /// Per statement: its RowDescription body, or None for NoData.
    shapes: HashMap<Vec<u8>, Option<Bytes>>,
    /// Per statement whose result has a column of pgshift's: how its rows map to
    /// what the client was told (see `super::hidden`).
    maps: HashMap<Vec<u8>, Arc<Mapping>>,
    bytes: usize,
    /// Over a bound: nothing is known any more.
    gave_up: bool,
    /// The last turn an error ended: a Describe of it that comes after the error
    /// (a batch in pieces, a Flush without Sync) is skipped by the server too.
    failed_through: Option<u64>,
    /// Statements pgshift prepared again wrapped (see `session::wrapper`): only
    /// their text is taken for a wrapper of pgshift's.
    wrapped: std::collections::HashSet<Vec<u8>>,
    /// Names looked at in a transaction block, and the count of changes then.
    checked: (u64, std::collections::HashSet<Vec<u8>>),
    /// Per portal, the statement the client last bound to it: a Describe of the
    /// portal tells the client what that statement returns (PgJDBC learns it so,
    /// and reads later results by it without asking again).
    portals: HashMap<Vec<u8>, Vec<u8>>,
    /// Wrapped statements whose own text is an INSERT, UPDATE or DELETE: the start
    /// of the command tag the client expects instead of the wrapper's `SELECT n`.
    tags: HashMap<Vec<u8>, &'static str>,
    /// While `tags` is not empty or results are mapped: Executes not yet ended
    /// (by their turn), with the tag their portal's statement wants.
    executes: VecDeque<Execute>,
}

/// An Execute not yet ended.
#[derive(Debug)]
struct Execute {
    turn: u64,
    /// The start of the command tag its statement wants (see `tags`).
    tag: Option<&'static str>,
    /// The statement bound to its portal, when known.
    statement: Option<Vec<u8>>,
}

/// A Describe of a statement, not yet answered.
#[derive(Debug)]
struct Asked {
    /// The client's turn it was in.
    turn: u64,
    name: Vec<u8>,
    /// The client parsed or closed the name since: the answer describes a
    /// statement that is gone (a pipelined redefinition), and is not kept. Also a
    /// Describe of a portal whose statement is not known.
    void: bool,
    /// A Describe of a portal: answered by a RowDescription or NoData alone.
    portal: bool,
}

impl Described {
    /// Client side: a Describe of statement `name` in turn `turn`.
    pub fn asked(&mut self, turn: u64, name: &[u8]) {
        if self.gave_up || self.failed_through.is_some_and(|t| turn <= t) {
            return;
        }
        if self.asked.len() >= MAX_NAMES {
            return self.give_up();
        }
        self.asked.push_back(Asked {
            turn,
            name: key(name).to_vec(),
            void: false,
            portal: false,
        });
    }

    /// Client side: a Describe of portal `portal` in turn `turn`.
    pub fn asked_portal(&mut self, turn: u64, portal: &[u8]) {
        if self.gave_up || self.failed_through.is_some_and(|t| turn <= t) {
            return;
        }
        if self.asked.len() >= MAX_NAMES {
            return self.give_up();
        }
        let name = self.portals.get(key(portal)).cloned();
        self.asked.push_back(Asked {
            turn,
            void: name.is_none(),
            name: name.unwrap_or_default(),
            portal: true,
        });
    }

    /// Client side: a Bind of statement `statement` to portal `portal`; None when
    /// the names could not be read (every portal is unknown then).
    pub fn bound(&mut self, names: Option<(&[u8], &[u8])>) {
        match names {
            Some((portal, statement))
                if self.portals.get(key(portal)).map(Vec::as_slice) == Some(key(statement)) => {}
            Some((portal, statement)) if self.portals.len() < MAX_NAMES => {
                self.portals
                    .insert(key(portal).to_vec(), key(statement).to_vec());
            }
            _ => self.portals.clear(),
        }
    }

    /// Client side: an Execute of portal `portal` (None: its name had not arrived)
    /// in turn `turn`; `mapping`: results may have columns of pgshift's.
    pub fn executed(&mut self, turn: u64, portal: Option<&[u8]>, mapping: bool) {
        if self.tags.is_empty() && !mapping || self.failed_through.is_some_and(|t| turn <= t) {
            return;
        }
        if self.executes.len() >= MAX_NAMES {
            // Rather a wrapper's tag than one paired wrongly.
            self.tags.clear();
            self.executes.clear();
            return;
        }
        let statement = portal.and_then(|p| self.portals.get(key(p))).cloned();
        let tag = statement.as_ref().and_then(|s| self.tags.get(s)).copied();
        self.executes.push_back(Execute {
            turn,
            tag,
            statement,
        });
    }

    /// Server side: rows came for the next Execute of turn `turn` with no
    /// RowDescription before them: how they map, from what the client was told
    /// the Execute's statement returns.
    pub fn rows_map(&mut self, turn: u64) -> Option<Arc<Mapping>> {
        while self.executes.front().is_some_and(|e| e.turn < turn) {
            self.executes.pop_front();
        }
        let e = self.executes.front().filter(|e| e.turn == turn)?;
        self.maps.get(e.statement.as_ref()?).cloned()
    }

    /// Server side: a CommandComplete, PortalSuspended or EmptyQueryResponse while
    /// the server answers turn `turn`: the end of the next Execute of that turn
    /// (if there is one). Returns the command tag start that Execute wants.
    pub fn completed(&mut self, turn: u64) -> Option<&'static str> {
        // Executes of earlier turns are over (the engine answered them itself).
        while self.executes.front().is_some_and(|e| e.turn < turn) {
            self.executes.pop_front();
        }
        match self.executes.front() {
            Some(e) if e.turn == turn => self.executes.pop_front().and_then(|e| e.tag),
            _ => None,
        }
    }

    /// Server side: the ReadyForQuery that ends turn `turn`.
    pub fn turn_over(&mut self, turn: u64) {
        while self.executes.front().is_some_and(|e| e.turn <= turn) {
            self.executes.pop_front();
        }
    }

    /// Client side: statements were prepared or dropped in SQL (names unknown).
    pub fn forget_all(&mut self) {
        self.shapes.clear();
        self.maps.clear();
        self.bytes = 0;
        self.wrapped.clear();
        self.tags.clear();
        self.checked.1.clear();
        for a in self.asked.iter_mut().chain(self.answering.as_mut()) {
            a.void = true;
        }
    }

    /// Client side: the count of turns may be off; rather the wrapper's tag than
    /// one given to the wrong Execute.
    pub fn untag(&mut self) {
        self.tags.clear();
        self.executes.clear();
    }

    /// Client side: a Close of portal `portal`.
    pub fn closed_portal(&mut self, portal: &[u8]) {
        self.portals.remove(key(portal));
    }

    /// Client side: a Parse or Close of statement `name`.
    pub fn forget(&mut self, name: &[u8]) {
        let name = key(name);
        if let Some(body) = self.shapes.remove(name) {
            self.bytes -= name.len() + body.map_or(0, |b| b.len());
        }
        self.maps.remove(name);
        self.wrapped.remove(name);
        self.tags.remove(name);
        self.checked.1.remove(name);
        for a in self.asked.iter_mut().chain(self.answering.as_mut()) {
            a.void |= a.name == name;
        }
        // A portal bound to the statement that was keeps its plan.
        self.portals.retain(|_, statement| statement != name);
    }

    /// Server side: a ParameterDescription, the start of a Describe's answer.
    pub fn parameters(&mut self) {
        match self.asked.pop_front() {
            Some(a) if a.portal => self.give_up(),
            next => self.answering = next,
        }
    }

    /// Server side: a RowDescription (`Some(body)`, as the client got it) or
    /// NoData (None) while the server answers turn `turn`, with how the rows map.
    /// What follows a ParameterDescription answers a Describe of a statement;
    /// otherwise it answers a Describe of a portal of that turn, or (no such
    /// Describe waits) a simple Query.
    pub fn rows(&mut self, turn: u64, body: Option<&[u8]>, map: Option<&Arc<Mapping>>) {
        let asked = match self.answering.take() {
            Some(a) => a,
            None if self
                .asked
                .front()
                .is_some_and(|a| a.portal && a.turn == turn) =>
            {
                match self.asked.pop_front() {
                    Some(a) => a,
                    None => return,
                }
            }
            None => return,
        };
        let Asked { name, void, .. } = asked;
        if self.gave_up || void {
            return;
        }
        let body = body.map(Bytes::copy_from_slice);
        self.bytes += name.len() + body.as_ref().map_or(0, |b| b.len());
        let len = name.len();
        match map {
            Some(m) => self.maps.insert(name.clone(), m.clone()),
            None => self.maps.remove(&name),
        };
        if let Some(old) = self.shapes.insert(name, body) {
            self.bytes -= len + old.map_or(0, |b| b.len());
        }
        if self.bytes > MAX_BYTES || self.shapes.len() > MAX_NAMES {
            self.give_up();
        }
    }

    /// Server side: an ErrorResponse while the server answers turn `turn`: it
    /// skips the rest of that batch, Describes included.
    pub fn error(&mut self, turn: u64) {
        self.answering = None;
        self.failed_through = Some(self.failed_through.map_or(turn, |t| t.max(turn)));
        while self.asked.front().is_some_and(|a| a.turn <= turn) {
            self.asked.pop_front();
        }
        self.turn_over(turn);
    }

    /// True while Describes wait for their answer (the server's side holds the
    /// frames that may answer them).
    pub fn waiting(&self) -> bool {
        !self.asked.is_empty() || self.answering.is_some()
    }

    /// The RowDescription body last sent for statement `name`: Some(None) for
    /// NoData, None when not known.
    pub fn shape(&self, name: &[u8]) -> Option<Option<Bytes>> {
        self.shapes.get(key(name)).cloned()
    }

    /// pgshift prepared statement `name` again wrapped; `tag`: the start of the
    /// command tag of the client's own text, where that is not `SELECT`.
    pub fn wrapped(&mut self, name: &[u8], tag: Option<&'static str>) {
        if self.wrapped.len() < MAX_NAMES {
            self.wrapped.insert(key(name).to_vec());
            // The wrapper returns what the client knows, nothing of pgshift's.
            self.maps.remove(key(name));
            match tag {
                Some(tag) => self.tags.insert(key(name).to_vec(), tag),
                None => self.tags.remove(key(name)),
            };
        }
    }

    /// pgshift prepared statement `name` again as the client wrote it; `map`:
    /// how its rows map now.
    pub fn unwrapped(&mut self, name: &[u8], map: Option<Mapping>) {
        self.wrapped.remove(key(name));
        self.tags.remove(key(name));
        match map {
            Some(m) if self.shapes.contains_key(key(name)) => {
                self.maps.insert(key(name).to_vec(), Arc::new(m));
            }
            _ => {
                self.maps.remove(key(name));
            }
        }
    }

    /// Whether pgshift's wrapper is what statement `name` holds now.
    pub fn is_wrapped(&self, name: &[u8]) -> bool {
        self.wrapped.contains(key(name))
    }

    /// Notes that statement `name` was looked at after `count` changes; false when
    /// it already was.
    pub fn check(&mut self, count: u64, name: &[u8]) -> bool {
        if self.checked.0 != count {
            self.checked = (count, Default::default());
        }
        self.checked.1.len() < MAX_NAMES && self.checked.1.insert(key(name).to_vec())
    }

    fn give_up(&mut self) {
        *self = Described {
            gave_up: true,
            ..Described::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pair_with_describes_and_errors_skip_the_batch() {
        let mut d = Described::default();
        d.asked(0, b"a");
        d.asked(0, b"b");
        d.asked(1, b"c");
        d.parameters();
        d.rows(0, Some(b"A"), None);
        // The Describe of b fails: the rest of turn 0 is skipped.
        d.error(0);
        d.parameters();
        d.rows(1, None, None);
        assert_eq!(d.shape(b"a"), Some(Some(Bytes::from_static(b"A"))));
        assert_eq!(d.shape(b"b"), None);
        assert_eq!(d.shape(b"c"), Some(None));
        // A RowDescription that follows no ParameterDescription (a portal's, a
        // query's) is nobody's.
        d.rows(1, Some(b"X"), None);
        assert_eq!(d.shape(b"c"), Some(None));
        d.forget(b"a");
        assert_eq!(d.shape(b"a"), None);
        assert!(!d.waiting());
    }

    #[test]
    fn a_wrapped_dml_statement_gets_its_tag_back_for_its_own_executes() {
        let mut d = Described::default();
        d.bound(Some((b"", b"u")));
        // No wrapped DML statement: nothing is noted.
        d.executed(0, Some(b""), false);
        assert!(d.executes.is_empty());
        d.wrapped(b"u", Some("UPDATE "));
        d.wrapped(b"s", None);
        d.bound(Some((b"p", b"s")));
        d.executed(1, Some(b"p"), false);
        d.bound(Some((b"", b"u")));
        d.executed(1, Some(b""), false);
        d.executed(2, Some(b""), false);
        d.executed(3, None, false);
        d.executed(4, Some(b""), false);
        assert_eq!(d.completed(1), None, "the SELECT keeps its tag");
        assert_eq!(d.completed(1), Some("UPDATE "));
        // Turn 2's Execute failed: the error ends it.
        d.error(2);
        // Turn 3's portal was not known: no tag; the next turn's is not taken.
        assert_eq!(d.completed(3), None);
        assert_eq!(d.completed(3), None);
        assert_eq!(d.completed(4), Some("UPDATE "));
        // Parsed again by the client: its executes keep their tag no more.
        d.forget(b"u");
        d.executed(5, Some(b""), false);
        assert!(d.executes.is_empty());
    }

    #[test]
    fn a_describe_after_its_batch_failed_is_not_waited_for() {
        let mut d = Described::default();
        d.asked(0, b"a");
        d.error(0);
        // The rest of turn 0 reaches pgshift after the error (a batch in pieces).
        d.asked(0, b"late");
        d.asked(1, b"b");
        d.parameters();
        d.rows(1, Some(b"B"), None);
        assert_eq!(d.shape(b"late"), None);
        assert_eq!(d.shape(b"b"), Some(Some(Bytes::from_static(b"B"))));
    }

    #[test]
    fn an_answer_for_a_statement_redefined_since_is_not_kept() {
        let mut d = Described::default();
        d.asked(0, b"s");
        // Turn 1, sent before turn 0's answer: Close s, Parse s (another text).
        d.forget(b"s");
        d.parameters();
        d.rows(0, Some(b"OLD"), None);
        assert_eq!(d.shape(b"s"), None);
        // Between the ParameterDescription and the RowDescription, too.
        d.asked(1, b"s");
        d.parameters();
        d.forget(b"s");
        d.rows(1, Some(b"OLD"), None);
        assert_eq!(d.shape(b"s"), None);
        d.asked(2, b"s");
        d.parameters();
        d.rows(2, Some(b"NEW"), None);
        assert_eq!(d.shape(b"s"), Some(Some(Bytes::from_static(b"NEW"))));
    }

    #[test]
    fn a_portals_describe_tells_what_its_statement_returns() {
        let mut d = Described::default();
        d.bound(Some((b"", b"S_1")));
        d.asked_portal(0, b"");
        d.rows(0, Some(b"P"), None);
        assert_eq!(d.shape(b"S_1"), Some(Some(Bytes::from_static(b"P"))));
        d.asked_portal(1, b"");
        // A RowDescription while the server answers an earlier turn (a simple
        // Query's) is nobody's.
        d.rows(0, Some(b"Q"), None);
        assert_eq!(d.shape(b"S_1"), Some(Some(Bytes::from_static(b"P"))));
        d.rows(1, Some(b"R"), None);
        assert_eq!(d.shape(b"S_1"), Some(Some(Bytes::from_static(b"R"))));
        // A portal bound where its names could not be read: its answer is no one's,
        // but it keeps the order.
        d.bound(None);
        d.asked_portal(2, b"");
        d.asked(2, b"S_2");
        d.rows(2, Some(b"X"), None);
        d.parameters();
        d.rows(2, Some(b"Y"), None);
        assert_eq!(d.shape(b"S_2"), Some(Some(Bytes::from_static(b"Y"))));
        assert!(!d.waiting());
        // A portal's name counts as Postgres counts it, too.
        let long = [b'p'; 1000];
        d.bound(Some((&long, b"S_3")));
        assert_eq!(d.portals.keys().map(|k| k.len()).max(), Some(63));
    }

    #[test]
    fn names_count_as_postgres_counts_them() {
        let mut d = Described::default();
        let short = [b'n'; 63];
        let mut long = short.to_vec();
        long.extend_from_slice(&[b'x'; 1000]);
        d.asked(0, &long);
        d.parameters();
        d.rows(0, Some(b"A"), None);
        assert_eq!(d.shape(&short), Some(Some(Bytes::from_static(b"A"))));
        assert_eq!(d.bytes, 64);
        d.forget(&short);
        assert_eq!((d.shape(&long), d.bytes), (None, 0));
    }

    #[test]
    fn past_its_bounds_it_knows_nothing() {
        let mut d = Described::default();
        for i in 0..=MAX_NAMES {
            d.asked(0, format!("s{i}").as_bytes());
        }
        d.parameters();
        d.rows(0, Some(b"A"), None);
        assert_eq!(d.shape(b"s0"), None);
        assert!(!d.waiting());
    }
}
