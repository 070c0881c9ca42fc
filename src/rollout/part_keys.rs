//! Foreign keys of the changed column's own on a partitioned table. Postgres 15
//! cannot add a partitioned table's foreign key NOT VALID, so the twin is made
//! on each leaf partition instead (NOT VALID in a short window, then validated
//! as the leaf's owner). The cutover's window drops the old key (its copies on
//! the partitions go with it), gives each leaf's twin the name the old key's
//! copy had there, and adds the table's key over the new column: Postgres
//! takes the leaves' validated keys over without a scan (it drops their own
//! triggers on the referenced table, under a brief ACCESS EXCLUSIVE lock
//! there, as dropping any foreign key does). A rollback after the cutover
//! does the same the other way: twins on the old column first, then the
//! window.

use super::checks::CheckTwin;
use super::driver::{ours, Driver, Linked, StepError};
use super::model::Rollout;
use crate::context::Settings;
use crate::engine::Background;
use crate::sql::ident::quote;

/// The copies of foreign key $1 (oid) on partitions, at every level: the
/// partition's oid, the copy's name.
const KEY_PARTS: &str = "
WITH RECURSIVE tree(oid) AS (
    SELECT k.oid FROM pg_catalog.pg_constraint k WHERE k.conparentid = $1::text::oid
    UNION ALL
    SELECT k.oid FROM pg_catalog.pg_constraint k JOIN tree ON k.conparentid = tree.oid)
SELECT k.conrelid::pg_catalog.text, k.conname::pg_catalog.text
  FROM tree JOIN pg_catalog.pg_constraint k ON k.oid = tree.oid
 ORDER BY k.oid";

/// The leaf partitions of table $1 (oid), at every level: oid, qualified
/// name, owner (quoted), and their constraint named $2 if any (definition
/// without NOT VALID, validated and attached to none), and the table it
/// references.
const LEAVES: &str = "
WITH RECURSIVE tree(oid) AS (
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::text::oid
    UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
SELECT c.oid::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname),
       pg_catalog.quote_ident(o.rolname),
       pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' NOT VALID$', ''),
       k.convalidated AND k.conparentid = 0, k.confrelid::pg_catalog.text
  FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid AND c.relkind <> 'p'
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
  LEFT JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid AND k.conname = $2::text::name
 ORDER BY c.oid";

/// A foreign key's copy on a partition (see [`KEY_PARTS`]).
pub(super) struct KeyPart {
    pub table: u32,
    pub name: String,
}

/// A leaf partition and its constraint of one name (see [`LEAVES`]).
pub(super) struct Leaf {
    pub oid: u32,
    pub qualified: String,
    pub owner: String,
    /// The constraint: its definition, and validated and attached to none.
    pub found: Option<(String, bool)>,
    /// The table the constraint references.
    pub references: Option<u32>,
}

impl Driver {
    pub(super) async fn key_parts(&self, key: u32) -> Result<Vec<KeyPart>, StepError> {
        let rows = self.client.query(KEY_PARTS, &[&key.to_string()]).await?;
        Ok(rows
            .iter()
            .map(|x| KeyPart {
                table: x.get::<_, String>(0).parse().unwrap_or(0),
                name: x.get(1),
            })
            .collect())
    }

    pub(super) async fn leaves(&self, r: &Rollout, name: &str) -> Result<Vec<Leaf>, StepError> {
        let rows = self
            .client
            .query(LEAVES, &[&r.table_oid.to_string(), &name])
            .await?;
        Ok(rows
            .iter()
            .map(|x| Leaf {
                oid: x.get::<_, String>(0).parse().unwrap_or(0),
                qualified: x.get(1),
                owner: x.get(2),
                found: x
                    .get::<_, Option<String>>(3)
                    .map(|d| (d, x.get::<_, Option<bool>>(4).unwrap_or(false))),
                references: x.get::<_, Option<String>>(5).and_then(|o| o.parse().ok()),
            })
            .collect())
    }

    /// Gives every leaf partition the twin `name` of foreign key `ck` (added
    /// NOT VALID as each leaf's owner, as the table's key reaches them
    /// directly, in one short window; then validated as each leaf's owner). A validation that the data fails drops them all
    /// again: the application's writes must not fail for a cutover that does
    /// not happen.
    pub(super) async fn build_leaf_keys(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
        ck: &CheckTwin,
        name: &str,
        keys_to: &[u32],
    ) -> Result<(), StepError> {
        if !ck.validated {
            return Err(ours(format!(
                "the foreign key {} is NOT VALID: its partitioned twin could only be added validated",
                quote(&ck.name)
            )));
        }
        let leaves = self.leaves(r, name).await?;
        let mut adds = Vec::new();
        for leaf in &leaves {
            match &leaf.found {
                None => adds.push(format!(
                    "SET LOCAL ROLE {}; ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                    leaf.owner,
                    leaf.qualified,
                    quote(name),
                    ck.twin
                )),
                Some((def, _)) if *def == ck.twin => {}
                Some((def, _)) => {
                    return Err(ours(format!(
                        "partition {} has a constraint named {} that pgshift did not make ({def})",
                        leaf.qualified,
                        quote(name)
                    )))
                }
            }
        }
        if !adds.is_empty() {
            let body = format!("{}; RESET ROLE", adds.join("; "));
            let linked = Linked::AddsKey(keys_to.to_vec());
            self.with_retries(settings, r, &body, "SELECT 1", bg, None, linked)
                .await?;
        }
        let pending: Vec<(u32, String)> = self
            .leaves(r, name)
            .await?
            .iter()
            .filter(|l| l.found.as_ref().is_some_and(|f| !f.1))
            .map(|l| (l.oid, name.to_string()))
            .collect();
        let validated = self.validate_foreign_keys(settings, &pending).await;
        if let Err(e) = &validated {
            if super::checks::broken_by_data(e) {
                if let Err(left) = self
                    .drop_leaf_keys(settings, r, bg, &[name.to_string()])
                    .await
                {
                    tracing::warn!(target: "pgshift::rollout", rollout = r.id, error = %left, "partitions' twin keys left");
                }
            }
        }
        validated
    }

    /// Drops constraints `names` from every leaf partition that has them (one
    /// window; the tables they reference are locked too).
    pub(super) async fn drop_leaf_keys(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
        names: &[String],
    ) -> Result<(), StepError> {
        let mut drops = Vec::new();
        let mut referenced = Vec::new();
        for name in names {
            for leaf in self.leaves(r, name).await? {
                if leaf.found.is_none() {
                    continue;
                }
                referenced.extend(leaf.references);
                drops.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                    leaf.qualified,
                    quote(name)
                ));
            }
        }
        if drops.is_empty() {
            return Ok(());
        }
        referenced.sort_unstable();
        referenced.dedup();
        let linked = Linked::DropsKey(referenced);
        self.with_retries(settings, r, &drops.join("; "), "SELECT 1", bg, None, linked)
            .await
    }

    /// The twins of this rollout's foreign keys on the leaf partitions, each
    /// with the table it references: (name, referenced table's oid).
    pub(super) async fn leaf_twin_keys(
        &self,
        r: &Rollout,
    ) -> Result<Vec<(String, u32)>, StepError> {
        let rows = self
            .client
            .query(
                "WITH RECURSIVE tree(oid) AS ( \
                     SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::text::oid \
                     UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid) \
                 SELECT DISTINCT k.conname::pg_catalog.text, k.confrelid::pg_catalog.text FROM tree \
                   JOIN pg_catalog.pg_constraint k ON k.conrelid = tree.oid AND k.contype = 'f' \
                  WHERE k.conname::pg_catalog.text ~ $2::text ORDER BY 1",
                &[
                    &r.table_oid.to_string(),
                    &format!("^pgshift_{}_fk_[0-9]+$", r.id),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|x| {
                let referenced = x.get::<_, String>(1).parse().unwrap_or(0);
                (x.get(0), referenced)
            })
            .collect())
    }

    /// The window's statements that move foreign key `name` (oid `key`) of
    /// the table to its leaf twins `twin`: before the columns' renames, the
    /// key's drop (its copies go with it) and the renames that give each
    /// leaf's twin the name the key's copy had there; after them, the table's
    /// key added again as `definition` (as the table's owner), which takes the
    /// leaves' over. The cutover moves the old column's key to the new one; a
    /// rollback after it, back.
    pub(super) async fn key_swap(
        &self,
        r: &Rollout,
        key: u32,
        name: &str,
        twin: &str,
        definition: &str,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let parts = self.key_parts(key).await?;
        let mut before = vec![format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            r.qualified(),
            quote(name)
        )];
        for leaf in self.leaves(r, twin).await? {
            // A leaf the key had no copy on (made since): its twin keeps
            // pgshift's name; the table's key takes it over all the same.
            if let Some(p) = parts.iter().find(|p| p.table == leaf.oid) {
                before.push(format!(
                    "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                    leaf.qualified,
                    quote(twin),
                    quote(&p.name)
                ));
            }
        }
        let after = vec![
            format!("SET LOCAL ROLE {}", self.owner_of(r).await?),
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
                r.qualified(),
                quote(name),
            ),
            "RESET ROLE".to_string(),
        ];
        Ok((before, after))
    }

    /// A rollback after the cutover, for foreign key `name` of the table (now
    /// on the new column): twins on the old column on every leaf, built now,
    /// and the window's statements that move the key back (see
    /// [`Driver::key_swap`]), with the twins' (name, definition) the window
    /// must find on every leaf. None when the key is gone.
    #[allow(clippy::type_complexity)]
    pub(super) async fn key_back(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
        name: &str,
    ) -> Result<Option<(Vec<String>, Vec<String>, (String, String))>, StepError> {
        let attnum = self.attnum(r, &r.column).await?;
        let rows = self
            .client
            .query(
                super::own_keys::OWN_KEYS,
                &[&r.table_oid.to_string(), &attnum, &r.old_column()],
            )
            .await?;
        let Some(row) = rows.iter().find(|x| x.get::<_, String>(1) == name) else {
            return Ok(None);
        };
        let key: u32 = row.get::<_, String>(0).parse().unwrap_or(0);
        let definition: String = row.get(2);
        let twin: String = row.get::<_, Option<String>>(4).ok_or_else(|| {
            ours(format!(
                "pgshift could not read the definition of foreign key {}",
                quote(name)
            ))
        })?;
        let keys_to = self.referenced_tables(r, &[&r.column]).await?;
        let ck = CheckTwin {
            oid: key,
            name: name.to_string(),
            definition: definition.clone(),
            twin,
            validated: true,
            foreign: true,
        };
        let leaf_twin = r.names().new_check(key, true);
        self.build_leaf_keys(settings, r, bg, &ck, &leaf_twin, &keys_to)
            .await?;
        let (before, after) = self.key_swap(r, key, name, &leaf_twin, &definition).await?;
        Ok(Some((before, after, (leaf_twin, ck.twin))))
    }

    /// Under the window's lock: every leaf partition has twin `name` as
    /// pgshift made it (`definition`), validated and attached to no key. The
    /// table's key added over them takes each over; any other (one missing,
    /// not validated, or made by someone else with other actions) it would
    /// check with a scan of the partition, as its owner, in the window.
    pub(super) async fn leaves_keyed(
        &self,
        r: &Rollout,
        name: &str,
        definition: &str,
    ) -> Result<Option<String>, StepError> {
        Ok(self
            .leaves(r, name)
            .await?
            .into_iter()
            .find(|l| {
                !l.found
                    .as_ref()
                    .is_some_and(|(def, ready)| *ready && def == definition)
            })
            .map(|l| l.qualified))
    }
}
