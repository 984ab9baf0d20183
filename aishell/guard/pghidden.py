"""The PostgreSQL catalog query of what makes a read write without naming a function
(hidden.py): the views, tables, operators, casts, types and domains that run a function
that may write, each with what it runs (a view, what it calls or reads: another such
view, a table whose policy runs one for a role the view may read it as).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aishell.guard.calls import (
    PG_MAY_WRITE,
    PG_TRUSTED,
    READ_ONLY_EXTENSIONS,
    READ_ONLY_VOLATILE,
    trust_parameters,
)
from aishell.guard.operators import exact_operators
from aishell.guard.pgcode import pg_catalog_relation, pg_stored_calls

# pg_catalog's relation, as pg_depend's classid holds it: short, for the query below.
_rel = pg_catalog_relation

# Objects a user made (an oid from 16384 on, FirstNormalObjectId: what initdb made is
# below) run these functions; those that may write (guardcalls.PG_MAY_WRITE), the
# operators that run one, and the views that run either, directly or through another
# view. Only user objects are read, so the lookup stays small whatever the catalog holds.
# A table's policies count only where they apply to the session's role: not to a
# superuser or a BYPASSRLS role, nor to the owner unless the table forces them.
# Every operator is the catalog's own, written exactly (exact_operators): an operator
# the database defines with an exact signature would otherwise beat pg_catalog's where
# that one needs an implicit cast (CVE-2018-1058), pg_catalog first on the path or not.
_USER = "'16384'::pg_catalog.oid"


# What the planner may evaluate of a table's definition (an index's expressions and
# predicate, a partition key, a statistics object's expressions, a check constraint for
# constraint exclusion) as it reads it for any statement naming the table: a call whose
# arguments hold no column, which it folds to a constant however they are wrapped
# (arrays, rows, CASE, named arguments, casts, other calls), and a SQL-language function
# wherever it is called, which it may inline and then fold what its body calls. The node
# tree is reduced from its innermost nodes out: a column (VAR) and every node holding
# one become a tab (which no node's text holds: outfuncs escapes whitespace in names),
# a node without one is dropped once looked at; a call of the function looked at, met
# while no tab is inside it, counts. A call that takes columns only, of a function in
# another language (lower_unaccent(name)), runs only as rows are written (usercode.py).
_TREE_PATTERNS = {
    "escaped": r"\\.",
    "var": r"[{]VAR [^{}]*[}]",
    "tab": "\t",
    "with_var": "[{][^{}]*\t[^{}]*[}]",
    "without_var": "[{][^{}\t]*[}]",
    "call_head": "[{][A-Z]+ [^{}\t]*:(op)?funcid ",
    "call_tail": " [^{}\t]*[}]",
    "node": "[{]",
}
_CALL_OF_FN = "(%(call_head)s || x.fn::pg_catalog.text || %(call_tail)s)"

PG_HIDDEN = f"""
WITH RECURSIVE {pg_stored_calls(_USER)}, run AS (
  SELECT pg_catalog.unnest(ARRAY[o.oprcode, o.oprrest, o.oprjoin]::pg_catalog.oid[]) AS fn
  FROM pg_catalog.pg_operator o WHERE o.oid >= {_USER}
  UNION SELECT c.castfunc FROM pg_catalog.pg_cast c WHERE c.oid >= {_USER}
  UNION SELECT pg_catalog.unnest(
    ARRAY[t.typinput, t.typoutput, t.typreceive, t.typsend]::pg_catalog.oid[])
  FROM pg_catalog.pg_type t
  WHERE t.oid >= {_USER} AND t.typtype = 'b'::pg_catalog.char
    AND t.typcategory <> 'A'::pg_catalog.char
  UNION SELECT pg_catalog.unnest(ARRAY[r.rngcanonical, r.rngsubdiff]::pg_catalog.oid[])
  FROM pg_catalog.pg_range r WHERE r.rngtypid >= {_USER}
  UNION SELECT a.amproc FROM pg_catalog.pg_amproc a WHERE a.oid >= {_USER}
  UNION SELECT t.fn FROM tree_calls t
  UNION SELECT d.refobjid FROM pg_catalog.pg_depend d
  WHERE d.classid = ANY (ARRAY[{_rel("pg_rewrite")}, {_rel("pg_policy")},
                              {_rel("pg_constraint")}, {_rel("pg_class")},
                              {_rel("pg_statistic_ext")}])
    AND d.objid >= {_USER} AND d.refclassid = {_rel("pg_proc")}
), writing AS (
  SELECT p.oid, n.nspname || '.' || p.proname || '()' AS shown FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE p.oid = ANY (SELECT fn FROM run)
    AND {PG_MAY_WRITE}
    AND NOT (p.proname = ANY(%(read_only)s::pg_catalog.name[]) AND {PG_TRUSTED})
), operators AS (
  SELECT o.oid, o.oprnamespace, o.oprname, p.proname FROM pg_catalog.pg_operator o
  JOIN pg_catalog.pg_proc p
    ON p.oid = ANY (ARRAY[o.oprcode, o.oprrest, o.oprjoin]::pg_catalog.oid[])
  WHERE o.oid >= {_USER} AND p.oid = ANY (SELECT oid FROM writing)
), candidate(oid, what, fn, tree) AS (
  SELECT x.oid, x.what, x.fn, x.tree FROM (
    SELECT COALESCE(i.indrelid, d.objid) AS oid, d.refobjid AS fn,
      CASE WHEN i.indrelid IS NULL THEN 'its partition key' ELSE 'its index ' || k.relname END
      AS what,
      COALESCE(i.indexprs::pg_catalog.text, '')
      || COALESCE(i.indpred::pg_catalog.text, '')
      || COALESCE(pt.partexprs::pg_catalog.text, '') AS tree
    FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class k ON k.oid = d.objid
    LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = d.objid
    LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = d.objid
    WHERE d.classid = {_rel("pg_class")} AND d.objid >= {_USER}
      AND d.refclassid = {_rel("pg_proc")}
    UNION ALL SELECT s.stxrelid, d.refobjid, 'its statistics ' || s.stxname,
      s.stxexprs::pg_catalog.text
    FROM pg_catalog.pg_statistic_ext s
    JOIN pg_catalog.pg_depend d ON d.classid = {_rel("pg_statistic_ext")}
      AND d.objid = s.oid AND d.refclassid = {_rel("pg_proc")}
    UNION ALL SELECT con.conrelid, d.refobjid, 'its check ' || con.conname,
      con.conbin::pg_catalog.text
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_depend d ON d.classid = {_rel("pg_constraint")}
      AND d.objid = con.oid AND d.refclassid = {_rel("pg_proc")}
    WHERE con.conrelid <> '0'::pg_catalog.oid
  ) x
  WHERE x.fn = ANY (SELECT oid FROM writing)
), fold(oid, what, fn, t, hit, depth) AS (
  SELECT x.oid, x.what, x.fn, s.t, EXISTS (
      SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
      WHERE p.oid = x.fn AND l.lanname = 'sql'::pg_catalog.name)
    OR s.t ~ {_CALL_OF_FN}, 0
  FROM candidate x, LATERAL (SELECT pg_catalog.regexp_replace(pg_catalog.regexp_replace(
    x.tree, %(escaped)s, '_', 'g'), %(var)s, %(tab)s, 'g') AS t) s
  UNION ALL
  SELECT x.oid, x.what, x.fn, s.t, s.t ~ {_CALL_OF_FN}, x.depth + 1
  FROM fold x, LATERAL (SELECT pg_catalog.regexp_replace(pg_catalog.regexp_replace(
    x.t, %(with_var)s, %(tab)s, 'g'), %(without_var)s, '', 'g') AS t) s
  WHERE NOT x.hit AND x.t ~ %(node)s AND x.depth < 10000
), planned(oid, what) AS (
  SELECT DISTINCT oid, what FROM fold WHERE hit
), ancestors(oid, what) AS (
  SELECT oid, what FROM planned
  UNION SELECT i.inhparent,
    'its partition or child ' || i.inhrelid::pg_catalog.regclass::pg_catalog.text
  FROM ancestors a JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.oid
), remote(oid, what) AS (
  -- A foreign table, and every table a read of which reads it: its partitioned and
  -- inherited parents.
  SELECT c.oid, ''::pg_catalog.text FROM pg_catalog.pg_class c
  WHERE c.relkind = 'f'::pg_catalog.char
  UNION SELECT i.inhparent,
    ' (its partition or child ' || i.inhrelid::pg_catalog.regclass::pg_catalog.text
    || ' is a foreign table)'
  FROM remote r JOIN pg_catalog.pg_inherits i ON i.inhrelid = r.oid
), reached AS (
  -- Each with what it runs (via), said of the views that reach it.
  SELECT {_rel("pg_proc")} AS classid, oid AS objid, false AS away, shown AS via FROM writing
  UNION ALL SELECT {_rel("pg_operator")}, oid, false, 'the operator ' || oprname || ' ('
    || proname || '())' FROM operators
  UNION ALL SELECT {_rel("pg_class")}, oid, false, 'the table '
    || oid::pg_catalog.regclass::pg_catalog.text || ' (' || what || ')' FROM ancestors
  UNION ALL SELECT {_rel("pg_class")}, oid, true, '' FROM remote
), policed(oid, via) AS (
  -- Tables with row security on whose policy runs what may write, each once, where the
  -- policy applies to a role a view may read them as: a view reads its tables as its
  -- owner, a security_invoker one as the session's role. Not to a superuser or a
  -- BYPASSRLS role, nor to the table's owner unless the table forces them.
  SELECT DISTINCT ON (c.oid) c.oid, 'the table '
    || c.oid::pg_catalog.regclass::pg_catalog.text || ' (policy ' || pol.polname || ')'
  FROM pg_catalog.pg_policy pol
  JOIN deps d ON d.classid = {_rel("pg_policy")} AND d.objid = pol.oid
  JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
  WHERE c.relrowsecurity AND EXISTS (
    SELECT 1 FROM reached x WHERE x.classid = d.refclassid AND x.objid = d.refobjid)
  AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_roles o
    WHERE (o.rolname = CURRENT_USER OR o.oid = ANY (
        SELECT v.relowner FROM pg_catalog.pg_class v
        WHERE v.relkind = 'v'::pg_catalog.char AND v.oid >= {_USER}))
      AND NOT (o.rolsuper OR o.rolbypassrls)
      AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(o.oid, c.relowner, 'USAGE')))
  ORDER BY c.oid, pol.polname
), views(oid, away, via) AS (
  SELECT r.ev_class, x.away, x.via FROM deps d
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  JOIN reached x ON x.classid = d.refclassid AND x.objid = d.refobjid
  WHERE d.classid = {_rel("pg_rewrite")}
  UNION
  -- A view reading such a table runs its policy.
  SELECT r.ev_class, false, p.via FROM deps d
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  JOIN policed p ON d.refclassid = {_rel("pg_class")} AND d.refobjid = p.oid
  WHERE d.classid = {_rel("pg_rewrite")}
  UNION
  SELECT r.ev_class, v.away, v.via FROM views v
  JOIN pg_catalog.pg_depend d ON d.refclassid = {_rel("pg_class")}
    AND d.refobjid = v.oid AND d.classid = {_rel("pg_rewrite")}
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
)
SELECT DISTINCT CASE WHEN v.away THEN 'remote view' ELSE 'view' END, c.relname,
  n.nspname || '.' || c.relname, v.via FROM views v
JOIN pg_catalog.pg_class c ON c.oid = v.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT 'table', c.relname, n.nspname || '.' || c.relname || ' (policy ' || pol.polname || ')',
  NULL
FROM pg_catalog.pg_policy pol
JOIN deps d ON d.classid = {_rel("pg_policy")} AND d.objid = pol.oid
JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relrowsecurity AND EXISTS (
    SELECT 1 FROM reached x WHERE x.classid = d.refclassid AND x.objid = d.refobjid)
  AND NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
           WHERE r.rolname = CURRENT_USER)
  AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(c.relowner, 'USAGE'))
UNION ALL
SELECT 'table', c.relname, n.nspname || '.' || c.relname || ' (' || a.what
  || ', which the planner may evaluate in any read of it)', NULL
FROM ancestors a JOIN pg_catalog.pg_class c ON c.oid = a.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT 'operator class', t.typname, f.opfname || ' for '
  || t.oid::pg_catalog.regtype::pg_catalog.text
  || ' (support function ' || a.amproc::pg_catalog.regproc::pg_catalog.text || ')', NULL
FROM pg_catalog.pg_amproc a JOIN pg_catalog.pg_opfamily f ON f.oid = a.amprocfamily
JOIN pg_catalog.pg_type t ON t.oid = a.amproclefttype
WHERE a.oid >= {_USER} AND a.amproc = ANY (SELECT oid FROM writing)
UNION ALL
SELECT 'range type', t.typname, t.oid::pg_catalog.regtype::pg_catalog.text, NULL
FROM pg_catalog.pg_range r
JOIN pg_catalog.pg_type t ON t.oid = r.rngtypid
WHERE r.rngtypid >= {_USER}
  AND ARRAY[r.rngcanonical, r.rngsubdiff]::pg_catalog.oid[] && ARRAY(SELECT oid FROM writing)
UNION ALL
SELECT 'operator', o.oprname, n.nspname || '.' || o.oprname || ' (' || o.proname || ')', NULL
FROM operators o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
UNION ALL
SELECT 'cast', (SELECT ct.typname FROM pg_catalog.pg_type ct WHERE ct.oid = c.casttarget),
  c.castsource::pg_catalog.regtype::pg_catalog.text || ' to '
  || c.casttarget::pg_catalog.regtype::pg_catalog.text, NULL
FROM pg_catalog.pg_cast c WHERE c.oid >= {_USER} AND c.castfunc = ANY (SELECT oid FROM writing)
UNION ALL
SELECT 'type', NULL, t.oid::pg_catalog.regtype::pg_catalog.text, NULL FROM pg_catalog.pg_type t
WHERE t.oid >= {_USER} AND t.typtype = 'b'::pg_catalog.char
  AND ARRAY[t.typinput, t.typoutput, t.typreceive, t.typsend]::pg_catalog.oid[]
      && ARRAY(SELECT oid FROM writing)
UNION ALL
SELECT 'domain', t.typname, t.oid::pg_catalog.regtype::pg_catalog.text
  || ' (check ' || con.conname || ')', NULL
FROM pg_catalog.pg_constraint con
JOIN deps d ON d.classid = {_rel("pg_constraint")} AND d.objid = con.oid
JOIN pg_catalog.pg_type t ON t.oid = con.contypid
WHERE con.oid >= {_USER} AND EXISTS (
    SELECT 1 FROM reached x WHERE x.classid = d.refclassid AND x.objid = d.refobjid)
UNION ALL
SELECT CASE WHEN r.what = '' THEN 'foreign table' ELSE 'foreign partition' END, c.relname,
  n.nspname || '.' || c.relname || r.what, NULL FROM remote r
JOIN pg_catalog.pg_class c ON c.oid = r.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"""
PG_HIDDEN = exact_operators(PG_HIDDEN)


def pg_hidden_parameters(trusted: Sequence[str]) -> dict[str, Any]:
    """PG_HIDDEN's parameters, `trusted` the target's trusted_functions."""
    return {
        "read_only": sorted(READ_ONLY_VOLATILE),
        "extensions": list(READ_ONLY_EXTENSIONS),
        **trust_parameters(trusted),
        **_TREE_PATTERNS,
    }
