"""One view of many databases: per configured target its last run, what waits for a
person's approval, the age of its newest restore-proven backup and its next scheduled
job (status.py, one query per aspect for every target), and the read-only web pages
`aishell serve --http` serves over them (web.py, pages.py, access.py, serve.py, with
Jinja2 templates). It imports scheduling, state, config and the vocabularies; nothing
here writes to the state store.
"""
