//! CHECK constraints on the changed column. Directly, `ALTER COLUMN … TYPE`
//! keeps them, read again over the new type. A rollout gives each a twin on the
//! new column before the cutover: the same expression with the column's name
//! changed (Postgres itself writes it, from a temporary copy of the table whose
//! column was renamed and changed), added NOT VALID (a short lock) and validated in the
//! background. The cutover's lock window drops the old constraint and gives
//! the twin its name; a rollback after the cutover adds it again on the old
//! column (NOT VALID, then validated).

use super::driver::{ours, Driver, Linked, StepError};
use super::model::Rollout;
use crate::context::Settings;
use crate::engine::Background;
use crate::sql::ident::quote;

/// One of the old column's CHECK constraints and its twin's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTwin {
    pub oid: u32,
    pub name: String,
    /// As `pg_get_constraintdef` prints it, without `NOT VALID`.
    pub definition: String,
    /// The twin's: the same over the new column.
    pub twin: String,
    /// Only a validated constraint gets a validated twin (a NOT VALID one stays so).
    pub validated: bool,
    /// A foreign key of the column's own (see `own_keys`), not a CHECK.
    pub foreign: bool,
}

/// The CHECK constraints and foreign keys of table $1 on column $2 (attnum),
/// oldest first.
pub const CHECKS: &str = "
SELECT k.oid::pg_catalog.text, k.conname::pg_catalog.text,
       pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' NOT VALID$', ''),
       k.convalidated, k.contype = 'f'
  FROM pg_catalog.pg_constraint k
 WHERE k.conrelid = $1::text::oid AND k.contype IN ('c', 'f') AND $2::int4 = ANY (k.conkey)
   AND k.conparentid = 0
 ORDER BY k.oid";

/// A CHECK constraint or foreign key as [`CHECKS`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub oid: u32,
    pub name: String,
    pub definition: String,
    pub validated: bool,
    pub foreign: bool,
}

/// Why the CHECK constraints cannot be carried over.
#[derive(Debug)]
pub enum CheckError {
    /// The server's error (one does not work with the new type, …).
    Server(tokio_postgres::Error),
    /// They use objects that are not built in (described).
    Foreign(String),
    /// Something else stopped the look.
    Step(StepError),
}

impl From<tokio_postgres::Error> for CheckError {
    fn from(e: tokio_postgres::Error) -> Self {
        CheckError::Server(e)
    }
}

impl From<StepError> for CheckError {
    fn from(e: StepError) -> Self {
        CheckError::Step(e)
    }
}

impl CheckError {
    /// As a step's error: `what` names what uses the objects.
    pub fn into_step(self, what: &str) -> StepError {
        match self {
            CheckError::Server(e) => StepError::from(e),
            CheckError::Foreign(objects) => ours(format!(
                "{what} uses {objects}, which pgshift would run as its service role"
            )),
            CheckError::Step(e) => e,
        }
    }
}

/// The validation failed on the data (a row breaks the constraint), not on a
/// lock, a timeout or a refusal.
pub(super) fn broken_by_data(e: &StepError) -> bool {
    e.reason.ends_with("(23514)") || e.reason.ends_with("(23503)")
}

impl CheckTwin {
    /// The old constraint as [`CHECKS`] reads it.
    pub fn found(&self) -> Found {
        Found {
            oid: self.oid,
            name: self.name.clone(),
            definition: self.definition.clone(),
            validated: self.validated,
            foreign: self.foreign,
        }
    }
}

impl Driver {
    /// The CHECK constraints and foreign keys on `column` now.
    pub(super) async fn checks_on(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<Vec<Found>, StepError> {
        let attnum = self.attnum(r, column).await?;
        let rows = self
            .client
            .query(CHECKS, &[&r.table_oid.to_string(), &attnum])
            .await?;
        Ok(rows
            .iter()
            .map(|x| Found {
                oid: x.get::<_, String>(0).parse().unwrap_or(0),
                name: x.get(1),
                definition: x.get(2),
                validated: x.get(3),
                foreign: x.get(4),
            })
            .collect())
    }

    /// The table's CHECK constraints as the direct ALTER leaves them, by name:
    /// read again over the new type, on a temporary, empty copy of the table
    /// whose column was renamed to the new column's name and then changed to
    /// the new type. One that does not work with the new type fails here with
    /// the server's error, as the direct ALTER would. Nothing of the user's
    /// runs: the copy is empty, and they use only built-in objects (checked
    /// before the change, which reads their text again).
    async fn renamed_checks(&self, r: &Rollout) -> Result<Vec<(String, String)>, CheckError> {
        let name = format!("pgshift_checks_{}", r.id);
        let copy = format!("pg_temp.{name}");
        let (c, new) = (quote(&r.column), quote(&r.new_column));
        let result = async {
            self.client
                .batch_execute(&format!(
                    "BEGIN; CREATE TEMPORARY TABLE {name} (LIKE {} INCLUDING CONSTRAINTS); \
                     ALTER TABLE {copy} DROP COLUMN IF EXISTS {new}; \
                     ALTER TABLE {copy} RENAME COLUMN {c} TO {new}",
                    r.qualified()
                ))
                .await?;
            // Their text is parsed again on this connection: a literal of a type
            // that is not built in would run its input function as pgshift's
            // service role. Postgres records no dependency on built-in objects.
            let foreign = self
                .client
                .query(
                    &format!(
                        "SELECT pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) \
                         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_constraint k \
                         ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = k.oid \
                         WHERE k.conrelid = '{copy}'::pg_catalog.regclass \
                         AND d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass, \
                         'pg_catalog.pg_type'::pg_catalog.regclass) AND d.refobjid >= 16384"
                    ),
                    &[],
                )
                .await?;
            if !foreign.is_empty() {
                let names: Vec<String> = foreign.iter().map(|x| x.get(0)).collect();
                return Err(CheckError::Foreign(names.join(", ")));
            }
            self.client
                .batch_execute(&format!(
                    "ALTER TABLE {copy} ALTER COLUMN {new} TYPE {} USING NULL",
                    r.new_type
                ))
                .await?;
            let rows = self
                .client
                .query(
                    &format!(
                        "SELECT k.conname::pg_catalog.text, \
                         pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' NOT VALID$', '') \
                         FROM pg_catalog.pg_constraint k \
                         WHERE k.conrelid = '{copy}'::pg_catalog.regclass AND k.contype = 'c' ORDER BY k.oid"
                    ),
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|x| (x.get(0), x.get(1))).collect())
        }
        .await;
        let _ = self.client.batch_execute("ROLLBACK").await;
        result
    }

    /// At the start: fails with the server's error if a CHECK constraint on the
    /// column does not work with the new type (`42883` for an operator the
    /// new type lacks, …).
    pub async fn checks_fit(&self, r: &Rollout) -> Result<(), CheckError> {
        let attnum: i32 = match self.attnum(r, &r.column).await {
            Ok(n) => n,
            Err(_) => return Ok(()),
        };
        let any = self
            .client
            .query(CHECKS, &[&r.table_oid.to_string(), &attnum])
            .await?;
        if any.is_empty() {
            return Ok(());
        }
        self.renamed_checks(r).await.map(|_| ())
    }

    /// The twins the old column's CHECK constraints and foreign keys need.
    pub(super) async fn check_twins(&self, r: &Rollout) -> Result<Vec<CheckTwin>, StepError> {
        let (keys, old): (Vec<Found>, Vec<Found>) = self
            .checks_on(r, &r.column)
            .await?
            .into_iter()
            .partition(|f| f.foreign);
        let mut twins = match keys.is_empty() {
            true => Vec::new(),
            false => self.own_key_twins(r).await?,
        };
        if old.is_empty() {
            return Ok(twins);
        }
        let renamed = self
            .renamed_checks(r)
            .await
            .map_err(|e| e.into_step(&format!("a CHECK constraint on {}", quote(&r.column))))?;
        let checks: Result<Vec<CheckTwin>, StepError> = old
            .into_iter()
            .map(|Found { oid, name, definition, validated, .. }| {
                let twin = renamed
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, def)| def.clone())
                    .ok_or_else(|| {
                        ours(format!(
                            "the CHECK constraint {} cannot be carried to the new column (it also uses {})",
                            quote(&name),
                            quote(&r.new_column)
                        ))
                    })?;
                Ok(CheckTwin {
                    oid,
                    name,
                    definition,
                    twin,
                    validated,
                    foreign: false,
                })
            })
            .collect();
        twins.extend(checks?);
        Ok(twins)
    }

    /// Adds each twin (NOT VALID: a short lock under the stall budget, retried)
    /// and validates it (SHARE UPDATE EXCLUSIVE: reads and writes go on), and
    /// records them in the rollout's row. Twins of an earlier attempt whose
    /// constraint is gone (dropped, or replaced under a new oid) are dropped.
    /// Values that break a twin stop the cutover, and the twin is dropped again:
    /// the application's writes must not fail for a cutover that does not happen.
    pub(super) async fn build_checks(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
    ) -> Result<Vec<CheckTwin>, StepError> {
        let twins = self.check_twins(r).await?;
        // The tables the column's own keys reference (a twin key's add locks
        // them), and those the twins' keys reference (a twin key's drop does).
        let keys_to = self.referenced_tables(r, &[&r.column]).await?;
        let twin_keys_to = self.referenced_tables(r, &[&r.new_column]).await?;
        let n = r.names();
        let t = format!("ALTER TABLE {}", r.target());
        let wanted: Vec<String> = twins
            .iter()
            .map(|ck| n.new_check(ck.oid, ck.foreign))
            .collect();
        for stale in self.own_twins(r).await? {
            if !wanted.contains(&stale) {
                let drop = format!("{t} DROP CONSTRAINT IF EXISTS {}", quote(&stale));
                let linked = Linked::DropsKey(twin_keys_to.clone());
                self.with_retries(settings, r, &drop, "SELECT 1", bg, None, linked)
                    .await?;
            }
        }
        if r.partitioned {
            // Twins of keys dropped or replaced since.
            let mut stale: Vec<String> = self
                .leaf_twin_keys(r)
                .await?
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| !wanted.contains(name))
                .collect();
            stale.dedup();
            self.drop_leaf_keys(settings, r, bg, &stale).await?;
        }
        for (ck, name) in twins.iter().zip(&wanted) {
            if r.partitioned && ck.foreign {
                // Its twins are the leaf partitions' (see `part_keys`).
                self.build_leaf_keys(settings, r, bg, ck, name, &keys_to)
                    .await
                    .map_err(|e| match broken_by_data(&e) {
                        true => StepError {
                            reason: format!(
                                "the new values do not pass the foreign key {} ({}): {}; directly, the ALTER would fail the same way",
                                quote(&ck.name),
                                ck.definition,
                                e.reason
                            ),
                            ..e
                        },
                        false => e,
                    })?;
                continue;
            }
            let found = self.constraint_def(r, name).await?;
            match found {
                None => {
                    // Added as the table's owner, as the direct ALTER adds them
                    // again (REFERENCES on a foreign key's other table is theirs).
                    let role = format!("SET LOCAL ROLE {}; ", self.owner_of(r).await?);
                    let add = format!(
                        "{role}{t} ADD CONSTRAINT {} {} NOT VALID",
                        quote(name),
                        ck.twin
                    );
                    let linked = match ck.foreign {
                        true => Linked::AddsKey(keys_to.clone()),
                        false => Linked::Untouched,
                    };
                    self.with_retries(settings, r, &add, "SELECT 1", bg, None, linked)
                        .await?;
                }
                Some((def, _)) if def == ck.twin => {}
                Some((def, _)) => {
                    return Err(ours(format!(
                        "{} has a constraint named {} that pgshift did not make ({def})",
                        r.qualified(),
                        quote(name)
                    )))
                }
            }
            if !ck.validated || self.constraint_def(r, name).await?.is_some_and(|d| d.1) {
                continue;
            }
            let validated = match ck.foreign {
                true => {
                    self.validate_foreign_keys(settings, &[(r.table_oid, name.clone())])
                        .await
                }
                false => self.validate_check(r, name, &ck.twin, &r.new_column).await,
            };
            match validated {
                Ok(()) => {}
                Err(e) if broken_by_data(&e) => {
                    let drop = format!("{t} DROP CONSTRAINT IF EXISTS {}", quote(name));
                    let _ = self
                        .with_retries(
                            settings,
                            r,
                            &drop,
                            "SELECT 1",
                            bg,
                            None,
                            Linked::DropsKey(twin_keys_to.clone()),
                        )
                        .await;
                    return Err(StepError {
                        reason: format!(
                            "the new values do not pass the {} {} ({}): {}; directly, the ALTER would fail the same way",
                            if ck.foreign { "foreign key" } else { "CHECK constraint" },
                            quote(&ck.name),
                            ck.definition,
                            e.reason
                        ),
                        ..e
                    });
                }
                Err(e) => return Err(e),
            }
        }
        // Recorded by the twins' own oids: a rollback after the cutover touches
        // only the constraint pgshift made under that name.
        let mut entries = Vec::new();
        // A partitioned table's foreign key, by the old key's oid (it is parked
        // at the cutover, and a rollback gives it its name back).
        for (ck, name) in twins.iter().zip(&wanted) {
            let oid = match r.partitioned && ck.foreign {
                true => Some(ck.oid),
                false => self.constraint_oid(r, name).await?,
            };
            let oid = oid.ok_or_else(|| ours(format!("the constraint {} is gone", quote(name))))?;
            let kind = if ck.foreign { 'k' } else { 'c' };
            entries.push(format!("{kind}:{oid}:{}", ck.name));
        }
        self.client
            .execute(
                "UPDATE pgshift.rollouts SET indexes = ARRAY(SELECT e FROM pg_catalog.unnest(COALESCE(indexes, '{}')) AS e \
                 WHERE e NOT LIKE 'c:%' AND e NOT LIKE 'k:%') || $2::text[] WHERE id = $1",
                &[&r.id, &entries],
            )
            .await?;
        Ok(twins)
    }

    /// The names of the twins pgshift made on the table for this rollout.
    pub(super) async fn own_twins(&self, r: &Rollout) -> Result<Vec<String>, StepError> {
        let rows = self
            .client
            .query(
                "SELECT conname::pg_catalog.text FROM pg_catalog.pg_constraint \
                 WHERE conrelid = $1::text::oid AND conname::pg_catalog.text ~ $2::text ORDER BY 1",
                &[
                    &r.table_oid.to_string(),
                    &format!("^pgshift_{}_(check|fk)_[0-9]+$", r.id),
                ],
            )
            .await?;
        Ok(rows.iter().map(|x| x.get(0)).collect())
    }

    /// The name of the table's constraint `oid`, if it still has it.
    pub(super) async fn constraint_name(
        &self,
        r: &Rollout,
        oid: u32,
    ) -> Result<Option<String>, StepError> {
        Ok(self
            .client
            .query_opt(
                "SELECT conname::pg_catalog.text FROM pg_catalog.pg_constraint WHERE conrelid = $1::text::oid AND oid = $2::text::oid",
                &[&r.table_oid.to_string(), &oid.to_string()],
            )
            .await?
            .map(|row| row.get(0)))
    }

    /// The oid of constraint `name` of the table.
    pub(super) async fn constraint_oid(
        &self,
        r: &Rollout,
        name: &str,
    ) -> Result<Option<u32>, StepError> {
        Ok(self
            .client
            .query_opt(
                "SELECT oid::pg_catalog.text FROM pg_catalog.pg_constraint WHERE conrelid = $1::text::oid AND conname = $2::text::name",
                &[&r.table_oid.to_string(), &name],
            )
            .await?
            .and_then(|row| row.get::<_, String>(0).parse().ok()))
    }

    /// Constraint `name` of the table: its definition (without NOT VALID) and
    /// whether it is validated.
    pub(super) async fn constraint_def(
        &self,
        r: &Rollout,
        name: &str,
    ) -> Result<Option<(String, bool)>, StepError> {
        Ok(self
            .client
            .query_opt(
                "SELECT pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(oid), ' NOT VALID$', ''), convalidated \
                 FROM pg_catalog.pg_constraint WHERE conrelid = $1::text::oid AND conname = $2::text::name",
                &[&r.table_oid.to_string(), &name],
            )
            .await?
            .map(|row| (row.get(0), row.get(1))))
    }

    /// Validates twin `name` under a lock that keeps the table, its name and
    /// its constraints as checked: the scan evaluates the twin's expression as
    /// pgshift's service role, so it must be built in (see `check_locked`;
    /// `column`: the rollout's column that exists now, besides its key and
    /// what its new value reads).
    pub(super) async fn validate_check(
        &self,
        r: &Rollout,
        name: &str,
        want: &str,
        column: &str,
    ) -> Result<(), StepError> {
        let n = r.names();
        let result = async {
            self.client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '10s'; \
                     LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
                    r.target()
                ))
                .await?;
            self.check_locked(r, &n.trigger, &format!("{}()", n.function), column)
                .await?;
            if self.constraint_def(r, name).await?.map(|d| d.0).as_deref() != Some(want) {
                return Err(ours(format!(
                    "{} or its constraint {} changed meanwhile",
                    r.qualified(),
                    quote(name)
                )));
            }
            self.client
                .batch_execute(&format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {}; COMMIT",
                    r.target(),
                    quote(name)
                ))
                .await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        result
    }
}
