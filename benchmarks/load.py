"""Driving load with ``wrk``: one Lua script for decisions and creates.

Every request gets its own body: a random seeded patient for a question
(about 70% of them find a consent, see ``seed.py``), a new ``w-`` patient
for a create. The script's ``done`` hook prints one ``WRK_RESULT`` JSON line
with the count, the duration, the errors and the p50/p99 latencies, so
nothing depends on wrk's human-readable output. Any non-2xx answer or
socket error fails the run: a benchmark of 401s or 429s measures nothing.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from seed import PRACTITIONERS

from consent_service.config import DEFAULT_CATEGORIES, DEFAULT_PURPOSES

WRK = "wrk"

_LUA = """
local mode = "%(mode)s"
local patients = %(patients)d
local practitioners = {%(practitioners)s}
local categories = {%(categories)s}
local purposes = {%(purposes)s}
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer %(token)s",
}
local next_id = 0
local counter = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

function init(args)
  math.randomseed(os.time() * 100 + (thread_id or 0))
end

local function pick(list)
  return list[math.random(#list)]
end

function request()
  local body
  if mode == "decide" then
    local i = math.random(0, patients - 1)
    local practitioner = practitioners[(i + math.random(0, 3)) %% #practitioners + 1]
    body = string.format(
      '{"patient_id":"p-%%07d","practitioner_id":"%%s","category":"%%s","purpose":"%%s"}',
      i, practitioner, pick(categories), pick(purposes))
  else
    counter = counter + 1
    body = string.format(
      '{"patient_id":"w-%%d-%%d-%%d","practitioner_id":"%%s","categories":["%%s"],' ..
      '"purposes":["%%s"],"decision":"permit","collection":{"method":"partner-api"}}',
      thread_id or 0, os.time(), counter, pick(practitioners), pick(categories), pick(purposes))
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_RESULT {"requests":%%d,"duration_us":%%d,"status":%%d,"connect":%%d,' ..
    '"read":%%d,"write":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Result:
    """One wrk run: throughput and latency percentiles."""

    per_second: float
    p50_ms: float
    p99_ms: float


class LoadError(RuntimeError):
    """wrk failed, or the server answered something other than 2xx."""


def write_script(path: Path, *, mode: str, patients: int, token: str) -> Path:
    """The Lua script for ``mode`` (``decide`` or ``create``) at ``path``."""

    def lua_list(values: tuple[str, ...]) -> str:
        return ", ".join(f'"{value}"' for value in values)

    path.write_text(
        _LUA
        % {
            "mode": mode,
            "patients": patients,
            "practitioners": lua_list(PRACTITIONERS),
            "categories": lua_list(DEFAULT_CATEGORIES),
            "purposes": lua_list(DEFAULT_PURPOSES),
            "token": token,
        }
    )
    return path


def run(url: str, script: Path, *, seconds: float, threads: int, connections: int) -> Result:
    """Load ``url`` for ``seconds`` and return what wrk measured."""
    command = [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if done.returncode != 0 or not lines:
        raise LoadError(f"wrk failed on {url}: {done.stdout[-500:]} {done.stderr[-500:]}")
    figures = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    errors = {k: figures[k] for k in ("status", "connect", "read", "write", "timeout")}
    if any(errors.values()) or not figures["requests"]:
        raise LoadError(f"{url}: {figures['requests']} requests with errors {errors}")
    return Result(
        per_second=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
    )
