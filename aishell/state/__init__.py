"""The state store (state.db): runs, steps, events, approvals, backups, schedules,
target locks and the scratch ledger, with its schema history in migrations/ and the
key that signs plans (signing). May import targets, config and the vocabularies.
"""
