"""How many screens one inference server can keep writing at the configured pacing.

Each of N clients writes passes from the server, flat out, as N pieces' model processes
would, for a while; tokens/s per client and in all, and the screens that total sustains.

    permanent bench server [--clients 1,2,4] [--seconds 30]
"""

from __future__ import annotations

import dataclasses
import threading
import time

from ..config import Config


def server_load(config: Config, clients: int, seconds: float) -> dict:
    from ..model.server.generator import ServerGenerator

    generators = [ServerGenerator(config.model, dataclasses.replace(config.text, seed=i))
                  for i in range(clients)]
    generators[0].probe()
    faults: list[str] = []
    deadline = time.monotonic() + seconds

    def write(generator):
        pass_id = 0
        while time.monotonic() < deadline:
            for _ in generator.write_pass(pass_id):
                pass
            pass_id += 1
            if generator.fault is not None:
                faults.append(str(generator.fault))
                return

    started = time.monotonic()
    threads = [threading.Thread(target=write, args=(g,)) for g in generators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    rates = [g.tokens_sampled / took for g in generators]
    need = config.pacing.tokens_per_second
    return dict(clients=clients, seconds=round(took, 1),
                tokens_per_second_each=[round(r, 1) for r in rates],
                tokens_per_second_total=round(sum(rates), 1),
                pacing_tokens_per_second=need,
                slowest_keeps_pace=min(rates) >= need,
                screens_sustained=int(sum(rates) // need), faults=faults)


def print_load(result: dict) -> None:
    each = ", ".join(f"{r:.1f}" for r in result["tokens_per_second_each"])
    print(f"{result['clients']} at once: {result['tokens_per_second_total']:.1f} tokens/s in "
          f"all ({each} each) over {result['seconds']} s; at "
          f"{result['pacing_tokens_per_second']} tokens/s a screen, it sustains "
          f"{result['screens_sustained']} screens"
          + ("" if result["slowest_keeps_pace"] else " (the slowest client fell behind)")
          + (f"; faults: {'; '.join(result['faults'])}" if result["faults"] else ""))
