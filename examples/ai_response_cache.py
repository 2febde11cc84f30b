"""An app calling a hosted LLM, with and without a response cache: the SCI includes the calls.

A fake LLM server (OpenAI's Chat Completions shape, loopback, port 0) stands in for
the provider. The same workload (60 requests asking 12 distinct questions, one LLM call
each) runs twice: every request calling the model, then with answers kept in a cache.
The app reports its requests (``sci.client.count``) and its calls
(``sci.client.call``, cache hits marked) to an in-process sci-agent, whose cycle
measures the local part on this host and estimates the remote part with EcoLogits
(``pip install 'sci-agent[ai]'``) as if the calls had gone to OpenAI's gpt-4o-mini.

    PYTHONPATH=. python examples/ai_response_cache.py

The fake provider runs in this process, so its (small) work shows in the local part;
a real provider's would not. Its answers come back in about a millisecond, so the
latencies passed to EcoLogits are the fake's: a real provider's take seconds.
"""

from __future__ import annotations

import json
import time
import urllib.request

from agent.config import AppRule, Config, GridConfig, HttpConfig, StoreConfig
from agent.records import IntervalResult
from agent.remote.fake_provider import FakeProvider, fake_provider
from agent.runtime import Agent
from sci import humanize
from sci.client import CallsClient, UnitsClient

APP = "chatbot"
MODEL = "gpt-4o-mini"
QUESTIONS = [f"what is the answer to question {i % 12}?" for i in range(60)]


def ask(llm: FakeProvider, question: str) -> tuple[str, dict[str, int], float]:
    """One chat completion: the answer, its token usage and the latency."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": question}]})
    request = urllib.request.Request(
        llm.url + "/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer = json.load(reply)
    return answer["choices"][0]["message"]["content"], answer["usage"], time.perf_counter() - start


def workload(llm: FakeProvider, agent_url: str, cache: bool) -> None:
    """Serve every question; report each request and each call to the agent."""
    units, calls = UnitsClient(agent_url), CallsClient(agent_url)
    kept: dict[str, str] = {}
    for question in QUESTIONS:
        if cache and question in kept:
            calls.call(APP, "openai", MODEL, 12, 200, cached=True)
        else:
            text, usage, latency = ask(llm, question)
            kept[question] = text
            calls.call(
                APP, "openai", MODEL, usage["prompt_tokens"], usage["completion_tokens"], latency
            )
        units.count(APP, "request")
    units.close()
    calls.close()


def show(name: str, result: IntervalResult) -> float:
    row = next(s for s in result.sci if s.app == APP)
    remote = sum(r.carbon_g for r in result.remote)
    hits = sum(r.cached_calls for r in result.remote)
    local = row.operational_g + row.embodied_g
    print(
        f"{name:<14} {row.units:>8.0f} {hits:>10.0f}"
        f" {humanize.grams(local / row.units):>14} {humanize.grams(remote / row.units):>14}"
        f" {humanize.grams(row.sci or 0.0):>14}"
    )
    return row.sci or 0.0


def main() -> None:
    config = Config(
        host="example",
        http=HttpConfig(listen="127.0.0.1:0"),
        store=StoreConfig(enabled=False),
        grid=GridConfig(zone="FR"),
        apps=(AppRule(name=APP, cmdline="ai_response_cache", unit="request"),),
    )
    agent = Agent(config)
    agent.start()
    try:
        agent.measure()  # the baseline
        scores = {}
        with fake_provider(output_tokens=200) as llm:
            print(f"{len(QUESTIONS)} requests, {len(set(QUESTIONS))} distinct questions\n")
            print(
                f"{'client':<14} {'requests':>8} {'cache hits':>10} {'local/request':>14}"
                f" {'remote/request':>14} {'SCI/request':>14}"
            )
            for name, cache in (("no cache", False), ("response cache", True)):
                workload(llm, agent.api.url if agent.api else "", cache)
                scores[name] = show(name, agent.measure())
            print(f"\nprovider requests served: {llm.requests} (60 without the cache, then 12)")
    finally:
        agent.stop()
    plain, cached = scores["no cache"], scores["response cache"]
    print(f"SCI per request with the cache: {cached / plain:.0%} of the uncached one's")


if __name__ == "__main__":
    main()
