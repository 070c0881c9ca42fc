//! A service connection the engine can run a client's kind of work on: the admin
//! console's `ROLLOUT START` has no client session, so the rollout's probe and
//! expand run on a connection of their own, opened for it as the service role
//! (search_path pinned, see `service::connect`). Parameters are sent as quoted
//! literals of unknown type, which the server reads exactly as the text-format
//! parameters of unspecified type the client's connection sends: the connection
//! pins standard_conforming_strings, so doubling quotes is the whole quoting.

use super::conn::{Conn, Reply, ServerError};
use crate::sql::ident::literal;
use crate::wire::backend::PgError;
use std::io;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The longest one query of the side connection may take, on top of the
/// statement_timeout the connection pins.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

pub struct SideConn {
    client: Client,
}

impl SideConn {
    pub fn new(client: Client) -> SideConn {
        SideConn { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// `sql` with `$1`, `$2`… replaced by `params` as literals, in one pass (a
/// value that holds `$2` stays as it is). pgshift's own SQL only: a `$n` inside
/// one of its string constants would be replaced too.
fn with_literals(sql: &str, params: &[&str]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let value = after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| params.get(i));
        match value {
            Some(v) => out.push_str(&literal(v)),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// The server's error with every field a client would get, or the I/O failure.
fn error(e: tokio_postgres::Error) -> io::Result<ServerError> {
    let Some(db) = e.as_db_error() else {
        return Err(io::Error::other(e.to_string()));
    };
    let mut fields = vec![
        (b'S', db.severity().to_string()),
        (b'C', db.code().code().to_string()),
        (b'M', db.message().to_string()),
    ];
    let optional = [
        (b'D', db.detail()),
        (b'H', db.hint()),
        (b'W', db.where_()),
        (b's', db.schema()),
        (b't', db.table()),
        (b'c', db.column()),
        (b'd', db.datatype()),
        (b'n', db.constraint()),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v.to_string()))),
    );
    Ok(ServerError::from_fields(fields))
}

impl Conn for SideConn {
    async fn query(&mut self, sql: &str) -> io::Result<Reply> {
        let answer = tokio::time::timeout(ANSWER_WAIT, self.client.simple_query(sql))
            .await
            .map_err(|_| io::Error::other("the service connection did not answer"))?;
        let mut reply = Reply::default();
        match answer {
            Ok(messages) => {
                for m in messages {
                    match m {
                        SimpleQueryMessage::Row(row) => reply.rows.push(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        ),
                        SimpleQueryMessage::CommandComplete(n) => reply.tags.push(n.to_string()),
                        _ => {}
                    }
                }
            }
            Err(e) => reply.error = Some(error(e)?),
        }
        Ok(reply)
    }

    async fn query_params(&mut self, sql: &str, params: &[&str]) -> io::Result<Reply> {
        self.query(&with_literals(sql, params)).await
    }

    async fn query_step(&mut self, sql: &str) -> io::Result<Reply> {
        self.query(sql).await
    }

    fn cancelled(&self) -> bool {
        false
    }

    async fn pause(&mut self, pause: Duration) -> bool {
        tokio::time::sleep(pause).await;
        true
    }

    async fn tell(&mut self, _notice: &PgError) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::with_literals;

    #[test]
    fn parameters_become_literals_by_number() {
        let sql = "SELECT $1, $10, $2::int4";
        let params: Vec<String> = (1..=10).map(|i| format!("v{i}'")).collect();
        let refs: Vec<&str> = params.iter().map(String::as_str).collect();
        assert_eq!(
            with_literals(sql, &refs),
            "SELECT 'v1''', 'v10''', 'v2'''::int4"
        );
        assert_eq!(
            with_literals("SELECT $1, $2, $3, $$x$$", &["$2", "b"]),
            "SELECT '$2', 'b', $3, $$x$$"
        );
    }
}
