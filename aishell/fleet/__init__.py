"""Fleet jobs on a queue: one job sent to many targets as one Celery task each, run by
workers on any machine that reaches the broker and the one state store.

What a task does is the commands layer's (`commands/fleet.py`), given to the worker
when it starts, as the scheduler is given its run; here are the queue (`app.py`), the
per-server slots that keep a host of fifty databases from being worked on fifty at a
time (`slots.py`) and the worker (`worker.py`). Imports config, state and the tool
registry (what a task carries of the tools it was sent with: `sending.py`), below it.
"""
