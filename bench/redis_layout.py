#!/usr/bin/env python3
"""What per-key detection state costs Redis, per Check, in the two layouts
(docs/performance.md, "Detection state in Redis: snapshot vs native structures").

- snapshot (what Palisade does): the limiter script alone on the Check path, plus one
  `SET <key> <snapshot> PX ..` per key every `detect.score_every` Checks, written behind.
- native: the limiter script also keeps the key's detection state in Redis structures:
  HyperLogLogs of client IPs and user agents, a hash of endpoint counts, a hash of
  hour-of-day counts, and a sorted set of object IDs bounded to 1,024 members, and reads
  back what features need (PFCOUNT, HGETALL, ZCARD, ZRANGE). That covers five of the 36
  features; the rest (decayed horizons, timing variance, divergences) would add more.

Redis CPU is read from `INFO commandstats` (usec_per_call), not from wall time, so the
figure is about Redis' own work. Run against a private Redis (its statistics are reset and
it is flushed):

    just bench-layout
    python3 bench/redis_layout.py --port 6390 --snapshot-bytes 1200
"""

import argparse
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMITER = ROOT / "scorer/src/limiter/lua/check.lua"

# Appended to the limiter script: KEYS[3..7] the key's structures, ARGV[9..13] the request.
NATIVE = r"""
local ip, ua, route, id, hour = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local day = 86400000
redis.call('PFADD', KEYS[3], ip); redis.call('PEXPIRE', KEYS[3], day)
redis.call('PFADD', KEYS[4], ua); redis.call('PEXPIRE', KEYS[4], day)
redis.call('HINCRBY', KEYS[5], route, 1); redis.call('PEXPIRE', KEYS[5], day)
redis.call('HINCRBY', KEYS[6], hour, 1); redis.call('PEXPIRE', KEYS[6], 7 * day)
redis.call('ZADD', KEYS[7], ms(now), id)
redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -1025); redis.call('PEXPIRE', KEYS[7], day)
out[#out + 1] = redis.call('PFCOUNT', KEYS[3])
out[#out + 1] = redis.call('PFCOUNT', KEYS[4])
out[#out + 1] = #redis.call('HGETALL', KEYS[5])
out[#out + 1] = #redis.call('HGETALL', KEYS[6])
out[#out + 1] = redis.call('ZCARD', KEYS[7])
out[#out + 1] = #redis.call('ZRANGE', KEYS[7], 0, 0)
"""

# Two sliding-counter windows, as the `bench` tier of palisade-bench check.
WINDOWS = ["1000", "m", "1000000", "60000", "c", "100000000", "3600000", "c"]


def cli(port, *args):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def per_call(port, command, requests, keys, bench_args):
    """Redis CPU per call of `command` (us) and the client's rate over `requests` calls."""
    cli(port, "CONFIG", "RESETSTAT")
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-q", "-n", str(requests), "-c", "16",
         "-r", str(keys), *bench_args],
        check=True, capture_output=True, text=True,
    ).stdout
    rates = re.findall(r"([0-9.]+) requests per second", out.replace("\r", "\n"))
    stats = cli(port, "INFO", "commandstats")
    m = re.search(rf"cmdstat_{command}:calls=(\d+),usec=(\d+)", stats)
    if not m:
        raise SystemExit(f"no {command} in INFO commandstats")
    return int(m[2]) / int(m[1]), float(rates[-1]) if rates else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="a private redis-server")
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=1_000, help="API keys")
    p.add_argument("--snapshot-bytes", type=int, default=1_200, help="one key's snapshot")
    p.add_argument("--score-every", type=int, default=16, help="detect.score_every")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()

    limiter = LIMITER.read_text()
    native = limiter.replace("local n = #KEYS", "local n = 2").replace(
        "out[1] = admitted\nreturn out", NATIVE + "out[1] = admitted\nreturn out"
    )
    if native == limiter:
        raise SystemExit(f"{LIMITER} changed shape; update bench/redis_layout.py")
    cli(a.port, "FLUSHALL")
    sha_l = cli(a.port, "SCRIPT", "LOAD", limiter)
    sha_n = cli(a.port, "SCRIPT", "LOAD", native)
    win = ["w:__rand_int__:60000:c", "w:__rand_int__:3600000:c"]
    det = [f"{k}:__rand_int__" for k in ("ip", "ua", "ep", "tod", "ids")]
    req = ["10.0.__rand_int__", "ua__rand_int__", "/items", "__rand_int__", "13"]

    print(f"{a.keys} keys, {a.requests} calls per run, 16 clients; Redis CPU per call "
          "(INFO commandstats)")
    for r in range(a.rounds):
        lim, lim_rate = per_call(a.port, "evalsha", a.requests, a.keys,
                                 ["EVALSHA", sha_l, "2", *win, *WINDOWS])
        nat, nat_rate = per_call(a.port, "evalsha", a.requests, a.keys,
                                 ["EVALSHA", sha_n, "7", *win, *det, *WINDOWS, *req])
        put, _ = per_call(a.port, "set", a.requests, a.keys,
                          ["-d", str(a.snapshot_bytes), "SET", "{rl:__rand_int__}:profile",
                           "__data__", "PX", "604800000"])
        snap = lim + put / a.score_every
        print(f"round {r}: limiter script alone {lim:7.2f} us ({lim_rate:,.0f}/s)")
        print(f"round {r}: snapshot layout      {snap:7.2f} us per Check "
              f"(script + SET of {a.snapshot_bytes} B at {put:.2f} us / {a.score_every}) "
              f"= {snap / lim:.2f}x the script")
        print(f"round {r}: native structures    {nat:7.2f} us per Check ({nat_rate:,.0f}/s) "
              f"= {nat / lim:.2f}x the script")


if __name__ == "__main__":
    main()
