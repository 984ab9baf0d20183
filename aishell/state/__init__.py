"""The state store (state.db): runs, steps, events, approvals, backups, schedules,
target locks and the scratch ledger, with its schema history in migrations/, the key
that signs plans (signing) and the scheduler's advisory lock on a store on PostgreSQL
(scheduler_lock), and the runs list read from a SQLite store with the standard library
alone (runlist). May import targets, config and the vocabularies.
"""
