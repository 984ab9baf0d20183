"""Which PostgreSQL functions are code the catalog cannot vouch for, as SQL conditions.

The guard asks the server's catalog what a statement, a view, an index or a trigger runs.
Two kinds of function there are not what they seem: an extension's member that its
owner added to it (membership proves nothing of its code), and the catalog's own
functions that run what they are given at run time, which no dependency records.
"""

from __future__ import annotations

from aishell.guard.sidefunctions import PG_CODE_OF_ITS_OWN

# The catalog's functions that are code of their own, as the parameter `own` binds them
# (as words of aishell's own query the names would read as calls of them).
PG_OWN_CODE_PARAMETER = {"own": sorted(PG_CODE_OF_ITS_OWN)}


def pg_catalog_relation(name: str) -> str:
    """SQL: the oid of pg_catalog's relation `name` (a constant of aishell's own), as
    pg_depend's classid and refclassid hold it."""
    return f"'pg_catalog.{name}'::pg_catalog.regclass::pg_catalog.oid"


def pg_extension_code(fn: str = "p", owner: str = "proowner", catalog: str = "pg_proc") -> str:
    """SQL: whether the object `fn` (a function, or with `owner` and `catalog` another
    object of an extension: an operator class) belongs to an installed extension as its
    script made it: a member owned by a superuser. An extension's owner may add an
    object of their own to it (ALTER EXTENSION ... ADD FUNCTION), and a trusted
    extension is owned by whoever created it, so membership alone is no proof; its
    script's objects are owned by the superuser that ran it."""
    return (
        "(EXISTS (SELECT 1 FROM pg_catalog.pg_depend x"
        f" WHERE x.classid OPERATOR(pg_catalog.=) {pg_catalog_relation(catalog)}"
        f" AND x.objid OPERATOR(pg_catalog.=) {fn}.oid AND x.deptype = 'e')"
        " AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r"
        f" WHERE r.oid OPERATOR(pg_catalog.=) {fn}.{owner} AND r.rolsuper))"
    )


def pg_type_part(fn: str = "p") -> str:
    """SQL: whether the function `fn` is one the server made as CREATE TYPE ran, the
    type's own: a range's and a multirange's constructors. The server writes them in
    language internal and records each as an internal part of its type (pg_depend,
    deptype 'i', from pg_proc to pg_type), which no user's statement records; a CREATE
    OR REPLACE of one drops that record, so a body a user wrote there is no part. A base
    type's I/O functions are not parts (the type depends on them, not they on it): a
    user wrote them. Nor is a range's subtype_diff or canonical function."""
    return (
        "(EXISTS (SELECT 1 FROM pg_catalog.pg_depend x"
        f" WHERE x.classid OPERATOR(pg_catalog.=) {pg_catalog_relation('pg_proc')}"
        f" AND x.objid OPERATOR(pg_catalog.=) {fn}.oid"
        f" AND x.refclassid OPERATOR(pg_catalog.=) {pg_catalog_relation('pg_type')}"
        " AND x.deptype = 'i')"
        " AND EXISTS (SELECT 1 FROM pg_catalog.pg_language l"
        f" WHERE l.oid OPERATOR(pg_catalog.=) {fn}.prolang AND l.lanname = 'internal'))"
    )


def pg_catalog_function(listed: str, fn: str = "p", namespace: str = "n") -> str:
    """SQL: whether the function `fn` (its schema `namespace`) is the catalog's own of the
    names `listed` (SQL of a bound name[]: the names as words of aishell's own query would
    read as calls of them), ts_rewrite only of two arguments (its other form runs
    nothing given)."""
    return (
        f"({namespace}.nspname = 'pg_catalog' AND {fn}.proname = ANY ({listed}) "
        f"AND ({fn}.proname <> 'ts_rewrite' OR {fn}.pronargs = 2))"
    )


def pg_user_code(fn: str = "p", namespace: str = "n") -> str:
    """SQL: whether the function `fn` (its schema `namespace`) is code the catalog cannot
    vouch for: the database's own (not the catalog's, not information_schema's, not an
    installed extension's as its script made it, not a part the server made of a type),
    or one of the catalog's that is code of its own (PG_CODE_OF_ITS_OWN; the query binds
    PG_OWN_CODE_PARAMETER)."""
    return (
        f"(({namespace}.nspname <> ALL ('{{pg_catalog,information_schema}}') "
        f"AND NOT {pg_extension_code(fn)} AND NOT {pg_type_part(fn)}) "
        f"OR {pg_catalog_function('CAST(:own AS pg_catalog.name[])', fn, namespace)})"
    )


# A call in a stored expression's node tree (a view's rule, a policy, a check, a default,
# an index expression), as its text shows it: `:funcid N`. The server records no
# dependency on its catalog's own functions, so only the tree tells that a view calls
# pg_terminate_backend(). An operator, aggregate or window function the catalog defines
# calls none of PG_CODE_OF_ITS_OWN, and one a user defines is recorded. A name in the
# tree has its white space escaped, so no name reads as a call. Split as text, not
# matched by a regular expression: a tenth of the time over a catalog of 10,000 tables.
def pg_tree_calls(tree: str) -> str:
    """SQL: the functions (column fn) the node tree text `tree` calls by :funcid."""
    return (
        "(SELECT pg_catalog.substring(p, '^[0-9]+')::pg_catalog.oid AS fn "
        # The mark spelled in two, so that no driver's text takes :funcid for a parameter.
        f"FROM pg_catalog.unnest((pg_catalog.string_to_array({tree}, "
        "':' OPERATOR(pg_catalog.||) 'funcid '))[2:]) AS p)"
    )


def pg_stored_calls(user: str) -> str:
    """SQL: two CTEs. tree_calls(classid, objid, fn): what the views, policies and domain
    checks of objects from oid `user` on call of the catalog's own functions, read from
    their node trees; deps(classid, objid, refclassid, refobjid): every call of theirs,
    pg_depend's (of functions a user made) and those."""
    rel = pg_catalog_relation
    return f"""tree_calls(classid, objid, fn) AS (
  -- What user views, policies and domain checks call of the catalog's own functions,
  -- which pg_depend does not record: read from their node trees.
  SELECT x.classid, x.objid, c.fn FROM (
    SELECT {rel("pg_rewrite")} AS classid, r.oid AS objid,
      r.ev_action::pg_catalog.text || COALESCE(r.ev_qual::pg_catalog.text, '') AS tree
    FROM pg_catalog.pg_rewrite r WHERE r.oid >= {user}
    UNION ALL SELECT {rel("pg_policy")}, p.oid, COALESCE(p.polqual::pg_catalog.text, '')
      || COALESCE(p.polwithcheck::pg_catalog.text, '')
    FROM pg_catalog.pg_policy p WHERE p.oid >= {user}
    UNION ALL SELECT {rel("pg_constraint")}, k.oid, k.conbin::pg_catalog.text
    FROM pg_catalog.pg_constraint k
    WHERE k.oid >= {user} AND k.contypid <> '0'::pg_catalog.oid AND k.conbin IS NOT NULL
  ) x CROSS JOIN LATERAL {pg_tree_calls("x.tree")} c
  WHERE c.fn < {user}
), deps(classid, objid, refclassid, refobjid) AS (
  -- Their calls as pg_depend shows them (of functions a user made), and those.
  SELECT d.classid, d.objid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d
  WHERE d.classid = ANY (ARRAY[{rel("pg_rewrite")}, {rel("pg_policy")},
                              {rel("pg_constraint")}])
    AND d.objid >= {user}
  UNION ALL SELECT t.classid, t.objid, {rel("pg_proc")}, t.fn FROM tree_calls t
)"""
