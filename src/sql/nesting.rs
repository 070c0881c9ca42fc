//! A cheap upper bound on how deep a statement's parse tree nests, from its tokens
//! alone, taken before the parse. pg_query turns the tree into protobuf recursively
//! (one C frame of ~0.4 KB optimized, ~2.2 KB unoptimized per level) and in time that
//! grows with the square of the depth (1+1+…+1 with 50,000 terms: 3 s), so text that
//! could nest too deeply is refused before it reaches the parser.
//!
//! Why it is a bound: every level of the tree takes at least one token. Tokens
//! separated by a comma or semicolon at the same bracket level belong to elements of
//! one list, which sit side by side in the tree, not inside each other; the only
//! construct that nests across such commas is a set operation (`SELECT a, b UNION
//! SELECT …` is a left-deep chain), so UNION, INTERSECT and EXCEPT count for the whole
//! bracket level. The bound at a level is then its longest comma-free stretch of
//! tokens plus the deepest bracket group inside that stretch, plus its set operations.

use pg_query::protobuf::Token;

/// The nesting bound of `sql`: at least the depth of its parse tree, in tokens.
/// Text shorter than `limit` bytes is not scanned (it cannot hold more tokens);
/// None when the scanner fails (the parser will then report the error).
pub fn bound(sql: &str, limit: usize) -> Option<usize> {
    if sql.len() < limit {
        return Some(sql.len());
    }
    let tokens = pg_query::scan(sql).ok()?.tokens;
    let mut levels = vec![Level::default()];
    for t in &tokens {
        let Ok(kind) = Token::try_from(t.token) else {
            levels.last_mut()?.tokens += 1;
            continue;
        };
        match kind {
            Token::SqlComment | Token::CComment => {}
            Token::Ascii40 | Token::Ascii91 => {
                levels.last_mut()?.tokens += 1;
                levels.push(Level::default());
            }
            Token::Ascii41 | Token::Ascii93 if levels.len() > 1 => {
                let inner = levels.pop()?.depth();
                let level = levels.last_mut()?;
                level.tokens += 1;
                level.inner = level.inner.max(inner);
            }
            Token::Ascii44 | Token::Ascii59 => levels.last_mut()?.end_element(),
            Token::Union | Token::Intersect | Token::Except => {
                let level = levels.last_mut()?;
                level.tokens += 1;
                level.set_ops += 1;
            }
            _ => levels.last_mut()?.tokens += 1,
        }
    }
    // Unclosed brackets (a syntax error the parser will report) close here.
    while levels.len() > 1 {
        let inner = levels.pop()?.depth();
        let level = levels.last_mut()?;
        level.inner = level.inner.max(inner);
    }
    Some(levels.pop()?.depth())
}

/// One bracket level: the current list element's tokens and deepest inner group,
/// the deepest element seen so far, and the set operations in any element.
#[derive(Default)]
struct Level {
    tokens: usize,
    inner: usize,
    deepest: usize,
    set_ops: usize,
}

impl Level {
    fn end_element(&mut self) {
        self.deepest = self.deepest.max(self.tokens + self.inner);
        self.tokens = 0;
        self.inner = 0;
    }

    fn depth(mut self) -> usize {
        self.end_element();
        self.deepest + self.set_ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> usize {
        bound(sql, 0).unwrap()
    }

    #[test]
    fn chains_count_every_token() {
        assert_eq!(of("SELECT 1+1+1"), 6);
        let chain = format!("CREATE VIEW v AS SELECT 1{}", "+1".repeat(5_000));
        assert!(of(&chain) > 10_000);
    }

    #[test]
    fn list_elements_do_not_add_up() {
        let wide = format!("CREATE VIEW v AS SELECT 1{}", ", 1+1".repeat(10_000));
        assert_eq!(of(&wide), 6);
        let table = format!(
            "CREATE TABLE t (id int{})",
            (0..2_000)
                .map(|i| format!(", c{i} text NOT NULL DEFAULT 'x'"))
                .collect::<String>()
        );
        assert!(of(&table) < 20, "{}", of(&table));
        let script = "CREATE INDEX a ON t (c);\n".repeat(10_000);
        assert_eq!(of(&script), 8);
    }

    #[test]
    fn brackets_add_their_depth_to_the_enclosing_stretch() {
        // Top level: 6 tokens (SELECT f ( ) + 1) plus the group inside: g ( ( 1 ) ).
        assert_eq!(of("SELECT f(g((1))) + 1"), 6 + 3 + 2 + 1);
        let nested = format!("SELECT {}1{}", "f(".repeat(3_000), ")".repeat(3_000));
        assert!(of(&nested) > 6_000);
    }

    #[test]
    fn set_operations_count_across_commas() {
        let chain = format!("SELECT 1, 2{}", " UNION SELECT 1, 2".repeat(3_000));
        assert!(of(&chain) > 3_000, "{}", of(&chain));
    }

    #[test]
    fn comments_and_strings_are_not_nesting() {
        let sql = format!(
            "COMMENT ON TABLE t IS '{}' /* ( ( ( */ -- ((",
            "(".repeat(100_000)
        );
        assert_eq!(of(&sql), 6);
    }

    #[test]
    fn short_text_is_not_scanned() {
        assert_eq!(bound("SELECT 1+1+1", 1_000), Some(12));
    }
}
