//! The PostgreSQL schema, as numbered migrations.

/// The schema, one version at a time. A version is applied once, in one transaction with
/// its row in `schema_migrations`; versions are never edited once released, only added.
pub(super) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE users (
        name text PRIMARY KEY,
        token_hash bytea NOT NULL UNIQUE
    );
    CREATE TABLE functions (
        id bytea NOT NULL,
        owner text NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (id, owner)
    );
    CREATE TABLE endpoints (
        id text PRIMARY KEY,
        owner text NOT NULL,
        record bytea NOT NULL
    );
    CREATE SEQUENCE task_ids;
    CREATE TABLE tasks (
        id bigint PRIMARY KEY,
        owner text NOT NULL,
        endpoint text NOT NULL,
        function bytea NOT NULL,
        args bytea NOT NULL,
        timeout_ms bigint,
        state bytea NOT NULL,
        timeline bytea NOT NULL,
        result bytea,
        created timestamptz NOT NULL,
        finished timestamptz,
        claimed_by text,
        lease_until timestamptz
    );
    CREATE INDEX tasks_by_owner ON tasks (owner, id);
    CREATE INDEX tasks_unfinished ON tasks (endpoint, id) WHERE finished IS NULL;
    CREATE INDEX tasks_by_finish ON tasks (finished) WHERE finished IS NOT NULL;
    CREATE TABLE idempotency_keys (
        owner text NOT NULL,
        key text NOT NULL,
        fingerprint bytea NOT NULL,
        ids bigint[] NOT NULL,
        created timestamptz NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX keys_by_time ON idempotency_keys (created);
    "#,
    ),
    (
        2,
        // What a claim reads: an endpoint's unfinished tasks whose lease is absent or over,
        // without stepping over the ones held (a gateway holds thousands while they run).
        r#"
    CREATE INDEX tasks_claimable ON tasks
        (endpoint, (COALESCE(lease_until, '-infinity'::timestamptz)))
        WHERE finished IS NULL;
    "#,
    ),
    (
        3,
        // What a task asks for of the endpoint's machine (`TaskOptions::resources`): NULL
        // for a plain task, which is nearly every one.
        r#"
    ALTER TABLE tasks
        ADD COLUMN cores bigint,
        ADD COLUMN gpus bigint,
        ADD COLUMN memory bigint;
    "#,
    ),
    (
        4,
        // A claim's lease is one row per gateway and endpoint instead of a time on each task
        // row: renewing it no longer rewrites (and locks) every task a gateway holds, which
        // made renewals and result writes wait on each other. A task is held while the lease
        // of its claimant for its endpoint runs; claims made before this version, which have
        // no lease row, are released here and claimed again.
        r#"
    CREATE TABLE leases (
        endpoint text NOT NULL,
        member text NOT NULL,
        until timestamptz NOT NULL,
        PRIMARY KEY (endpoint, member)
    );
    UPDATE tasks SET claimed_by = NULL WHERE finished IS NULL AND claimed_by IS NOT NULL;
    DROP INDEX tasks_claimable;
    DROP INDEX tasks_unfinished;
    ALTER TABLE tasks DROP COLUMN lease_until;
    CREATE INDEX tasks_held ON tasks (endpoint, claimed_by, id) WHERE finished IS NULL;
    "#,
    ),
    (
        5,
        // Whole nodes of one block a multi-node task holds (`TaskOptions::nodes`): NULL for
        // a task that holds none, as every task stored before this version.
        r#"
    ALTER TABLE tasks ADD COLUMN nodes bigint;
    "#,
    ),
    (
        6,
        // A task row is written once. Storing a result was an `UPDATE` of the wide task row:
        // a new row version and an entry in each of its indexes (`finished` and
        // `claimed_by` are indexed, so never a HOT update), 25-35 µs a row, the largest
        // cost of a task in PostgreSQL. Now what changes lives in narrow tables of its own:
        // `pending` holds a row per unfinished task (its claim), deleted when the task
        // finishes (deleting is what makes one finisher the first); `results` is
        // insert-only, a plain `INSERT` of 3-4 µs a row. `task_rows` reads a task as one
        // row again. Expiry finds old results by a BRIN index on `finished` (results are
        // appended about in finishing order; a BRIN index costs next to nothing to keep).
        r#"
    CREATE TABLE pending (
        id bigint PRIMARY KEY,
        endpoint text NOT NULL,
        claimed_by text
    );
    CREATE TABLE results (
        id bigint PRIMARY KEY,
        state bytea NOT NULL,
        timeline bytea NOT NULL,
        result bytea,
        finished timestamptz NOT NULL
    );
    INSERT INTO pending (id, endpoint, claimed_by)
        SELECT id, endpoint, claimed_by FROM tasks WHERE finished IS NULL;
    INSERT INTO results (id, state, timeline, result, finished)
        SELECT id, state, timeline, result, finished FROM tasks WHERE finished IS NOT NULL;
    DROP INDEX tasks_held;
    DROP INDEX tasks_by_finish;
    ALTER TABLE tasks DROP COLUMN result, DROP COLUMN finished, DROP COLUMN claimed_by;
    CREATE INDEX pending_held ON pending (endpoint, claimed_by, id);
    CREATE INDEX results_by_finish ON results USING brin (finished);
    CREATE VIEW task_rows AS
        SELECT t.id, t.owner, t.endpoint, t.function, t.args, t.timeout_ms,
               COALESCE(r.state, t.state) AS state, COALESCE(r.timeline, t.timeline) AS timeline,
               r.result, t.created, r.finished, t.cores, t.gpus, t.memory, t.nodes
        FROM tasks t LEFT JOIN results r ON r.id = t.id;
    "#,
    ),
    (
        7,
        // A task claimed as it is stored (submitted at the gateway its endpoint is connected
        // to: nearly every task of a single gateway) has no row in `pending`: inserting and
        // deleting that row was a heap row and two index entries written, and a dead row
        // left, per task. Its claim is the task row's `claimed_by`, written once with it;
        // the partial index lets a gateway taking over a lapsed lease find the tasks
        // claimed so (those without a result are moved into `pending` then). A result is
        // stored once by the primary key of `results`. Tasks stored before this version
        // keep their rows in `pending` and are claimed as before.
        //
        // `task_rows` reads a task's result by a probe of `results`' primary key, whatever
        // the plan: as a plain join, the first (custom) plans of a read of a few hundred
        // tasks by id hashed the whole `results` table (17 ms against 1 ms for 500 tasks
        // among 30,000 results, and growing with the table); `OFFSET 0` keeps the planner
        // from flattening the lateral subquery into that join.
        r#"
    ALTER TABLE tasks ADD COLUMN claimed_by text;
    CREATE INDEX tasks_claimed_at_insert ON tasks (endpoint, claimed_by, id)
        WHERE claimed_by IS NOT NULL;
    CREATE OR REPLACE VIEW task_rows AS
        SELECT t.id, t.owner, t.endpoint, t.function, t.args, t.timeout_ms,
               COALESCE(r.state, t.state) AS state, COALESCE(r.timeline, t.timeline) AS timeline,
               r.result, t.created, r.finished, t.cores, t.gpus, t.memory, t.nodes
        FROM tasks t LEFT JOIN LATERAL (
            SELECT state, timeline, result, finished FROM results WHERE results.id = t.id
            OFFSET 0) r ON true;
    "#,
    ),
    (
        8,
        // A submission's ids under its idempotency key (`ids`, 8 bytes a task) are written
        // in the submission's transaction. pglz, the default, compressed 30,000 ids (240 KB)
        // in 90 ms, longer than storing the tasks themselves; lz4 takes 10 ms. Servers built
        // without lz4 keep pglz; rows stored before keep theirs (both read back the same).
        r#"
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_settings
                   WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
            ALTER TABLE idempotency_keys ALTER COLUMN ids SET COMPRESSION lz4;
        END IF;
    END
    $$;
    "#,
    ),
];

/// The advisory lock that serializes migrations: gateways starting together on an empty
/// database do not both create the tables.
pub(super) const MIGRATION_LOCK: i64 = 0x6675_6e63_785f_6d69;
