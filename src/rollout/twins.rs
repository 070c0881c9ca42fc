//! Moving what stands on the changed column to the new one: its indexes are built
//! again beside it (CREATE INDEX CONCURRENTLY), a primary key or unique
//! constraint moves to its twin, the foreign keys that reference them are added
//! again and validated, and a `serial` sequence follows the column. The cutover
//! and the rollback (driver.rs) run the renames in their lock window.

use super::driver::{ours, Driver, StepError};
use super::leaf_indexes::LeafIndex;
use super::model::{Constraint, Rollout, Twin};
use super::sql;
use crate::context::Settings;
use crate::sql::ident::{literal, quote};

impl Driver {
    /// The old column's indexes that pgshift builds again (see `REBUILDABLE`).
    pub(super) async fn old_indexes(&self, r: &Rollout) -> Result<Vec<sql::OldIndex>, StepError> {
        self.indexes_on(r, &r.column).await
    }

    /// The indexes on `column` that pgshift can build again (see `REBUILDABLE`).
    pub(super) async fn indexes_on(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<Vec<sql::OldIndex>, StepError> {
        let attnum = self.attnum(r, column).await?;
        self.rebuildable_at(r.table_oid, attnum).await
    }

    /// Builds a twin of each of the old column's indexes on the new column, and
    /// records the old indexes' names, which the twins take at the cutover.
    pub(super) async fn build_indexes(
        &self,
        settings: &Settings,
        r: &Rollout,
    ) -> Result<
        (
            Vec<Twin>,
            Vec<ForeignKey>,
            Vec<sql::OldIndex>,
            Vec<LeafIndex>,
        ),
        StepError,
    > {
        let mut old = self.old_indexes(r).await?;
        let leaves = self.leaf_indexes(r, &r.column).await?;
        self.shape(r, &mut old).await.map_err(|e| {
            e.into_step(&format!(
                "an index on {} with expressions or a predicate",
                quote(&r.column)
            ))
        })?;
        let twins: Vec<Twin> = old
            .iter()
            .map(|i| Twin {
                oid: i.oid,
                name: i
                    .constraint
                    .as_ref()
                    .map_or_else(|| i.name.clone(), |c| c.0.clone()),
                constraint: i.constraint.as_ref().map(|c| c.1),
            })
            .collect();
        // Foreign keys reference unique indexes (a key's, a unique constraint's,
        // or a plain unique index).
        let mut fks = Vec::new();
        for unique in old.iter().filter(|i| i.unique) {
            fks.extend(self.foreign_keys(r, unique.oid).await?);
        }
        let entries: Vec<String> = twins
            .iter()
            .map(Twin::entry)
            .chain(fks.iter().map(|f| format!("f:{}:{}", f.table_oid, f.name)))
            .chain(leaves.iter().map(LeafIndex::entry))
            .collect();
        self.client
            .execute(
                "UPDATE pgshift.rollouts SET indexes = $2 WHERE id = $1",
                &[&r.id, &entries],
            )
            .await?;
        let names = r.names();
        let mut wanted = Vec::new();
        for i in &old {
            wanted.push(names.new_index(i.oid));
            if r.partitioned {
                for part in self.index_parts(i.oid).await? {
                    wanted.push(in_part(&|oid| names.new_index(oid), i.oid, part.table.oid));
                }
            }
        }
        wanted.extend(leaves.iter().map(|l| names.new_index(l.index.oid)));
        self.drop_stale_twins(settings, r, &wanted).await?;
        self.build_twins(settings, r, &old, &r.column, &r.new_column, |oid| {
            names.new_index(oid)
        })
        .await?;
        self.build_leaf_twins(settings, r, &leaves).await?;
        Ok((twins, fks, old, leaves))
    }

    /// Drops the twins an earlier attempt built on the new column that no
    /// old index wants now: its index was dropped since, or got a new oid
    /// (`REINDEX … CONCURRENTLY`). Left, they would stay on the column.
    async fn drop_stale_twins(
        &self,
        settings: &Settings,
        r: &Rollout,
        wanted: &[String],
    ) -> Result<(), StepError> {
        let prefix = r.names().new_index_prefix();
        let stale = self
            .client
            .query(
                STALE_TWINS,
                &[&r.table_oid.to_string(), &prefix, &r.new_column, &wanted],
            )
            .await?;
        for row in stale {
            let qualified: String = row.get(0);
            tracing::info!(target: "pgshift::rollout", rollout = r.id, index = %qualified, "dropping a twin no index wants any more");
            self.drop_concurrently(settings, &qualified).await?;
        }
        Ok(())
    }

    /// The foreign keys that reference index `index` of the rollout's table.
    pub(super) async fn foreign_keys(
        &self,
        r: &Rollout,
        index: u32,
    ) -> Result<Vec<ForeignKey>, StepError> {
        let rows = self
            .client
            .query(
                super::start::FOREIGN_KEYS,
                &[&r.table_oid.to_string(), &index.to_string()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|x| ForeignKey {
                table_oid: x.get::<_, String>(0).parse().unwrap_or(0),
                table: x.get(1),
                name: x.get(2),
                definition: x.get(3),
            })
            .collect())
    }

    /// VALIDATE CONSTRAINT for each foreign key (table oid, name) that a key's
    /// move re-added NOT VALID (enforced for new rows from the move on): it scans
    /// the referencing table under SHARE UPDATE EXCLUSIVE (its reads and writes
    /// go on), in the background.
    pub(super) async fn validate_foreign_keys(
        &self,
        settings: &Settings,
        fks: &[(u32, String)],
    ) -> Result<(), StepError> {
        for (table, name) in fks {
            let row = self
                .client
                .query_opt(
                    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), k.convalidated, \
                            pg_catalog.quote_ident(o.rolname) \
                     FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     JOIN pg_catalog.pg_roles o ON o.oid = c.relowner \
                     WHERE k.conrelid = $1::text::oid AND k.conname = $2::text::name AND k.contype = 'f'",
                    &[&table.to_string(), name],
                )
                .await?;
            let Some((qualified, false, owner)) = row.map(|x| {
                (
                    x.get::<_, String>(0),
                    x.get::<_, bool>(1),
                    x.get::<_, String>(2),
                )
            }) else {
                continue;
            };
            // As the referencing table's owner: the check compares (and may cast)
            // that table's values, and no code of theirs runs as the service role.
            // First, under locks that keep both tables' columns as they are, the
            // key must still compare built-in types with built-in operators: a
            // cast of the owner's would run in this session, as the owner, who
            // could take the session's own role back.
            let done = async {
                self.client
                    .batch_execute(&format!(
                        "BEGIN; SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = '10s'; \
                         LOCK TABLE ONLY {qualified} IN SHARE UPDATE EXCLUSIVE MODE",
                        literal(&format!("{}ms", settings.config.ddl.long_step_timeout_ms)),
                    ))
                    .await?;
                let same: bool = self
                    .client
                    .query_one(
                        "SELECT pg_catalog.to_regclass($1::text) IS NOT DISTINCT FROM $2::text::oid",
                        &[&qualified, &table.to_string()],
                    )
                    .await?
                    .get(0);
                if !same {
                    return Err(StepError {
                        reason: format!("{qualified} was renamed meanwhile"),
                        retry: true,
                        broken: false,
                    });
                }
                // The other table is not locked (the service role may not have
                // the right to): under this lock its key column's type cannot
                // change (the key would have to be built again).
                let plain: bool = self
                    .client
                    .query_one(KEY_IS_BUILT_IN, &[&table.to_string(), name])
                    .await?
                    .get(0);
                if !plain {
                    return Err(ours(format!(
                        "the foreign key {} of {qualified} compares a type or uses an operator that is not built in, or an index of its tables computes with a function that is not: pgshift does not validate it; run ALTER TABLE … VALIDATE CONSTRAINT yourself",
                        quote(name)
                    )));
                }
                // row_security off: a policy would be the owner's code (with it
                // off, a forced policy makes the check fail instead).
                self.client
                    .batch_execute(&format!(
                        "SET LOCAL row_security = off; SET LOCAL ROLE {owner}; ALTER TABLE {qualified} VALIDATE CONSTRAINT {}; COMMIT",
                        quote(name)
                    ))
                    .await?;
                Ok::<(), StepError>(())
            }
            .await;
            if done.is_err() {
                let _ = self.client.batch_execute("ROLLBACK").await;
            }
            done?;
        }
        Ok(())
    }

    /// Builds a twin of each of `indexes` with column `to` for `from`, named
    /// `name(oid)` (a partition's by [`in_part`]) (CREATE INDEX CONCURRENTLY: writes go on; it waits for older
    /// transactions, none of which waits for pgshift), once: a valid twin is kept,
    /// an invalid one (a build cut short) dropped and built again.
    pub(super) async fn build_twins(
        &self,
        settings: &Settings,
        r: &Rollout,
        indexes: &[sql::OldIndex],
        from: &str,
        to: &str,
        name: impl Fn(u32) -> String,
    ) -> Result<(), StepError> {
        let to_attnum = self.attnum(r, to).await?;
        let table = Place {
            schema: r.schema.clone(),
            oid: r.table_oid,
            qualified: r.qualified(),
        };
        for index in indexes {
            if !r.partitioned {
                self.build_twin(
                    settings,
                    r,
                    index,
                    &name(index.oid),
                    &table,
                    to_attnum,
                    from,
                    to,
                )
                .await?;
                continue;
            }
            // A partitioned table's index is a catalog entry over one index
            // per partition: each partition gets its twin, and the cutover
            // makes the partitioned ones and attaches them (see `twin_tree`).
            for part in self.index_parts(index.oid).await? {
                if part.partitioned {
                    continue;
                }
                let to_attnum = self.attnum_in(part.table.oid, to).await?;
                self.build_twin(
                    settings,
                    r,
                    index,
                    &in_part(&name, index.oid, part.table.oid),
                    &part.table,
                    to_attnum,
                    from,
                    to,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The indexes that make up partitioned index `index` at every level,
    /// parents before children.
    pub(super) async fn index_parts(&self, index: u32) -> Result<Vec<IndexPart>, StepError> {
        let rows = self
            .client
            .query(INDEX_PARTS, &[&index.to_string()])
            .await?;
        Ok(rows
            .iter()
            .map(|x| IndexPart {
                oid: x.get::<_, String>(0).parse().unwrap_or(0),
                parent: x.get::<_, String>(1).parse().unwrap_or(0),
                partitioned: x.get(2),
                name: x.get(3),
                table: Place {
                    oid: x.get::<_, String>(4).parse().unwrap_or(0),
                    schema: x.get(5),
                    qualified: x.get(6),
                },
                replica_identity: x.get(7),
                clustered: x.get(8),
            })
            .collect())
    }

    /// The indexes on `column` of table `table` (a partition, say) that
    /// pgshift can build again (see `REBUILDABLE`).
    pub(super) async fn rebuildable_in(
        &self,
        table: u32,
        column: &str,
    ) -> Result<Vec<sql::OldIndex>, StepError> {
        let attnum = self.attnum_in(table, column).await?;
        self.rebuildable_at(table, attnum).await
    }

    /// The indexes on column number `attnum` of table `table` that pgshift
    /// can build again (see `REBUILDABLE`).
    async fn rebuildable_at(
        &self,
        table: u32,
        attnum: i32,
    ) -> Result<Vec<sql::OldIndex>, StepError> {
        let rows = self
            .client
            .query(super::start::REBUILDABLE, &[&table.to_string(), &attnum])
            .await?;
        Ok(rows.iter().map(old_index).collect())
    }

    /// The number of `column` in table `table` (a partition's may differ).
    pub(super) async fn attnum_in(&self, table: u32, column: &str) -> Result<i32, StepError> {
        let row = self
            .client
            .query_opt(
                "SELECT attnum::int4 FROM pg_catalog.pg_attribute WHERE attrelid = $1::text::oid AND attname = $2::text::name AND NOT attisdropped",
                &[&table.to_string(), &column],
            )
            .await?
            .ok_or_else(|| ours(format!("column {} is gone from a partition", quote(column))))?;
        Ok(row.get(0))
    }

    /// What the cutover's window runs to give a partitioned table's index
    /// `index` its twin, named `name(oid)` (the partitions' by [`in_part`]): the partitioned
    /// twins made `ON ONLY` (the table and its partitioned partitions), every
    /// twin attached to its parent's (deepest first: Postgres marks a parent
    /// valid once all its partitions' are). And the renames that give each
    /// partition's twin the old one's name, parking the old (by [`in_part`] too),
    /// and what the partitions said of the old ones (replica identity, CLUSTER
    /// ON), for the twins, to run once the column's NOT NULL has moved.
    pub(super) async fn twin_tree(
        &self,
        r: &Rollout,
        index: &sql::OldIndex,
        from: &str,
        to: &str,
        name: impl Fn(u32) -> String,
        parked: impl Fn(u32) -> String,
    ) -> Result<[Vec<String>; 3], StepError> {
        let parts = self.index_parts(index.oid).await?;
        let twin_of = |oid: u32| match parts.iter().find(|p| p.oid == oid) {
            Some(p) => crate::sql::ident::qualified(
                &p.table.schema,
                &in_part(&name, index.oid, p.table.oid),
            ),
            None => crate::sql::ident::qualified(&r.schema, &name(oid)),
        };
        // A shaped index's definition ends with its predicate: its tablespace
        // is given as the transaction's default, for these statements.
        let space = index
            .tablespace
            .as_ref()
            .filter(|_| index.definition.is_some());
        let mut made: Vec<String> = space
            .map(|s| format!("SET LOCAL default_tablespace = {}", quote(s)))
            .into_iter()
            .collect();
        made.push(sql::twin_index(
            index,
            &name(index.oid),
            &r.qualified(),
            sql::Build::Only,
            from,
            to,
        ));
        let mut renames = Vec::new();
        let mut marks = Vec::new();
        for p in parts.iter().filter(|p| p.partitioned) {
            made.push(sql::twin_index(
                index,
                &in_part(&name, index.oid, p.table.oid),
                &p.table.qualified,
                sql::Build::Only,
                from,
                to,
            ));
        }
        if space.is_some() {
            made.push("SET LOCAL default_tablespace = ''".to_string());
        }
        for p in parts.iter().rev() {
            made.push(format!(
                "ALTER INDEX {} ATTACH PARTITION {}",
                twin_of(p.parent),
                twin_of(p.oid)
            ));
            renames.extend(pass_index_name(
                &p.table.schema,
                &p.name,
                &in_part(&parked, index.oid, p.table.oid),
                &in_part(&name, index.oid, p.table.oid),
            ));
            marks.extend(p.table_marks());
        }
        Ok([made, renames, marks])
    }

    /// The renames that give the partitions' indexes of `old` (partitioned
    /// index, by oid) back the names that their twins under `twin` took at the
    /// cutover (matched by partition), parking each twin as `parked(old)` (the
    /// partitions' by [`in_part`]): a rollback after the cutover.
    pub(super) async fn untwin_tree(
        &self,
        old: u32,
        twin: u32,
        parked: impl Fn(u32) -> String,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let olds = self.index_parts(old).await?;
        let twins = self.index_parts(twin).await?;
        let mut renames = Vec::new();
        let mut marks = Vec::new();
        for p in &olds {
            let Some(t) = twins.iter().find(|t| t.table.oid == p.table.oid) else {
                continue;
            };
            renames.extend(pass_index_name(
                &p.table.schema,
                &t.name,
                &in_part(&parked, old, p.table.oid),
                &p.name,
            ));
            // The old index takes the twin's name, and what the partition
            // says of it.
            marks.extend(t.table_marks());
        }
        Ok((renames, marks))
    }

    /// Builds `index`'s twin `twin` on `table` (a partition of the rollout's
    /// table, or the table), once: see [`Driver::build_twins`].
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build_twin(
        &self,
        settings: &Settings,
        r: &Rollout,
        index: &sql::OldIndex,
        twin: &str,
        table: &Place,
        to_attnum: i32,
        from: &str,
        to: &str,
    ) -> Result<(), StepError> {
        // One found under the twin's name counts only if it is on this table
        // and is the twin (the owner could have made one by that name with a
        // predicate: it would take the unique index's name at the cutover).
        let qualified = crate::sql::ident::qualified(&table.schema, twin);
        let state = match index.definition {
            Some(_) => self.shaped_twin(table, twin, index).await?,
            None => {
                self.plain_twin(table, twin, index, from, to, to_attnum)
                    .await?
            }
        };
        match state {
            Some((true, true)) => return Ok(()),
            Some((false, true)) => self.drop_concurrently(settings, &qualified).await?,
            Some((_, false)) => {
                return Err(ours(format!(
                    "an index named {qualified} exists and is not pgshift's twin of {}",
                    quote(&index.name)
                )))
            }
            None => {}
        }
        // The build parses the definition again on the real rows: while it
        // runs nobody may change a column's type (its casts would run) or
        // the table's code, and what was read must still hold (see `pin`;
        // not over the DROP above, which waits for every lock on the table).
        let pin = self.pin(settings, r).await?;
        let built = async {
            self.still(r, index, table, from, to).await?;
            let create = sql::twin_index(
                index,
                twin,
                &table.qualified,
                sql::Build::Concurrently,
                from,
                to,
            );
            self.build_one(settings, r, index, &create).await
        }
        .await;
        pin.release().await;
        built
    }

    /// Whether the index named `twin` in the table's schema is the valid twin
    /// of plain index `index` (same columns with `to` for `from`, order,
    /// uniqueness, access method, NULLS NOT DISTINCT and storage parameters,
    /// default operator classes and the columns' own collations, no predicate
    /// or expression), on the table. None: there is no
    /// such index; Some((valid, on_the_table)).
    async fn plain_twin(
        &self,
        table: &Place,
        twin: &str,
        index: &sql::OldIndex,
        from: &str,
        to: &str,
        to_attnum: i32,
    ) -> Result<Option<(bool, bool)>, StepError> {
        let columns: Vec<String> = index
            .columns
            .iter()
            .map(|c| if c == from { to.to_string() } else { c.clone() })
            .collect();
        let found = self
            .client
            .query_opt(
                concat!("SELECT x.indisvalid, x.indrelid OPERATOR(pg_catalog.=) $3::text::oid \
                   AND $4::pg_catalog.int4 OPERATOR(pg_catalog.=) ANY (x.indkey::pg_catalog.int2[]), \
                        x.indisunique OPERATOR(pg_catalog.=) $5::bool AND x.indpred IS NULL AND x.indexprs IS NULL \
                   AND x.indnkeyatts::pg_catalog.int4 OPERATOR(pg_catalog.=) $6::int4 \
                   AND ARRAY(SELECT pg_catalog.unnest(x.indoption::pg_catalog.int2[]))::pg_catalog.int4[] OPERATOR(pg_catalog.=) $7::int4[] \
                   AND ARRAY(SELECT a.attname::pg_catalog.text \
                               FROM pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, ord) \
                               JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
                              ORDER BY k.ord) OPERATOR(pg_catalog.=) $8::text[] \
                   AND (SELECT m.amname::pg_catalog.text FROM pg_catalog.pg_am m WHERE m.oid = c.relam) OPERATOR(pg_catalog.=) $9::text \
                   AND x.indnullsnotdistinct OPERATOR(pg_catalog.=) $10::bool \
                   AND COALESCE(c.reloptions, '{}')::pg_catalog.text[] OPERATOR(pg_catalog.=) $11::text[] \
                   AND ", default_classes!(), "
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid \
                 WHERE c.relname = $1::text::name \
                   AND c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $2::text::name)"),
                &[
                    &twin,
                    &table.schema,
                    &table.oid.to_string(),
                    &to_attnum,
                    &index.unique,
                    &(index.key_columns as i32),
                    &index.options,
                    &columns,
                    &index.method,
                    &index.nulls_not_distinct,
                    &index.reloptions,
                ],
            )
            .await?;
        Ok(found.map(|x| {
            (
                x.get::<_, bool>(0) && x.get::<_, bool>(2),
                x.get::<_, bool>(1),
            )
        }))
    }

    /// Under the pin: `index` is still one of `from`'s indexes as read (the
    /// table's, or `table`'s own), and the table runs no code pgshift did not
    /// check.
    async fn still(
        &self,
        r: &Rollout,
        index: &sql::OldIndex,
        table: &Place,
        from: &str,
        to: &str,
    ) -> Result<(), StepError> {
        let mut now = self.indexes_on(r, from).await?;
        if table.oid != r.table_oid && !now.iter().any(|i| i.oid == index.oid) {
            // A leaf partition's own index (see `leaf_indexes`); a partition's
            // twin of the table's index was found above.
            now = self.rebuildable_in(table.oid, from).await?;
        }
        if !now.iter().any(|i| i.oid == index.oid) {
            return Err(ours(format!(
                "the indexes on {} changed while pgshift read them; ask again",
                quote(from)
            )));
        }
        let n = r.names();
        self.check_locked(r, &n.trigger, &format!("{}()", n.function), to)
            .await
    }

    /// `create`, the `CREATE INDEX CONCURRENTLY` of `index`'s twin.
    async fn build_one(
        &self,
        settings: &Settings,
        r: &Rollout,
        index: &sql::OldIndex,
        create: &str,
    ) -> Result<(), StepError> {
        tracing::info!(target: "pgshift::rollout", rollout = r.id, "building the twin of {}: {create}", quote(&index.name));
        // A shaped twin's definition ends with its predicate: its tablespace
        // is given as the session's default.
        let space = match (&index.definition, &index.tablespace) {
            (Some(_), Some(space)) => format!("; SET default_tablespace = {}", quote(space)),
            _ => String::new(),
        };
        self.concurrently(settings, &space, create).await
    }

    /// Drops index `qualified` (if it is there) with [`Driver::concurrently`].
    async fn drop_concurrently(
        &self,
        settings: &Settings,
        qualified: &str,
    ) -> Result<(), StepError> {
        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}");
        self.concurrently(settings, "", &drop).await
    }

    /// `statement` (a `CREATE` or `DROP INDEX CONCURRENTLY`, which waits for
    /// every transaction that holds the table, and takes no lock that queues
    /// the application) with no lock timeout, for at most the long-step
    /// timeout. The service session's short timeouts would fail it whenever
    /// a reader holds the table a little while, and the retry costs a whole
    /// verify pass. `also`: more settings for it (`; SET …`); all are reset
    /// after it, whatever happened.
    pub(super) async fn concurrently(
        &self,
        settings: &Settings,
        also: &str,
        statement: &str,
    ) -> Result<(), StepError> {
        let set = format!(
            "SET statement_timeout = {}; SET lock_timeout = 0{also}",
            literal(&format!("{}ms", settings.config.ddl.long_step_timeout_ms))
        );
        let done = match self.client.batch_execute(&set).await {
            Ok(()) => self.client.batch_execute(statement).await,
            Err(e) => Err(e),
        };
        let _ = self
            .client
            .batch_execute("RESET statement_timeout; RESET lock_timeout; RESET default_tablespace")
            .await;
        done?;
        Ok(())
    }

    /// A second service connection holding ACCESS SHARE on the table (a lock
    /// with no snapshot: CREATE INDEX CONCURRENTLY does not wait for it), checked
    /// to be the rollout's table. Until it is released nobody can change a
    /// column's type, add a constraint or rename the table, so the twins' text
    /// means what was checked.
    pub(super) async fn pin(&self, settings: &Settings, r: &Rollout) -> Result<Pin, StepError> {
        let rt = tokio::runtime::Handle::current();
        let client = crate::engine::service::connect(settings, &self.database, &rt)
            .await
            .map_err(|e| StepError {
                reason: e.to_string(),
                retry: true,
                broken: false,
            })?;
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '10s'; LOCK TABLE {} IN ACCESS SHARE MODE",
                r.target()
            ))
            .await?;
        let pin = Pin(client);
        if !self.names_table(r).await? {
            pin.release().await;
            return Err(StepError {
                reason: format!("{} was renamed meanwhile", r.qualified()),
                retry: true,
                broken: false,
            });
        }
        Ok(pin)
    }

    /// What a column carries beyond its type and constraints, as statements that
    /// give it to `target` (SQL, the name the column has once the statements run):
    /// its privileges (GRANT … (column)), comment, statistics target and
    /// attribute options. A direct ALTER … TYPE keeps them; the swap must carry
    /// them over. A partitioned table's partitions have their own.
    pub(super) async fn column_marks(
        &self,
        r: &Rollout,
        column: &str,
        target: &str,
    ) -> Result<Vec<String>, StepError> {
        let mut marks = self
            .marks_in(r.table_oid, &r.qualified(), column, target)
            .await?;
        if !r.partitioned {
            return Ok(marks);
        }
        let oids: Vec<String> = r.partitions.iter().map(|p| p.1.to_string()).collect();
        let parts = self
            .client
            .query(
                "SELECT c.oid::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = ANY ($1::text[]::oid[]) ORDER BY c.oid",
                &[&oids],
            )
            .await?;
        for p in parts {
            let oid: u32 = p.get::<_, String>(0).parse().unwrap_or(0);
            marks.extend(
                self.marks_in(oid, &p.get::<_, String>(1), column, target)
                    .await?,
            );
        }
        Ok(marks)
    }

    /// [`Driver::column_marks`] of one table (`t`: qualified).
    async fn marks_in(
        &self,
        table: u32,
        t: &str,
        column: &str,
        target: &str,
    ) -> Result<Vec<String>, StepError> {
        let oid = table.to_string();
        let row = self
            .client
            .query_one(
                "SELECT a.attstattarget::pg_catalog.int4, COALESCE(a.attoptions, '{}')::pg_catalog.text[], \
                        pg_catalog.col_description(a.attrelid, a.attnum::pg_catalog.int4) \
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::text::oid AND a.attname = $2::text::name",
                &[&oid, &column],
            )
            .await?;
        let (stats, options, comment): (i32, Vec<String>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        let grants = self
            .client
            .query(
                "SELECT e.privilege_type::pg_catalog.text, \
                        CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(g.rolname) END, e.is_grantable \
                 FROM pg_catalog.pg_attribute a CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) e \
                 LEFT JOIN pg_catalog.pg_roles g ON g.oid = e.grantee \
                 WHERE a.attrelid = $1::text::oid AND a.attname = $2::text::name",
                &[&oid, &column],
            )
            .await?;
        let c = quote(target);
        let mut marks: Vec<String> = grants
            .iter()
            .filter(|g| {
                // Privilege names come from the catalog; only the known ones pass.
                matches!(
                    g.get::<_, String>(0).as_str(),
                    "SELECT" | "INSERT" | "UPDATE" | "REFERENCES"
                )
            })
            .map(|g| {
                let with = if g.get::<_, bool>(2) {
                    " WITH GRANT OPTION"
                } else {
                    ""
                };
                format!(
                    "GRANT {} ({c}) ON {t} TO {}{with}",
                    g.get::<_, String>(0),
                    g.get::<_, String>(1)
                )
            })
            .collect();
        if let Some(comment) = comment {
            marks.push(format!(
                "COMMENT ON COLUMN {t}.{c} IS {}",
                literal(&comment)
            ));
        }
        if stats >= 0 {
            marks.push(format!(
                "ALTER TABLE ONLY {t} ALTER COLUMN {c} SET STATISTICS {stats}"
            ));
        }
        for (k, v) in options.iter().filter_map(|o| o.split_once('=')) {
            marks.push(format!(
                "ALTER TABLE ONLY {t} ALTER COLUMN {c} SET ({} = {})",
                quote(k),
                literal(v)
            ));
        }
        Ok(marks)
    }

    /// The comments on `indexes` (oids; a partitioned one's partitions' at
    /// every level too) and on `constraints` ((table oid, name)), as
    /// statements that give each to whatever has its name when they run: a
    /// direct `ALTER … TYPE` keeps the comments of the indexes and constraints
    /// it builds again, and the swap gives their names to twins.
    pub(super) async fn comments(
        &self,
        indexes: &[u32],
        constraints: &[(u32, String)],
    ) -> Result<Vec<String>, StepError> {
        let indexes: Vec<String> = indexes.iter().map(u32::to_string).collect();
        let (tables, names): (Vec<String>, Vec<String>) = constraints
            .iter()
            .map(|(t, n)| (t.to_string(), n.clone()))
            .unzip();
        let rows = self
            .client
            .query(COMMENTS, &[&indexes, &tables, &names])
            .await?;
        Ok(rows.iter().map(|x| x.get(0)).collect())
    }

    /// The sequences `column` owns (`serial`), qualified.
    pub(super) async fn owned_sequences(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<Vec<String>, StepError> {
        let attnum = self.attnum(r, column).await?;
        let rows = self
            .client
            .query(
                super::start::OWNED_SEQUENCES,
                &[&r.table_oid.to_string(), &attnum],
            )
            .await?;
        Ok(rows.iter().map(|x| x.get(0)).collect())
    }
}

/// True when foreign key $2 of table $1 compares columns of built-in types
/// with built-in operators only (on both sides), and no index of either table
/// computes with a function, operator or type that is not built in (planning
/// the check's query folds index expressions: an immutable function of the
/// owner's would run in pgshift's session).
const KEY_IS_BUILT_IN: &str = concat!(
    "
SELECT ",
    key_is_built_in!(),
    "
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x,
                          pg_catalog.regexp_matches(COALESCE(x.indexprs::pg_catalog.text, '') OPERATOR(pg_catalog.||) COALESCE(x.indpred::pg_catalog.text, ''),
                                                    ':(funcid|opfuncid|opno|[a-z_]*type|[a-z_]*typid|[a-z_]*typeid) ([0-9]+)', 'g') AS m
                    WHERE x.indrelid IN (k.conrelid, k.confrelid) AND m[2]::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384)
  FROM pg_catalog.pg_constraint k
 WHERE k.conrelid = $1::text::oid AND k.conname = $2::text::name AND k.contype = 'f'"
);

/// One row of `REBUILDABLE`.
pub(super) fn old_index(x: &tokio_postgres::Row) -> sql::OldIndex {
    sql::OldIndex {
        oid: x.get::<_, String>(0).parse().unwrap_or(0),
        name: x.get(1),
        method: x.get(2),
        unique: x.get(3),
        nulls_not_distinct: x.get(4),
        key_columns: usize::try_from(x.get::<_, i32>(5)).unwrap_or(0),
        columns: x.get(6),
        options: x.get(7),
        reloptions: x.get(8),
        tablespace: x.get(9),
        constraint: x.get::<_, Option<String>>(10).zip(
            x.get::<_, Option<String>>(11)
                .as_deref()
                .and_then(Constraint::of),
        ),
        replica_identity: x.get(12),
        clustered: x.get(13),
        shaped: x.get(14),
        definition: None,
    }
}

/// A table an index twin is built on: the rollout's, or one of its partitions.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub schema: String,
    pub oid: u32,
    pub qualified: String,
}

/// One index of a partitioned index's tree (see [`INDEX_PARTS`]).
#[derive(Debug, Clone)]
pub(super) struct IndexPart {
    pub oid: u32,
    /// The index it is attached to.
    pub parent: u32,
    /// Itself partitioned (its table is a partitioned partition).
    pub partitioned: bool,
    pub name: String,
    pub table: Place,
    /// The partition's REPLICA IDENTITY USING INDEX and CLUSTER ON.
    pub replica_identity: bool,
    pub clustered: bool,
}

impl IndexPart {
    /// What the partition says of this index, for the index that takes its
    /// name (after the window's NOT NULL moves: a replica identity needs it).
    pub(super) fn table_marks(&self) -> Vec<String> {
        sql::index_marks(
            &self.table.qualified,
            &self.name,
            self.replica_identity,
            self.clustered,
        )
    }
}

/// The indexes attached to index $1 (oid), at every level, parents first:
/// oid, parent's oid, partitioned, name, its table's oid, schema and qualified
/// name, and whether the table uses it as replica identity and clusters on it.
/// `pg_inherits` takes no lock.
const INDEX_PARTS: &str = "
WITH RECURSIVE tree(oid, parent, depth) AS (
    SELECT i.inhrelid, i.inhparent, 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::text::oid
    UNION ALL
    SELECT i.inhrelid, i.inhparent, tree.depth + 1 FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
SELECT tree.oid::pg_catalog.text, tree.parent::pg_catalog.text, c.relkind = 'I', c.relname::pg_catalog.text,
       t.oid::pg_catalog.text, n.nspname::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, t.relname),
       x.indisreplident, x.indisclustered
  FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid
  JOIN pg_catalog.pg_index x ON x.indexrelid = tree.oid
  JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
 ORDER BY tree.depth, tree.oid";

/// Indexes (not partitioned ones) on table $1 (oid) or any partition of it,
/// named with prefix $2 (pgshift's twins of one rollout), that stand on column
/// $3 and whose name is not among $4: the qualified names.
const STALE_TWINS: &str = "
WITH RECURSIVE tree(oid) AS (
    SELECT $1::pg_catalog.text::pg_catalog.oid
    UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.oid)
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
  FROM tree
  JOIN pg_catalog.pg_index x ON x.indrelid OPERATOR(pg_catalog.=) tree.oid
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) x.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE c.relkind OPERATOR(pg_catalog.=) 'i'
   AND pg_catalog.starts_with(c.relname::pg_catalog.text, $2::pg_catalog.text)
   AND NOT c.relname::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($4::pg_catalog.text[])
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                 JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) d.refobjid
                  AND a.attnum OPERATOR(pg_catalog.=) d.refobjsubid
                WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid OPERATOR(pg_catalog.=) c.oid
                  AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) $3::pg_catalog.text)
 ORDER BY 1";

/// See [`Driver::comments`]: $1 index oids, $2 and $3 constraints' table oids
/// and names (text arrays).
const COMMENTS: &str = "
WITH RECURSIVE tree(oid) AS (
    SELECT pg_catalog.unnest($1::pg_catalog.text[])::pg_catalog.oid
    UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.oid)
SELECT pg_catalog.format('COMMENT ON INDEX %I.%I IS %L', n.nspname, c.relname, d.description)
  FROM tree
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.oid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) c.oid
   AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid OPERATOR(pg_catalog.=) 0
UNION ALL
SELECT pg_catalog.format('COMMENT ON CONSTRAINT %I ON %I.%I IS %L', k.conname, n.nspname, c.relname, d.description)
  FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) AS w(rel, name)
  JOIN pg_catalog.pg_constraint k ON k.conrelid OPERATOR(pg_catalog.=) w.rel::pg_catalog.oid
   AND k.conname OPERATOR(pg_catalog.=) w.name::pg_catalog.name
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) k.oid
   AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass";

/// See [`Driver::pin`].
pub(super) struct Pin(tokio_postgres::Client);

impl Pin {
    pub async fn release(self) {
        let _ = self.0.batch_execute("ROLLBACK").await;
    }
}

/// A foreign key that references the rollout's table.
#[derive(Debug, Clone)]
pub(super) struct ForeignKey {
    pub table_oid: u32,
    /// Its table, qualified.
    pub table: String,
    pub name: String,
    /// `FOREIGN KEY (…) REFERENCES …`, without NOT VALID.
    pub definition: String,
}

impl ForeignKey {
    pub fn drop_sql(&self) -> String {
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            self.table,
            quote(&self.name)
        )
    }

    /// Added again NOT VALID (no scan in the lock window; enforced from then on).
    pub fn add_sql(&self) -> String {
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            self.table,
            quote(&self.name),
            self.definition
        )
    }
}

/// The name of the twin (or parked index) on partition `table` whose
/// partitioned index is named `name(root)`: by the partition and the
/// table's index, which a `REINDEX … CONCURRENTLY` of the partition's own
/// index (a new oid) does not change.
pub(super) fn in_part(name: &impl Fn(u32) -> String, root: u32, table: u32) -> String {
    format!("{}_{table}", name(root))
}

/// The renames that give `tw`'s name to index `taker` and park the index that
/// holds it now as `parked` (the cutover: twin takes, old parks; a rollback the
/// other way round).
pub(super) fn pass_name(r: &Rollout, tw: &Twin, parked: &str, taker: &str) -> [String; 2] {
    pass_index_name(&r.schema, &tw.name, parked, taker)
}

/// The renames, in `schema`, that give index name `name` to index `taker`
/// and park the index that holds it now as `parked`.
pub(super) fn pass_index_name(schema: &str, name: &str, parked: &str, taker: &str) -> [String; 2] {
    let index = |n: &str| crate::sql::ident::qualified(schema, n);
    [
        format!("ALTER INDEX {} RENAME TO {}", index(name), quote(parked)),
        format!("ALTER INDEX {} RENAME TO {}", index(taker), quote(name)),
    ]
}

/// `alter` (`ALTER TABLE ONLY …`) ADD CONSTRAINT for `tw`'s constraint, if it
/// has one, on `index`.
pub(super) fn constraint_on(alter: &str, tw: &Twin, index: &str) -> Option<String> {
    tw.constraint.map(|kind| {
        format!(
            "{alter} ADD CONSTRAINT {} {} USING INDEX {}",
            quote(&tw.name),
            kind.sql(),
            quote(index)
        )
    })
}
