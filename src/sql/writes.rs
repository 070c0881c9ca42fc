//! `INSERT … VALUES` and `UPDATE … SET` as a rollout's mirror sees them: which
//! columns the statement sets, and where each value stands in the text, so that
//! the statement can also set the rollout's new column to the same value
//! (`SET amount = amount + 1` → `…, amount__pgshift_new = (amount + 1)`), and the
//! mirror trigger, guarded by a WHEN clause, need not run.
//!
//! Only values that can be written twice with no difference and no side effect
//! are taken: constants, the column itself, `+ - *`, `/` and `%` by a constant
//! other than zero, and casts to built-in types spelled as keywords. Anything
//! else (another column, a function call, a subquery, a parameter, DEFAULT) is
//! left to the trigger.

use super::analysis::TableRef;
use super::ident::quote;
use pg_query::protobuf::{KeywordKind, ScanToken, Token};
use pg_query::NodeEnum;
use std::ops::Range;

/// A write whose values are known, offsets in the analysed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub table: TableRef,
    /// What a column reference names the table by (its alias, else its name).
    target: String,
    shape: Shape,
    sets: Vec<Set>,
    /// The statement may call a function (a name before a parenthesis): it may
    /// change what later statements' names mean (`set_config('search_path', …)`).
    pub calls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Update,
    /// Where another column goes (the column list's `)`), and another value in
    /// each row (the row's `)`).
    Insert {
        list_end: usize,
        row_ends: Vec<usize>,
    },
}

/// A column the statement sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Set {
    column: String,
    /// Per row (one for UPDATE): the value's text, when it can be written twice.
    values: Vec<Option<Range<usize>>>,
    /// UPDATE: the end of the `column = value` item.
    end: usize,
    /// The column references in its values.
    refs: Vec<Vec<String>>,
    /// A value reads a parameter (`$1`): a repeat must be cast to the column's
    /// type, as the value is (see [`Write::mirrored`]).
    params: bool,
}

impl Write {
    /// `sql` (the text this was found in) also setting `new_column` to the
    /// value it sets `column` to; None when it does not set `column`, sets
    /// `new_column` itself, or sets `column` to a value that cannot be repeated.
    pub fn mirror(&self, sql: &str, column: &str, new_column: &str) -> Option<String> {
        self.mirrored(sql, column, new_column, None).map(|m| m.text)
    }

    /// [`Self::mirror`], with where the text was added. With `cast` (the
    /// column's type, spelled as an SQL keyword: `integer`), values may read
    /// parameters of a prepared statement, each one only there: the repeat is
    /// cast to the column's type (`($2)::integer`), so that a parameter whose
    /// type the server infers from the column gets the same type from either
    /// place, and the repeat holds the value the column gets (an assignment
    /// cast and the explicit cast between built-in types are one function).
    pub fn mirrored(
        &self,
        sql: &str,
        column: &str,
        new_column: &str,
        cast: Option<&str>,
    ) -> Option<Mirrored> {
        if self.sets.iter().any(|s| s.column == new_column) {
            return None;
        }
        let set = self.sets.iter().find(|s| s.column == column)?;
        let cast = match (set.params, cast) {
            (false, _) => None,
            (true, None) => return None,
            (true, Some(cast)) => Some(cast),
        };
        let repeat = |value: &str| match cast {
            Some(ty) => format!("({value})::{ty}"),
            None => format!("({value})"),
        };
        // A value may read only the column itself (the rollout's: a built-in
        // integer), so that no operator or function of a user's runs twice; a
        // qualified name could also be a function call (`o.f` is `f(o)`).
        let own = |r: &Vec<String>| match r.as_slice() {
            [c] => c == column,
            [q, c] => c == column && *q == self.target,
            _ => false,
        };
        if !set.refs.iter().all(own) {
            return None;
        }
        let values: Vec<&str> = set
            .values
            .iter()
            .map(|v| sql.get(v.clone()?))
            .collect::<Option<_>>()?;
        let new = quote(new_column);
        let mut inserts: Vec<(usize, String)> = match &self.shape {
            Shape::Update => vec![(set.end, format!(", {new} = {}", repeat(values[0])))],
            Shape::Insert { list_end, row_ends } => {
                let mut v = vec![(*list_end, format!(", {new}"))];
                for (end, value) in row_ends.iter().zip(&values) {
                    v.push((*end, format!(", {}", repeat(value))));
                }
                v
            }
        };
        inserts.sort_by_key(|(at, _)| *at);
        let mut text = String::with_capacity(sql.len() + 64);
        let mut added = Vec::with_capacity(inserts.len());
        let mut from = 0;
        for (at, piece) in inserts {
            text.push_str(sql.get(from..at)?);
            added.push((sql.get(..at)?.chars().count(), piece.chars().count()));
            text.push_str(&piece);
            from = at;
        }
        text.push_str(sql.get(from..)?);
        Some(Mirrored { text, added })
    }
}

/// A write's text with the new column set too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    pub text: String,
    /// Each added piece: where, in characters of the original text, and how
    /// many characters long (for error positions).
    pub added: Vec<(usize, usize)>,
}

/// Longest text [`find`] parses on the caller's thread: at most ~2.2 KB of
/// stack per byte of nesting unoptimized (see `super::nesting`), ~1.1 MB here,
/// well inside a session thread's 2 MiB.
pub const INLINE_MAX: usize = 512;

/// Texts [`find`] remembers per thread (the parse is most of a write's cost).
const REMEMBERED: usize = 256;

thread_local! {
    static SEEN: std::cell::RefCell<std::collections::HashMap<String, Option<Known>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A write found in one text, with that text's token bounds.
#[derive(Debug, Clone)]
struct Known {
    write: Write,
    bounds: Vec<(usize, usize)>,
}

/// The write of `sql` when it is a single INSERT or UPDATE of a shape pgshift
/// can repeat values in; None for anything else, and for text over
/// [`INLINE_MAX`] bytes. Texts that differ only in their constants have the
/// same parse tree: the parse (most of the cost, on this thread: a single-row
/// write would wait longer for a parser thread than for its parse) is done once
/// per shape, and the positions are carried over token by token.
pub fn find(sql: &str) -> Option<Write> {
    if sql.len() > INLINE_MAX {
        return None;
    }
    let tokens = Tokens::of(sql)?;
    let key = tokens.shape();
    let bounds = tokens.bounds();
    if let Some(hit) = SEEN.with(|seen| seen.borrow().get(&key).cloned()) {
        return hit.and_then(|k| k.write.moved(&k.bounds, &bounds));
    }
    let found =
        pg_query::parse(sql)
            .ok()
            .and_then(|parsed| match parsed.protobuf.stmts.as_slice() {
                [only] => shaped(only.stmt.as_ref()?.node.as_ref()?, &tokens),
                _ => None,
            });
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        let known = found.clone().map(|write| Known {
            write,
            bounds: bounds.clone(),
        });
        seen.insert(key, known);
    });
    found
}

impl Write {
    /// The same write in another text of the same shape: each position, a
    /// token's start or end in `from`, becomes that token's in `to`.
    fn moved(&self, from: &[(usize, usize)], to: &[(usize, usize)]) -> Option<Write> {
        let start = |at: usize| {
            let i = from.binary_search_by_key(&at, |b| b.0).ok()?;
            Some(to.get(i)?.0)
        };
        let end = |at: usize| {
            let i = from.iter().position(|b| b.1 == at)?;
            Some(to.get(i)?.1)
        };
        let range = |r: &Option<Range<usize>>| -> Option<Option<Range<usize>>> {
            match r {
                None => Some(None),
                Some(r) => Some(Some(start(r.start)?..end(r.end)?)),
            }
        };
        let shape = match &self.shape {
            Shape::Update => Shape::Update,
            Shape::Insert { list_end, row_ends } => Shape::Insert {
                list_end: start(*list_end)?,
                row_ends: row_ends.iter().map(|e| start(*e)).collect::<Option<_>>()?,
            },
        };
        let mut sets = Vec::new();
        for set in &self.sets {
            sets.push(Set {
                column: set.column.clone(),
                refs: set.refs.clone(),
                params: set.params,
                values: set.values.iter().map(range).collect::<Option<_>>()?,
                end: match self.shape {
                    Shape::Update if set.values.iter().any(Option::is_some) => end(set.end)?,
                    _ => set.end,
                },
            });
        }
        Some(Write {
            table: self.table.clone(),
            target: self.target.clone(),
            shape,
            sets,
            calls: self.calls,
        })
    }
}

/// The write `node` makes, when its shape is one pgshift can repeat values in.
pub fn of(node: &NodeEnum, sql: &str) -> Option<Write> {
    match node {
        NodeEnum::InsertStmt(_) | NodeEnum::UpdateStmt(_) => {}
        _ => return None,
    }
    shaped(node, &Tokens::of(sql)?)
}

fn shaped(node: &NodeEnum, t: &Tokens) -> Option<Write> {
    match node {
        NodeEnum::InsertStmt(i) => insert(i, t),
        NodeEnum::UpdateStmt(u) => update(u, t),
        _ => None,
    }
}

fn target(rel: &pg_query::protobuf::RangeVar) -> String {
    match &rel.alias {
        Some(a) => a.aliasname.clone(),
        None => rel.relname.clone(),
    }
}

fn insert(i: &pg_query::protobuf::InsertStmt, t: &Tokens) -> Option<Write> {
    if i.with_clause.is_some() || i.cols.is_empty() {
        return None;
    }
    let Some(NodeEnum::SelectStmt(select)) = i.select_stmt.as_ref()?.node.as_ref() else {
        return None;
    };
    if select.with_clause.is_some() || select.values_lists.is_empty() {
        return None;
    }
    let mut columns = Vec::new();
    for c in &i.cols {
        let Some(NodeEnum::ResTarget(r)) = c.node.as_ref() else {
            return None;
        };
        if !r.indirection.is_empty() {
            return None;
        }
        columns.push((r.name.clone(), r.location));
    }
    // `( first , … , last )` then VALUES.
    let first = t.at(columns.first()?.1)?;
    let last = t.at(columns.last()?.1)?;
    if first == 0 || !t.is(first - 1, Token::Ascii40) || !t.is(last + 1, Token::Ascii41) {
        return None;
    }
    let list_end = t.start(last + 1)?;
    if !t.is(last + 2, Token::Values) {
        return None;
    }
    // Each row: `(` items at depth 1, split by commas, `)`; rows split by commas.
    let mut at = last + 3;
    let mut rows: Vec<Vec<Range<usize>>> = Vec::new();
    let mut row_ends = Vec::new();
    for n in 0..select.values_lists.len() {
        if n > 0 {
            if !t.is(at, Token::Ascii44) {
                return None;
            }
            at += 1;
        }
        if !t.is(at, Token::Ascii40) {
            return None;
        }
        let (items, close) = t.items(at + 1)?;
        rows.push(items);
        row_ends.push(t.start(close)?);
        at = close + 1;
    }
    let mut sets: Vec<Set> = columns
        .iter()
        .map(|(name, _)| Set {
            column: name.clone(),
            values: Vec::new(),
            end: 0,
            refs: Vec::new(),
            params: false,
        })
        .collect();
    for (row, list) in rows.iter().zip(&select.values_lists) {
        let Some(NodeEnum::List(list)) = list.node.as_ref() else {
            return None;
        };
        if row.len() != list.items.len() || row.len() != sets.len() {
            return None;
        }
        for ((range, node), set) in row.iter().zip(&list.items).zip(sets.iter_mut()) {
            set.values.push(repeatable(
                node.node.as_ref(),
                range,
                t,
                &mut set.refs,
                &mut set.params,
            ));
        }
    }
    let relation = i.relation.as_ref()?;
    Some(Write {
        table: TableRef::of(relation),
        target: target(relation),
        shape: Shape::Insert { list_end, row_ends },
        sets,
        calls: t.calls_from(last + 2),
    })
}

fn update(u: &pg_query::protobuf::UpdateStmt, t: &Tokens) -> Option<Write> {
    if u.with_clause.is_some() {
        return None;
    }
    let mut sets = Vec::new();
    for target in &u.target_list {
        let Some(NodeEnum::ResTarget(r)) = target.node.as_ref() else {
            return None;
        };
        let val = r.val.as_ref().and_then(|v| v.node.as_ref());
        if matches!(val, Some(NodeEnum::MultiAssignRef(_))) {
            return None;
        }
        let name = t.at(r.location)?;
        let (value, end) = match r.indirection.is_empty() && t.is(name + 1, Token::Ascii61) {
            true => {
                let last = t.value_end(name + 2)?;
                (Some(t.start(name + 2)?..t.end(last)?), t.end(last)?)
            }
            false => (None, 0),
        };
        let (mut refs, mut params) = (Vec::new(), false);
        sets.push(Set {
            column: r.name.clone(),
            values: vec![value.and_then(|v| repeatable(val, &v, t, &mut refs, &mut params))],
            end,
            refs,
            params,
        });
    }
    let relation = u.relation.as_ref()?;
    Some(Write {
        table: TableRef::of(relation),
        target: target(relation),
        shape: Shape::Update,
        sets,
        calls: t.calls_from(0),
    })
}

/// `range` when `node` can be evaluated twice with the same result and no side
/// effect, and every location in it lies inside `range`. A parameter it reads
/// must stand nowhere else in the statement (`params` notes that it reads one):
/// the server then infers its type from this value alone, before the repeat.
fn repeatable(
    node: Option<&NodeEnum>,
    range: &Range<usize>,
    t: &Tokens,
    refs: &mut Vec<Vec<String>>,
    params: &mut bool,
) -> Option<Range<usize>> {
    let mut found = Found {
        spots: Vec::new(),
        refs,
        params: Vec::new(),
    };
    if !plain(node?, t, &mut found) || range.is_empty() {
        return None;
    }
    let Found {
        spots,
        params: read,
        ..
    } = found;
    for p in &read {
        // By number: `$01` is `$1`.
        let number = |i: usize| t.text(i)?.strip_prefix('$')?.parse::<i32>().ok();
        let uses = (0..t.tokens.len())
            .filter(|&i| t.is(i, Token::Param) && number(i) == Some(*p))
            .count();
        if uses != 1 {
            return None;
        }
    }
    *params |= !read.is_empty();
    let inside = spots
        .iter()
        .all(|&at| usize::try_from(at).is_ok_and(|at| range.contains(&at)));
    // Past the last node only closing parentheses (or the number a sign
    // stands before): anything else (an alias, a second word of a type name)
    // would not be part of the value.
    let last = t.at(*spots.iter().max()?)?;
    let mut after = t
        .tokens
        .iter()
        .enumerate()
        .skip(last + 1)
        .take_while(|(_, tok)| usize::try_from(tok.start).is_ok_and(|s| s < range.end));
    let sign = matches!(t.text(last), Some("-" | "+"));
    let clean = after.all(|(i, tok)| {
        tok.token == Token::Ascii41 as i32
            || sign
                && i == last + 1
                && (tok.token == Token::Iconst as i32 || tok.token == Token::Fconst as i32)
    });
    (inside && clean).then(|| range.clone())
}

/// Types a repeated value may be cast to (built-in, no side effect).
const TYPES: [&str; 12] = [
    "int2",
    "int4",
    "int8",
    "numeric",
    "float4",
    "float8",
    "text",
    "varchar",
    "bool",
    "bpchar",
    "date",
    "timestamptz",
];

/// What [`plain`] found in a value: the locations of its nodes, its column
/// references and the numbers of the parameters it reads.
struct Found<'a> {
    spots: Vec<i32>,
    refs: &'a mut Vec<Vec<String>>,
    params: Vec<i32>,
}

fn plain(node: &NodeEnum, t: &Tokens, f: &mut Found) -> bool {
    let child = |n: &Option<Box<pg_query::Node>>, f: &mut Found| {
        n.as_ref()
            .and_then(|n| n.node.as_ref())
            .is_some_and(|n| plain(n, t, f))
    };
    match node {
        NodeEnum::AConst(c) => {
            f.spots.push(c.location);
            true
        }
        NodeEnum::ParamRef(p) => {
            f.spots.push(p.location);
            f.params.push(p.number);
            true
        }
        NodeEnum::ColumnRef(c) => {
            f.spots.push(c.location);
            let fields: Option<Vec<String>> = c
                .fields
                .iter()
                .map(|f| match &f.node {
                    Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                    _ => None,
                })
                .collect();
            match fields {
                Some(fields) => {
                    f.refs.push(fields);
                    true
                }
                None => false,
            }
        }
        NodeEnum::AExpr(e) => {
            f.spots.push(e.location);
            let op = match e.name.as_slice() {
                [n] => match &n.node {
                    Some(NodeEnum::String(s)) => s.sval.as_str(),
                    _ => return false,
                },
                _ => return false,
            };
            // Division only by a constant other than zero: it cannot fail.
            let divisor = match e.rexpr.as_ref().and_then(|r| r.node.as_ref()) {
                Some(NodeEnum::AConst(c)) => match &c.val {
                    Some(pg_query::protobuf::a_const::Val::Ival(i)) => i.ival != 0,
                    _ => false,
                },
                _ => false,
            };
            e.kind == pg_query::protobuf::AExprKind::AexprOp as i32
                && (matches!(op, "+" | "-" | "*") || matches!(op, "/" | "%") && divisor)
                && (e.lexpr.is_none() || child(&e.lexpr, f))
                && child(&e.rexpr, f)
        }
        NodeEnum::TypeCast(c) => {
            f.spots.push(c.location);
            // `x::type` only (`CAST(x AS type)` has parentheses of its own).
            let cast = t.at(c.location).is_some_and(|i| t.is(i, Token::Typecast));
            let Some(ty) = &c.type_name else {
                return false;
            };
            let names: Vec<&str> = ty
                .names
                .iter()
                .filter_map(|n| match &n.node {
                    Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                    _ => None,
                })
                .collect();
            // Spelled as SQL keywords (`bigint`, `integer`, `numeric`): pg_catalog's
            // own. `int8` alone would be looked up on the search_path, pg_temp
            // first (a domain there could run a CHECK of a user's).
            let builtin = match names.as_slice() {
                ["pg_catalog", name] => TYPES.contains(name),
                _ => false,
            };
            f.spots.push(ty.location);
            cast && builtin
                && names.len() == ty.names.len()
                && ty.array_bounds.is_empty()
                && !ty.setof
                && !ty.pct_type
                && ty.typmods.iter().all(|m| match &m.node {
                    Some(NodeEnum::AConst(c)) => {
                        f.spots.push(c.location);
                        true
                    }
                    _ => false,
                })
                && child(&c.arg, f)
        }
        _ => false,
    }
}

struct Tokens<'a> {
    sql: &'a str,
    tokens: Vec<ScanToken>,
}

impl<'a> Tokens<'a> {
    /// A name right before a parenthesis from token `from` on: possibly a
    /// function call.
    fn calls_from(&self, from: usize) -> bool {
        self.tokens[from.min(self.tokens.len())..]
            .windows(2)
            .any(|w| w[0].token == Token::Ident as i32 && w[1].token == Token::Ascii40 as i32)
    }

    /// The tokens of `sql`, comments left out.
    fn of(sql: &'a str) -> Option<Tokens<'a>> {
        let tokens = pg_query::scan(sql)
            .ok()?
            .tokens
            .into_iter()
            .filter(|t| t.token != Token::SqlComment as i32 && t.token != Token::CComment as i32)
            .collect();
        Some(Tokens { sql, tokens })
    }

    /// The text with its constants masked (but a zero: a divisor must not be
    /// one): texts of the same shape parse to the same tree.
    fn shape(&self) -> String {
        let literal = [
            Token::Iconst,
            Token::Fconst,
            Token::Sconst,
            Token::Usconst,
            Token::Bconst,
            Token::Xconst,
        ];
        let mut key = String::with_capacity(self.sql.len());
        for (i, t) in self.tokens.iter().enumerate() {
            let text = self.text(i).unwrap_or("");
            match literal.iter().find(|k| t.token == **k as i32) {
                Some(kind) if text != "0" => key.push_str(&format!("\u{1}{}", *kind as i32)),
                _ => key.push_str(text),
            }
            key.push('\u{2}');
        }
        key
    }

    fn bounds(&self) -> Vec<(usize, usize)> {
        self.tokens
            .iter()
            .map(|t| (t.start.max(0) as usize, t.end.max(0) as usize))
            .collect()
    }

    /// The token that starts at byte `at`.
    fn at(&self, at: i32) -> Option<usize> {
        self.tokens.binary_search_by_key(&at, |t| t.start).ok()
    }

    fn text(&self, i: usize) -> Option<&str> {
        let t = self.tokens.get(i)?;
        self.sql
            .get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?)
    }

    fn is(&self, i: usize, token: Token) -> bool {
        self.tokens.get(i).is_some_and(|t| t.token == token as i32)
    }

    fn start(&self, i: usize) -> Option<usize> {
        usize::try_from(self.tokens.get(i)?.start).ok()
    }

    fn end(&self, i: usize) -> Option<usize> {
        let end = usize::try_from(self.tokens.get(i)?.end).ok()?;
        (end <= self.sql.len()).then_some(end)
    }

    /// From the token after a `(`: the items up to its `)` (split by the commas
    /// at that depth), and the index of that `)`.
    fn items(&self, from: usize) -> Option<(Vec<Range<usize>>, usize)> {
        let mut depth = 0usize;
        let mut items = Vec::new();
        let mut item_start = from;
        for i in from..self.tokens.len() {
            let token = self.tokens[i].token;
            if token == Token::Ascii40 as i32 || token == Token::Ascii91 as i32 {
                depth += 1;
            } else if token == Token::Ascii41 as i32 || token == Token::Ascii93 as i32 {
                if depth == 0 {
                    if token != Token::Ascii41 as i32 || i == item_start {
                        return None;
                    }
                    items.push(self.start(item_start)?..self.end(i - 1)?);
                    return Some((items, i));
                }
                depth -= 1;
            } else if token == Token::Ascii44 as i32 && depth == 0 {
                if i == item_start {
                    return None;
                }
                items.push(self.start(item_start)?..self.end(i - 1)?);
                item_start = i + 1;
            }
        }
        None
    }

    /// The last token of the value that starts at token `from` in a SET list:
    /// it ends before a comma, `;` or `)` at its depth, or a reserved keyword
    /// (FROM, WHERE, RETURNING) other than NULL, TRUE and FALSE.
    fn value_end(&self, from: usize) -> Option<usize> {
        let mut depth = 0usize;
        let mut last = None;
        for (i, t) in self.tokens.iter().enumerate().skip(from) {
            let token = t.token;
            if token == Token::Ascii40 as i32 || token == Token::Ascii91 as i32 {
                depth += 1;
            } else if token == Token::Ascii41 as i32 || token == Token::Ascii93 as i32 {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            } else if depth == 0 {
                let literal = [Token::NullP, Token::TrueP, Token::FalseP]
                    .iter()
                    .any(|k| token == *k as i32);
                if token == Token::Ascii44 as i32
                    || token == Token::Ascii59 as i32
                    || t.keyword_kind == KeywordKind::ReservedKeyword as i32 && !literal
                {
                    break;
                }
            }
            last = Some(i);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::of;

    fn mirror(sql: &str) -> Option<String> {
        let parsed = pg_query::parse(sql).unwrap();
        let node = parsed.protobuf.stmts[0].stmt.as_ref()?.node.as_ref()?;
        of(node, sql)?.mirror(sql, "amount", "amount__pgshift_new")
    }

    #[test]
    fn updates_set_the_new_column_too() {
        assert_eq!(
            mirror("UPDATE orders SET amount = amount + 1 WHERE id = 5").as_deref(),
            Some("UPDATE orders SET amount = amount + 1, amount__pgshift_new = (amount + 1) WHERE id = 5")
        );
        assert_eq!(
            mirror("update public.orders o set note = 'x', amount = (o.amount * 2)::bigint -- c\n").as_deref(),
            Some("update public.orders o set note = 'x', amount = (o.amount * 2)::bigint, amount__pgshift_new = ((o.amount * 2)::bigint) -- c\n")
        );
        assert_eq!(
            mirror("UPDATE orders SET amount = -5, note = NULL RETURNING *").as_deref(),
            Some("UPDATE orders SET amount = -5, amount__pgshift_new = (-5), note = NULL RETURNING *")
        );
        assert_eq!(
            mirror("UPDATE orders SET amount = NULL").as_deref(),
            Some("UPDATE orders SET amount = NULL, amount__pgshift_new = (NULL)")
        );
        assert_eq!(
            mirror("UPDATE orders SET amount=amount FROM x WHERE x.id = orders.id").as_deref(),
            Some("UPDATE orders SET amount=amount, amount__pgshift_new = (amount) FROM x WHERE x.id = orders.id")
        );
    }

    #[test]
    fn inserts_get_a_column_and_a_value_per_row() {
        assert_eq!(
            mirror("INSERT INTO orders (id, amount, note) VALUES (1, 5, 'a'), (2, -7, 'b') ON CONFLICT DO NOTHING").as_deref(),
            Some("INSERT INTO orders (id, amount, note, amount__pgshift_new) VALUES (1, 5, 'a', (5)), (2, -7, 'b', (-7)) ON CONFLICT DO NOTHING")
        );
        assert_eq!(
            mirror("insert into orders(amount) values ((1 + 2) * 3) returning id").as_deref(),
            Some("insert into orders(amount, amount__pgshift_new) values ((1 + 2) * 3, ((1 + 2) * 3)) returning id")
        );
    }

    #[test]
    fn prepared_values_repeat_cast_to_the_columns_type() {
        let prepared = |sql: &str| {
            let parsed = pg_query::parse(sql).unwrap();
            let node = parsed.protobuf.stmts[0].stmt.as_ref()?.node.as_ref()?;
            of(node, sql)?
                .mirrored(sql, "amount", "amount__pgshift_new", Some("integer"))
                .map(|m| m.text)
        };
        assert_eq!(
            prepared("INSERT INTO orders (id, amount) VALUES ($1, $2)").as_deref(),
            Some("INSERT INTO orders (id, amount, amount__pgshift_new) VALUES ($1, $2, ($2)::integer)")
        );
        assert_eq!(
            prepared("UPDATE orders SET amount = amount + $1 WHERE id = $2").as_deref(),
            Some("UPDATE orders SET amount = amount + $1, amount__pgshift_new = (amount + $1)::integer WHERE id = $2")
        );
        assert_eq!(
            prepared("INSERT INTO orders (id, amount) VALUES ($1, 5), ($2, $3)").as_deref(),
            Some("INSERT INTO orders (id, amount, amount__pgshift_new) VALUES ($1, 5, (5)::integer), ($2, $3, ($3)::integer)")
        );
        // Without parameters the repeat is as in a simple Query.
        assert_eq!(
            prepared("UPDATE orders SET amount = 5 WHERE id = $1").as_deref(),
            Some("UPDATE orders SET amount = 5, amount__pgshift_new = (5) WHERE id = $1")
        );
        // A parameter that stands elsewhere too may take its type from there.
        for sql in [
            "UPDATE orders SET amount = $1 WHERE amount <> $1",
            "INSERT INTO orders (id, amount) VALUES ($1, $1)",
            "UPDATE orders SET amount = $1 + $1",
            "UPDATE orders SET amount = length($1)",
            "UPDATE orders SET amount = $1, note = $01::bigint",
        ] {
            assert_eq!(prepared(sql), None, "{sql}");
        }
        // A simple Query's value never reads a parameter.
        assert_eq!(
            mirror("INSERT INTO orders (id, amount) VALUES (1, $1)"),
            None
        );
    }

    #[test]
    fn texts_of_one_shape_share_a_parse() {
        let find = |sql: &str| {
            super::find(sql).and_then(|w| w.mirror(sql, "amount", "amount__pgshift_new"))
        };
        assert_eq!(
            find("UPDATE t SET amount = amount + 5, note = 'a' WHERE id = 7").as_deref(),
            Some("UPDATE t SET amount = amount + 5, amount__pgshift_new = (amount + 5), note = 'a' WHERE id = 7")
        );
        assert_eq!(
            find("UPDATE t SET amount = amount + 123456, note = 'a longer note' WHERE id = 81").as_deref(),
            Some("UPDATE t SET amount = amount + 123456, amount__pgshift_new = (amount + 123456), note = 'a longer note' WHERE id = 81")
        );
        assert_eq!(
            find("INSERT INTO t (id, amount) VALUES (1, -5), (2, 6)").as_deref(),
            Some(
                "INSERT INTO t (id, amount, amount__pgshift_new) VALUES (1, -5, (-5)), (2, 6, (6))"
            )
        );
        assert_eq!(
            find("INSERT INTO t (id, amount) VALUES (1000, -77), (20, '6')").as_deref(),
            Some("INSERT INTO t (id, amount, amount__pgshift_new) VALUES (1000, -77, (-77)), (20, '6', ('6'))")
        );
        // A zero divisor is its own shape.
        assert!(find("UPDATE t SET amount = amount / 3").is_some());
        assert_eq!(find("UPDATE t SET amount = amount / 0"), None);
    }

    #[test]
    fn values_that_may_differ_or_act_are_left_to_the_trigger() {
        for sql in [
            "UPDATE orders SET amount = random()::int",
            "UPDATE orders SET amount = nextval('s')",
            "UPDATE orders SET amount = (SELECT 1)",
            "UPDATE orders SET amount = DEFAULT",
            "UPDATE orders SET amount = $1",
            "UPDATE orders SET amount = CAST(amount AS int)",
            "UPDATE orders SET amount = amount::myschema.int8",
            "UPDATE orders SET (amount, note) = (1, 'x')",
            "UPDATE orders SET amount = 1, amount__pgshift_new = 2",
            "UPDATE orders SET note = 'x'",
            "WITH x AS (SELECT 1) UPDATE orders SET amount = 1",
            "INSERT INTO orders (id, amount) VALUES (1, 5), (2, DEFAULT)",
            "INSERT INTO orders VALUES (1, 5)",
            "INSERT INTO orders (id, amount) VALUES (1, length('x'))",
            "DELETE FROM orders",
            "UPDATE orders SET amount = amount::int8",
            "UPDATE orders SET amount = shadow + 1",
            "UPDATE orders o SET amount = o.noisy",
            "UPDATE orders o SET amount = orders.amount",
            "UPDATE orders SET amount = x.amount FROM x",
            "UPDATE orders SET amount = amount / 0",
            "UPDATE orders SET amount = amount / id",
            "UPDATE orders SET amount = amount::double precision",
            "INSERT INTO orders (id, amount) SELECT g, g a FROM s",
            "INSERT INTO orders (id, amount) SELECT g, g FROM s ORDER BY 2",
            "INSERT INTO orders (id, amount) SELECT DISTINCT g, g FROM s",
            "INSERT INTO orders (id, amount) SELECT * FROM s",
            "INSERT INTO orders (id, amount) SELECT 1, 2 UNION SELECT 3, 4",
        ] {
            assert_eq!(mirror(sql), None, "{sql}");
        }
    }
}
