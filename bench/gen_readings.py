#!/usr/bin/env python3
"""Writes N readings as NDJSON to stdout: MACHINES machines, one reading per machine per second
(from 2026-11-01T00:00:00Z), three numeric parameters and a state each.

    bench/gen_readings.py N [MACHINES]
"""
import sys

n = int(sys.argv[1])
machines = int(sys.argv[2]) if len(sys.argv) > 2 else 10
t0 = 1_793_491_200  # 2026-11-01T00:00:00Z
out = sys.stdout
states = ("RUNNING", "RUNNING", "RUNNING", "PAUSED")
buf = []
for i in range(n):
    m, s = i % machines, i // machines
    buf.append(
        f'{{"machine_id":"m{m:03}","timestamp":{t0 + s},"temperature":{60 + (i * 7 % 200) / 10},'
        f'"speed":{1400 + i % 97},"vibration":{(i * 13 % 1000) / 1000},"status":"{states[s % 4]}"}}\n'
    )
    if len(buf) >= 10000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
