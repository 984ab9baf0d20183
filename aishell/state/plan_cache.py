"""Plans a model drafted and the validator accepted, kept so that the same request
on the same catalog does not ask the model again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from aishell.state.core import StoreCore
from aishell.state.schema import plan_cache
from aishell.state.values import dumps, loads, now


class PlanCache(StoreCore):
    """Drafted plans by cache key."""

    def cached_plan(self, cache_key: str) -> dict[str, Any] | None:
        """A model's accepted answer for this key, counted as used; None when absent."""
        with self._tx() as conn:
            row = conn.execute(
                select(plan_cache.c.answer).where(plan_cache.c.cache_key == cache_key)
            ).first()
            if row is None:
                return None
            conn.execute(
                update(plan_cache)
                .where(plan_cache.c.cache_key == cache_key)
                .values(used_at=now(), uses=plan_cache.c.uses + 1)
            )
        cached: dict[str, Any] | None = loads(row[0])
        return cached

    def cache_plan(self, cache_key: str, answer: dict[str, Any], **about: Any) -> None:
        """Keep an accepted answer; `about` holds target, agent, model, request and
        catalog_fingerprint."""
        stamp = now()
        with self._tx() as conn:
            conn.execute(delete(plan_cache).where(plan_cache.c.cache_key == cache_key))
            conn.execute(
                insert(plan_cache).values(
                    cache_key=cache_key,
                    answer=dumps(answer),
                    created_at=stamp,
                    used_at=stamp,
                    uses=0,
                    **about,
                )
            )

    def forget_plans(self, target: str | None = None) -> int:
        """Drop cached drafts (of one target, or all); how many were dropped."""
        query = delete(plan_cache)
        if target is not None:
            query = query.where(plan_cache.c.target == target)
        with self._tx() as conn:
            return conn.execute(query).rowcount or 0
