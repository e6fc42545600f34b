"""robots.txt for the crawler: RFC 9309's rules, and the Crawl-delay a site asks of crawlers.

RFC 9309 leaves Crawl-delay out, but it is the rate a site asks for, and polite crawlers (Common Crawl's CCBot
among them) honour it. Python's RobotFileParser reads only whole seconds ("Crawl-delay: 0.5" is dropped), so a
fraction is rounded up before parsing: that errs on the polite side.
"""
from __future__ import annotations

import math
import re
from urllib.robotparser import RobotFileParser

ROBOTS_MAX_BYTES = 512_000  # RFC 9309: crawlers must parse at least the first 500 KiB
_FRACTIONAL_DELAY = re.compile(r"^(\s*crawl-delay\s*:\s*)(\d*\.\d+)", re.IGNORECASE)


def robots_rules(reason: str, status: int, body: bytes) -> RobotFileParser:
    """RFC 9309: parse a 2xx; a 4xx means no rules; a 5xx or no answer means disallow everything, and the
    rules then carry `unreachable` (the robots.txt outcome) so a blocked page can say why."""
    rules = RobotFileParser()
    rules.unreachable = ""
    if reason == "ok":
        lines = body.decode("utf-8", errors="replace").splitlines()
        rules.parse([_FRACTIONAL_DELAY.sub(lambda m: m[1] + str(math.ceil(float(m[2]))), line) for line in lines])
    elif 400 <= status < 500:
        rules.allow_all = True
    else:
        rules.disallow_all = True
        rules.unreachable = reason if reason != "ok" and not status else f"http_{status}"
    return rules


def crawl_delay(rules: RobotFileParser | None, user_agent: str) -> float:
    """Seconds the rules ask between two requests of `user_agent`: 0 when they ask none or there are none yet."""
    delay = rules.crawl_delay(user_agent) if rules is not None else None
    return float(delay) if delay else 0.0
