"""The model planner: a local model through Ollama drafts, the validator disposes.

A draft that fails validation goes back to the model with every reason, up to
`planner.llm.tries` times. Accepted drafts are cached in the state store by request,
catalog fingerprint and model, and checked again whenever they are used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aishell.config.llm import LlmPlannerConfig
from aishell.config.numbers import FloatRangeLost, json_float
from aishell.errors import DraftRejected, PlannerUnavailable
from aishell.plan.model import listed
from aishell.planners import Draft, DraftRequest
from aishell.planners.ollama import OllamaChat, shown_host
from aishell.planners.prompt import (
    answer_schema,
    cache_key,
    messages,
    offered_tools,
    rejection,
    tokens_needed,
)
from aishell.planners.vet import CatalogView, Vetted, vet_answer
from aishell.registry import Registry
from aishell.state.store import StateStore

# Told what the planner is waiting for (None: nothing any more), for a spinner.
Notice = Callable[[str | None], None]
# Levels an answer may nest (a plan's params, its steps, the answer): a plan's params
# are names, numbers and short lists, and the code that checks, shows, hashes and runs
# a plan walks them by recursion, which a few hundred levels would exhaust.
MAX_NESTING = 32


class LlmPlanner:
    def __init__(
        self,
        settings: LlmPlannerConfig,
        registry: Registry,
        store: StateStore | None = None,
        chat_factory: Callable[[LlmPlannerConfig], OllamaChat] = OllamaChat,
        notice: Notice | None = None,
    ) -> None:
        self.settings = settings
        self._notice = notice or (lambda _text: None)
        self.registry = registry
        self.store = store if settings.cache else None
        self._chat_factory = chat_factory

    def draft(self, request: DraftRequest) -> Draft:
        tools_by_agent = offered_tools(self.registry, request.dialect, request.agents)
        key = cache_key(
            request.text,
            request.catalog,
            self.settings.model,
            request.target,
            tools_by_agent,
            self.registry,
        )
        about = {"planner": "llm", "model": self.settings.model, "request": request.text}
        cached = self._cached(key, request, about, tools_by_agent)
        if cached is not None:
            return cached
        chat = self._chat_factory(self.settings)
        try:
            self._notice(f"Reaching the model {self.settings.model} at {shown_host(chat.host)}")
            chat.check_model()
            return self._converse(chat, request, tools_by_agent, key, about)
        finally:
            self._notice(None)
            chat.close()

    def _converse(
        self,
        chat: OllamaChat,
        request: DraftRequest,
        tools_by_agent: dict[str, list[str]],
        key: str,
        about: dict[str, Any],
    ) -> Draft:
        """Drafts until one passes validation, each rejected one sent back with its reasons;
        the accepted draft is cached. All rejected: DraftRejected with every reason."""
        conversation = messages(
            request.text,
            target=request.target,
            environment=request.environment,
            catalog=request.catalog,
            registry=self.registry,
            tools_by_agent=tools_by_agent,
            folders=request.folders,
        )
        schema = answer_schema(tools_by_agent)
        rejected: list[list[str]] = []
        for attempt in range(1, self.settings.tries + 1):
            self._notice(
                f"The model {self.settings.model} is drafting a plan "
                f"(draft {attempt} of at most {self.settings.tries})"
            )
            if not self._fits(conversation, first=not rejected):
                break  # no room to send the reasons back: the drafts so far stand
            content = chat.chat(conversation, schema)
            answer, vetted = self._read(content, request, tools_by_agent)
            if vetted.accepted and vetted.agent is not None:
                self._keep(key, answer, vetted.agent, request)
                facts = {**about, "cached": False, "summary": vetted.summary}
                facts.update(drafts=len(rejected) + 1, rejected=rejected)
                return Draft(vetted.agent, vetted.steps, facts)
            problems = vetted.problems or ["the plan has no steps"]
            rejected.append(problems)
            conversation += [{"role": "assistant", "content": content}, rejection(problems)]
        raise DraftRejected(
            f"The model {self.settings.model!r} drafted {len(rejected)} plan(s) and each "
            f"failed validation; the last because: {listed(rejected[-1])}",
            rejected,
        )

    def _keep(self, key: str, answer: Any, agent: str, request: DraftRequest) -> None:
        """An accepted draft into the plan cache, when the cache is on."""
        if self.store is None:
            return
        self.store.cache_plan(
            key,
            answer,
            target=request.target,
            agent=agent,
            model=self.settings.model,
            request=request.text,
            catalog_fingerprint=request.catalog.fingerprint,
        )

    def _cached(
        self,
        key: str,
        request: DraftRequest,
        about: dict[str, Any],
        tools_by_agent: dict[str, list[str]],
    ) -> Draft | None:
        """A plan drafted before for the same request, catalog and tools, if it still
        passes every check."""
        cached = self.store.cached_plan(key) if self.store is not None else None
        if cached is None:
            return None
        vetted = self._vet(cached, request, tools_by_agent)
        if not vetted.accepted or vetted.agent is None:
            return None
        facts = {**about, "cached": True, "summary": vetted.summary, "drafts": 0}
        return Draft(vetted.agent, vetted.steps, facts)

    def _fits(self, conversation: list[dict[str, str]], *, first: bool) -> bool:
        """Whether the conversation fits the model's context. The first draft must:
        Ollama would drop the start of the prompt (the rules) to make it fit."""
        needed = tokens_needed(conversation)
        if needed <= self.settings.context_tokens:
            return True
        if not first:
            return False
        raise PlannerUnavailable(
            f"The request needs about {needed} tokens of context, more than "
            f"planner.llm.context_tokens ({self.settings.context_tokens}); raise "
            "it (the model must support it) or name fewer tables"
        )

    def _read(
        self, content: str, request: DraftRequest, tools_by_agent: dict[str, list[str]]
    ) -> tuple[Any, Vetted]:
        if not content.strip():
            return None, Vetted(None, problems=["the answer is empty"])
        try:
            answer = json.loads(content, parse_float=json_float)
        except FloatRangeLost as exc:
            return None, Vetted(None, problems=[f"the answer holds a number no float holds: {exc}"])
        except json.JSONDecodeError as exc:
            return None, Vetted(
                None,
                problems=[
                    f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} "
                    f"column {exc.colno})"
                ],
            )
        except (ValueError, RecursionError):  # an integer past int()'s digits, deep nesting
            return None, Vetted(None, problems=["the answer is not JSON a plan can be read from"])
        return answer, self._vet(answer, request, tools_by_agent)

    def _vet(
        self, answer: Any, request: DraftRequest, tools_by_agent: dict[str, list[str]]
    ) -> Vetted:
        if _deeper_than(answer, MAX_NESTING):
            return Vetted(None, problems=[f"the answer nests deeper than {MAX_NESTING} levels"])
        vetted = vet_answer(
            answer,
            agents=request.agents,
            registry=self.registry,
            dialect=request.dialect,
            target=request.target,
            catalog=CatalogView(
                tables=request.catalog.names,
                columns_of=request.columns_of,
                scope=request.scope,
                folders=request.folders,
                private=request.private,
                limits=request.limits,
            ),
            max_steps=self.settings.max_steps,
        )
        # The agent then plans only what it was offered (commands/planner.py refuses the
        # rest): a draft refused there must go back to the model, and never be cached.
        offered = tools_by_agent.get(vetted.agent or "", [])
        beyond = sorted({s.tool for s in vetted.steps} - set(offered)) if vetted.agent else []
        if beyond:
            vetted.problems.append(
                f"the {vetted.agent} agent may plan only: {', '.join(offered) or 'no tool'}; "
                f"not {', '.join(beyond)}"
            )
        return vetted


def _deeper_than(value: Any, most: int) -> bool:
    """Whether JSON data nests more than `most` levels (a scalar is one), level by level
    rather than by recursion."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > most:
            return True
        level = [
            item
            for each in level
            if isinstance(each, dict | list)
            for item in (each.values() if isinstance(each, dict) else each)
        ]
    return False
