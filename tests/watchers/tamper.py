"""A fault-injecting httpx transport in front of a real local chain server.

Forwards every request to the real server and, for the first `times` answers whose path
matches a rule, rewrites the JSON body with the rule's `edit` function: how the tests make a
node serve inconsistent answers (a tx missing from a block page, a parent hash that does not
match, a tx claimed by another block) without changing the chain itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Rule:
    path_pattern: str
    edit: Callable[[Any], Any]
    times: int
    hits: int = 0

    def take(self, path: str) -> bool:
        if self.hits >= self.times or re.search(self.path_pattern, path) is None:
            return False
        self.hits += 1
        return True


class TamperingTransport(httpx.AsyncBaseTransport):
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        for rule in self.rules:
            if response.status_code == 200 and rule.take(request.url.path):
                body = await response.aread()
                await response.aclose()
                edited = json.dumps(rule.edit(json.loads(body))).encode()
                return httpx.Response(200, content=edited, headers={"content-type": "application/json"},
                                      request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
