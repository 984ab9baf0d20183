"""APScheduler's jobs in the state store, each signed with the home's key.

APScheduler keeps a job as a pickle, and reading a pickle runs whatever code it names:
anyone who can write to the state store (a fleet's shared PostgreSQL store, whose login
every machine holds; a SQLite state.db another user can write) could otherwise run code
on every machine that serves the schedules or lists them. So each job's pickle is stored
behind an HMAC (the home's plan-signing key, aishell/state/signing.py) over the job's id
and its bytes, and no pickle is read before its HMAC is checked. A job stored without one
(by an older aishell, or outside aishell), with another home's key or changed since is
never read: serve removes it, says so in its log, and makes it again from its schedule
(whose own row is signed: state/seals.py); a listing leaves it and shows the schedule's
next run as its cron says.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import and_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from aishell.state.signing import SigningKey

# What a signed job's stored state begins with: this, the key id, a space, the HMAC in
# hex and a newline; the pickle follows.
SIGNED = b"aishell-signed-job 1 "

# The serve log's own: these are its lines.
logger = logging.getLogger("aishell.scheduling.serve")


class JobUnsigned(Exception):
    """A stored job whose state this home's key did not sign as it is."""


class SignedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """SQLAlchemyJobStore whose rows are signed as they are written and checked before
    they are read. `removes`: a refused row is deleted (serve, which makes the job again);
    else it is left (a listing, which writes nothing)."""

    def __init__(
        self, key: SigningKey | None, *, engine: Engine, tablename: str, removes: bool
    ) -> None:
        super().__init__(engine=engine, tablename=tablename)
        self._key = key
        self._removes = removes

    def add_job(self, job: Job) -> None:
        row = {
            "id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": self._signed(job),
        }
        with self.engine.begin() as connection:
            try:
                connection.execute(self.jobs_t.insert().values(**row))
            except IntegrityError:
                raise ConflictingIdError(job.id) from None

    def update_job(self, job: Job) -> None:
        changed = {
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": self._signed(job),
        }
        with self.engine.begin() as connection:
            found = connection.execute(
                self.jobs_t.update().values(**changed).where(self.jobs_t.c.id == job.id)
            )
            if found.rowcount == 0:
                raise JobLookupError(job.id)

    def lookup_job(self, job_id: str) -> Job | None:
        jobs = self._get_jobs(self.jobs_t.c.id == job_id)
        return jobs[0] if jobs else None

    def _get_jobs(self, *conditions: Any) -> list[Job]:
        query = select(self.jobs_t.c.id, self.jobs_t.c.job_state).order_by(
            self.jobs_t.c.next_run_time
        )
        query = query.where(and_(*conditions)) if conditions else query
        jobs, refused = [], []
        with self.engine.begin() as connection:
            for row in connection.execute(query):
                try:
                    payload = self._checked(row.id, row.job_state)
                except JobUnsigned as exc:
                    refused.append(row.id)
                    self._said(row.id, str(exc))
                    continue
                jobs.append(SQLAlchemyJobStore._reconstitute_job(self, payload))
            if refused and self._removes:
                connection.execute(self.jobs_t.delete().where(self.jobs_t.c.id.in_(refused)))
        return jobs

    def _reconstitute_job(self, job_state: bytes) -> Job:
        # Every read goes through _get_jobs, which checks the signature first.
        raise JobUnsigned("a stored job is read only with its id and signature checked")

    def _signed(self, job: Job) -> bytes:
        if self._key is None:
            raise JobUnsigned("this home has no signing key: no job can be stored")
        payload = pickle.dumps(job.__getstate__(), self.pickle_protocol)
        head = f"{self._key.key_id} {job_mac(self._key, job.id, payload)}\n".encode()
        return SIGNED + head + payload

    def _checked(self, job_id: str, stored: bytes) -> bytes:
        """The pickle of a stored job whose signature this home's key made for it."""
        if self._key is None:
            raise JobUnsigned("this home has no signing key to check it with")
        if not bytes(stored).startswith(SIGNED):
            raise JobUnsigned("it carries no signature (stored by an older aishell, or outside)")
        head, _, payload = bytes(stored)[len(SIGNED) :].partition(b"\n")
        signed_by, _, mac = head.decode("ascii", "replace").partition(" ")
        if signed_by != self._key.key_id:
            raise JobUnsigned(f"it is signed by another key ({signed_by[:16]}), not this home's")
        if not hmac.compare_digest(mac.encode(), job_mac(self._key, job_id, payload).encode()):
            raise JobUnsigned("it does not match its signature: it was changed outside aishell")
        return payload

    def _said(self, job_id: str, why: str) -> None:
        done = "removed; serve makes it again from its schedule" if self._removes else "left"
        logger.warning(
            "schedule %s: its job in the state store's %s table is not read: %s; %s",
            job_id,
            self.jobs_t.name,
            why,
            done,
        )


def job_mac(key: SigningKey, job_id: str, payload: bytes) -> str:
    """The HMAC of a job's pickle, bound to the job's id (a row copied under another
    schedule's name does not match)."""
    body = b"apscheduler-job\x00" + job_id.encode("utf-8") + b"\x00" + payload
    return hmac.new(key.secret, body, hashlib.sha256).hexdigest()
