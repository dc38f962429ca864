"""The shared Strava rate budget, kept in Redis so every worker on every host draws from one pool.

Strava counts each request against two buckets (overall and read), each with a fixed 15-minute
window and a UTC-day window: four counters. A permit is taken by one Lua script that checks all
four against their caps and increments them only if all pass, so no amount of concurrency can
overshoot. Counter keys embed their window's start and expire soon after it ends; time comes from
an injectable clock, never from Redis. After each response the counters are raised to Strava's own
usage and the limits it reports are stored in Redis for all workers. The bulk lane may use only
`1 - reserve` of each window, leaving the rest for real-time fetches. The real-time lane may use
only `1 - min_share` of the day, leaving the rest for the nightly sweep, whose own lane ("sweep")
keeps the bulk lane's 15-minute share but may use the whole day: so however busy the day's
events, the sweep always finds at least `min_share` of the day's budget.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime

from strava_client import BucketUsage, RateLimits

WINDOW = 900
DAY = 86400
EXPIRY_SLACK = 60  # hosts' clocks differ a little: a lagging worker must still find the counter
BUCKETS = ("overall", "read")
# Daily counters first: when several windows are spent, the first one found resets last.
COUNTERS = (("overall", "day"), ("read", "day"), ("overall", "15m"), ("read", "15m"))
HISTORY_TTL = 2 * DAY  # the admin page's chart reaches back 24 hours
PER_MILLION = 1_000_000  # lane shares in integer parts per million, so Lua and Python floor alike
DOCUMENTED = {"overall": (200, 2000), "read": (100, 1000)}  # Strava's default limits
PLAUSIBLE_SHARE = 10  # a learned limit below 1/10 of the documented one is a garbled header
MAX_COUNT = 10**9  # a larger learned limit is garbled (and Redis counters overflow at 2**63 - 1)
# Usage beyond this multiple of its header's limit is garbled, not counted: adopting it would
# spend the day's budget on one bad header, and counters only rise: no later header undoes it.
MAX_OVERUSE = 2
LIMITS_TTL = DAY  # learned limits are forgotten a day after Strava last reported them

# KEYS: the four counters, the limits hash, the Retry-After key, then today's history hash.
# ARGV: lane share per million, then per counter (3 each): limits field, default limit, ttl;
# then the lane's share of the daily counters (the first two), per million; then the epoch second,
# the window's start and the history's ttl (the permit is counted in the chart in the same trip).
_TAKE = """
local wait_until = tonumber(redis.call('GET', KEYS[6]) or '0')
if wait_until > tonumber(ARGV[15]) then return {5, wait_until, 0} end
for i = 1, 4 do
  local a = 1 + (i - 1) * 3
  local limit = tonumber(redis.call('HGET', KEYS[5], ARGV[a + 1]) or ARGV[a + 2])
  local share = ARGV[1]
  if i <= 2 then share = ARGV[14] end
  local cap = math.floor(limit * tonumber(share) / 1000000)
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used >= cap then return {i, used, cap} end
end
for i = 1, 4 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[i * 3 + 1])
end
redis.call('HINCRBY', KEYS[7], ARGV[16], 1)
redis.call('EXPIRE', KEYS[7], ARGV[17])
return {0, 0, 0}
"""

# KEYS: the four counters, then the limits hash.
# ARGV per counter (5 each): limits field, default limit, reported limit, reported usage, ttl;
# then how long learned limits live.
# '' means not reported; a usage of 'spent' raises the counter to the counter's limit.
_RECORD = """
for i = 1, 4 do
  local a = (i - 1) * 5
  local field, limit, usage = ARGV[a + 1], ARGV[a + 3], ARGV[a + 4]
  if limit ~= '' then
    redis.call('HSET', KEYS[5], field, limit)
    redis.call('EXPIRE', KEYS[5], ARGV[21])
  end
  if usage == 'spent' then usage = redis.call('HGET', KEYS[5], field) or ARGV[a + 2] end
  if usage ~= '' and tonumber(usage) > tonumber(redis.call('GET', KEYS[i]) or '0') then
    redis.call('SET', KEYS[i], usage, 'EX', ARGV[a + 5])
  end
end
return 0
"""


BOOK_AHEAD = 30 * 96  # windows a booking looks through: a month of budget-bound backlog

# KEYS: the four counters of now, the limits hash. ARGV: the epoch second now, not-before, the
# lane's 15-minute and daily shares per million, default limits (overall 15m, day, read 15m, day),
# the booking keys' prefix, the windows to look ahead. Each window and day has a booking counter:
# a window takes bookings while what is booked (or, now, already used) is below its cap. While a
# permit is free now nothing is booked ({-2}): the job runs when it is due, as it would unpaced.
_BOOK = """
local now, start = tonumber(ARGV[1]), math.max(tonumber(ARGV[1]), tonumber(ARGV[2]))
local cap_w, cap_d, left_w, left_d = math.huge, math.huge, math.huge, math.huge
for b = 0, 1 do
  local field = b == 0 and 'overall' or 'read'
  local cw = math.floor(tonumber(redis.call('HGET', KEYS[5], field .. ':15m') or ARGV[5 + 2 * b])
    * tonumber(ARGV[3]) / 1000000)
  local cd = math.floor(tonumber(redis.call('HGET', KEYS[5], field .. ':day') or ARGV[6 + 2 * b])
    * tonumber(ARGV[4]) / 1000000)
  cap_w, cap_d = math.min(cap_w, cw), math.min(cap_d, cd)
  left_w = math.min(left_w, cw - tonumber(redis.call('GET', KEYS[3 + b]) or '0'))
  left_d = math.min(left_d, cd - tonumber(redis.call('GET', KEYS[1 + b]) or '0'))
end
local used_w, used_d = cap_w - left_w, cap_d - left_d
if cap_w < 1 or cap_d < 1 then return {-1, 0, 1} end
local this_w, this_d = now - now % 900, now - now % 86400
local booked_now = tonumber(redis.call('GET', ARGV[9] .. ':15m:' .. this_w) or '0')
local booked_today = tonumber(redis.call('GET', ARGV[9] .. ':day:' .. this_d) or '0')
if math.max(booked_now, used_w) < cap_w and math.max(booked_today, used_d) < cap_d then
  return {-2, 0, 1}
end
local w = start - start % 900
for _ = 1, tonumber(ARGV[10]) do
  local d = w - w % 86400
  local booked_d = tonumber(redis.call('GET', ARGV[9] .. ':day:' .. d) or '0')
  if d == this_d then booked_d = math.max(booked_d, used_d) end
  if booked_d >= cap_d then
    w = d + 86400
  else
    local booked_w = tonumber(redis.call('GET', ARGV[9] .. ':15m:' .. w) or '0')
    if w == this_w then booked_w = math.max(booked_w, used_w) end
    if booked_w < cap_w then
      redis.call('SET', ARGV[9] .. ':15m:' .. w, booked_w + 1, 'EX', w + 960 - now)
      redis.call('SET', ARGV[9] .. ':day:' .. d, booked_d + 1, 'EX', d + 86460 - now)
      return {w, booked_w, cap_w}
    end
    w = w + 900
  end
end
return {-1, 0, 1}
"""


class NoPermit(Exception):
    """No permit now; retry_at is the epoch second at which the blocking window resets."""

    def __init__(self, retry_at: float, reason: str):
        super().__init__(retry_at, reason)  # both in args, so the exception pickles for RQ
        self.retry_at = retry_at
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}; resets {_iso(self.retry_at)}"


def window_bounds(now: float) -> tuple[float, float, float, float]:
    """Return (window_start, window_end, day_start, day_end) around now, in epoch seconds."""
    window_start = now - now % WINDOW
    day_start = now - now % DAY
    return window_start, window_start + WINDOW, day_start, day_start + DAY


def _by_window(usage: BucketUsage | None) -> dict[str, tuple[int, int]]:
    """A reported bucket as {window: (limit, used)}; empty when Strava sent no headers for it."""
    if usage is None:
        return {}
    return {
        "15m": (usage.limit_15min, usage.usage_15min),
        "day": (usage.limit_day, usage.usage_day),
    }


def _plausible(bucket: str, window: str, reported: tuple) -> tuple:
    """A reported (limit, used), each '' when no real count can be that (the header is garbled)."""
    limit, used = reported
    floor = DOCUMENTED[bucket][0 if window == "15m" else 1] // PLAUSIBLE_SHARE
    if limit == "" or not floor <= limit <= MAX_COUNT:
        # e.g. '0,0': adopting it would refuse every permit with nothing to correct it
        return "", ""
    if used > limit * MAX_OVERUSE:
        used = ""
    return limit, used


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateBudget:
    """Permits for Strava requests, shared through Redis by every worker."""

    def __init__(
        self,
        redis,
        *,
        limits=(200, 2000),
        read_limits=(100, 1000),
        reserve=0.2,
        min_share=0.0,
        clock=time.time,
        prefix="strava-sync:budget",
    ):
        if not 0 <= reserve < 1:
            raise ValueError(f"reserve must be in [0, 1), got {reserve!r}")
        self.redis = redis
        self.reserve = reserve
        self.clock = clock
        self.prefix = prefix
        self._defaults = {"overall": tuple(limits), "read": tuple(read_limits)}
        if not 0 <= min_share < 1:
            raise ValueError(f"min_share must be in [0, 1), got {min_share!r}")
        self.min_share = min_share
        bulk = round((1 - reserve) * PER_MILLION)
        self._shares = {"realtime": PER_MILLION, "bulk": bulk, "sweep": bulk}
        # Each lane's share of the daily counters: real-time leaves min_share to the sweep.
        self._day_shares = {
            "realtime": round((1 - min_share) * PER_MILLION),
            "bulk": bulk,
            "sweep": PER_MILLION,
        }
        self._take = redis.register_script(_TAKE)
        self._book = redis.register_script(_BOOK)
        self._record = redis.register_script(_RECORD)
        self._sent = threading.local()  # when this thread's last permit was taken

    def take_permit(self, lane: str = "realtime") -> None:
        """Atomically check and count one request against all four counters, or raise NoPermit."""
        share = self._share(lane)
        now = self.clock()
        args = [share]
        for bucket, window in COUNTERS:
            args += [f"{bucket}:{window}", self._default(bucket, window), self._ttl(window, now)]
        window_start, _, day_start, _ = window_bounds(now)
        args += [self._day_shares[lane], int(now), int(window_start), HISTORY_TTL]
        keys = [*self._keys(now), f"{self.prefix}:retry-after", self._history_key(int(day_start))]
        blocked, used, cap = self._take(keys=keys, args=args)
        if blocked == 5:
            raise NoPermit(used, f"Strava asked us to wait (Retry-After) until {_iso(used)}")
        if blocked:
            bucket, window = COUNTERS[blocked - 1]
            name = "15-minute" if window == "15m" else "daily"
            reason = f"{bucket} {name} window spent ({used}/{cap} for {lane})"
            raise NoPermit(self._resets_at(window, now), reason)
        self._sent.at = now

    def record_response(self, status: int, rate_limits: RateLimits) -> None:
        """Raise counters to Strava's reported usage, adopt its limits; a 429 spends the window."""
        now = self.clock()
        # A response that arrives just after a reset reports the previous window's usage: carry
        # usage only into the windows this thread's last permit was taken in.
        sent, current = window_bounds(vars(self._sent).pop("at", now)), window_bounds(now)
        same = {"15m": sent[0] == current[0], "day": sent[2] == current[2]}
        reported = {
            (b, w): _plausible(b, w, pair)
            for b in BUCKETS
            for w, pair in _by_window(getattr(rate_limits, b)).items()
        }
        exhausted = any(used != "" and used >= limit for limit, used in reported.values())
        args = []
        for bucket, window in COUNTERS:
            limit, used = reported.get((bucket, window), ("", ""))
            if status == 429 and not exhausted and not rate_limits.retry_after and window == "15m":
                used = "spent"  # a 429 that doesn't say which window: assume the 15-minute ones
            if not same[window]:
                used = ""
            args += [
                f"{bucket}:{window}",
                self._default(bucket, window),
                limit,
                used,
                self._ttl(window, now),
            ]
        self._record(keys=self._keys(now), args=[*args, LIMITS_TTL])
        if status == 429 and rate_limits.retry_after:
            self._wait(now, rate_limits.retry_after)

    def book(self, lane: str = "realtime", not_before: float = 0.0) -> float:
        """When a job of this lane due at `not_before` should ask for its permit (an epoch second).

        While this window has a permit free, when it is due. Else it is booked, in order, into the
        first window (and day) whose permits are not all promised, at the pace that window allows:
        so waiting work wakes a window's worth at a time, not all of it at every reset.
        """
        now = self.clock()
        args = [int(now), int(not_before), self._share(lane), self._day_shares[lane]]
        args += [self._default(b, w) for b in BUCKETS for w in ("15m", "day")]
        args += [f"{self.prefix}:booked:{lane}", BOOK_AHEAD]
        window, booked, cap = self._book(keys=self._keys(now), args=args)
        if window == -2:
            return max(now, not_before)
        if window < 0:  # nothing free within BOOK_AHEAD windows: ask again a day on
            return max(now, not_before) + DAY
        return max(now, not_before, window + booked * WINDOW / cap)

    def _wait(self, now: float, seconds: int) -> None:
        """Refuse every permit for `seconds` (at most a day), as a 429's Retry-After asks."""
        seconds = min(seconds, DAY)
        key = f"{self.prefix}:retry-after"
        self.redis.set(key, math.ceil(now + seconds), ex=seconds + EXPIRY_SLACK)

    def available(self, lane: str = "bulk") -> dict:
        """Permits this lane may still take in this 15-minute window and today (both buckets)."""
        shares = {"15m": self._share(lane), "day": self._day_shares[lane]}
        limits, used = self._read(self.clock())
        left = {c: max(0, limits[c] * shares[c[1]] // PER_MILLION - used[c]) for c in COUNTERS}
        return {
            "window": min(left[b, "15m"] for b in BUCKETS),
            "day": min(left[b, "day"] for b in BUCKETS),
        }

    def sweep_allowance(self) -> int:
        """Reads tonight's sweep may plan: the bulk lane's day, or at least min_share of the day."""
        limits, _ = self._read(self.clock())
        floor = min(limits[b, "day"] for b in BUCKETS) * round(self.min_share * PER_MILLION)
        return min(
            self.available("sweep")["day"], max(self.available("bulk")["day"], floor // PER_MILLION)
        )

    def snapshot(self) -> dict:
        """A JSON-ready view of limits, usage and resets for status pages and the cron answer."""
        now = self.clock()
        _, window_end, _, day_end = window_bounds(now)
        limits, used = self._read(now)
        view = {"reserve": self.reserve}
        for b in BUCKETS:
            view[b] = {
                "limit_15min": limits[b, "15m"],
                "used_15min": used[b, "15m"],
                "left_15min": max(0, limits[b, "15m"] - used[b, "15m"]),
                "limit_day": limits[b, "day"],
                "used_day": used[b, "day"],
                "left_day": max(0, limits[b, "day"] - used[b, "day"]),
                "window_resets_at": _iso(window_end),
                "day_resets_at": _iso(day_end),
            }
        return view

    def history(self, hours: int = 24) -> list[tuple[int, int]]:
        """[(window start, permits taken)] per 15-minute window over `hours`, oldest first."""
        window_start = int(window_bounds(self.clock())[0])
        starts = [window_start - i * WINDOW for i in range(hours * 3600 // WINDOW)][::-1]
        days = sorted({s - s % DAY for s in starts})
        with self.redis.pipeline() as pipe:
            for day in days:
                pipe.hgetall(self._history_key(day))
            found = {int(k): int(v) for h in pipe.execute() for k, v in h.items()}
        return [(s, found.get(s, 0)) for s in starts]

    def _history_key(self, day_start: int) -> str:
        return f"{self.prefix}:history:{day_start}"

    def _share(self, lane: str) -> int:
        if lane not in self._shares:
            raise ValueError(f"unknown lane {lane!r}; expected 'realtime', 'bulk' or 'sweep'")
        return self._shares[lane]

    def _default(self, bucket: str, window: str) -> int:
        return self._defaults[bucket][0 if window == "15m" else 1]

    def _keys(self, now: float) -> list[str]:
        window_start, _, day_start, _ = window_bounds(now)
        starts = {"15m": int(window_start), "day": int(day_start)}
        counters = [f"{self.prefix}:{b}:{w}:{starts[w]}" for b, w in COUNTERS]
        return [*counters, f"{self.prefix}:limits"]

    @staticmethod
    def _resets_at(window: str, now: float) -> float:
        _, window_end, _, day_end = window_bounds(now)
        return window_end if window == "15m" else day_end

    def _ttl(self, window: str, now: float) -> int:
        # Relative expiry, because the injected clock need not agree with the Redis server's.
        return math.ceil(self._resets_at(window, now) - now) + EXPIRY_SLACK

    def _read(self, now: float) -> tuple[dict, dict]:
        keys = self._keys(now)
        with self.redis.pipeline() as pipe:
            pipe.mget(keys[:4])
            pipe.hmget(keys[4], [f"{b}:{w}" for b, w in COUNTERS])
            counts, learned = pipe.execute()
        limits, used = {}, {}
        for i, (bucket, window) in enumerate(COUNTERS):
            limits[bucket, window] = int(learned[i] or self._default(bucket, window))
            used[bucket, window] = int(counts[i] or 0)
        return limits, used
