"""Connections to the databases aishell maintains: engines, session guards, catalog checks.

By subject: engines (opening a target, its session guards), limits (how long a
connection waits for the server), deadlines (a step's time limit, cancelling a
statement), locks (run locks), access (read-only sessions), transient (errors worth a
retry), identity (which database a connection reaches), catalog and tables (what a
target's catalog holds), lockholders (who holds a lock). May import config and the
vocabularies only.
"""
