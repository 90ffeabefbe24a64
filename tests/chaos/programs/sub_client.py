"""A chaos-suite subscriber: a separate program on the tree at HOST:PORT
that reads one kind of stream for ever and reports what it sees as JSON
lines on stdout (the suite reads them).

Usage: sub_client.py HOST PORT MODE TOPIC TICK_RATE [THROTTLE_HZ]

MODE is ``quotes`` (every quote, unthrottled), ``frames`` (throttled
frames at THROTTLE_HZ) or ``steps`` (samplerd's 1 s step stream).  The
feed modes open ``TOPIC`` on the sim backend with ``tick_rate`` TICK_RATE.

Each (re)connection is an *epoch*.  When a stream ends or fails, the
program reports how (``ended`` with the error, or ``null`` for a silent
end) and opens it again, so the suite can time recovery.  Lines:

- ``{"ev": "up", "epoch", "t", "daemon_pid"}``: the stream is open;
- ``{"ev": "first", "epoch", "t"}``: the first message of the epoch;
- ``{"ev": "stats", "epoch", "t", ...}``: every 0.25 s: counts,
  sequence gaps, drops the producer and the local reader counted, bar
  checks, RSS and open fds;
- ``{"ev": "ended", "epoch", "t", "error"}``.

Times are ``time.monotonic()``: one system-wide clock on Linux, so the
suite compares them with its own."""

import json
import math
import os
import sys
import time

import trio

REPORT_S = 0.25


def emit(**kw):
    print(json.dumps(kw), flush=True)


def _proc_figures():
    """(RSS bytes, open fds) of this process."""
    try:
        with open('/proc/self/statm') as f:
            rss = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        fds = len(os.listdir('/proc/self/fd'))
    except OSError:
        return None, None
    return rss, fds


def check_bars(shm, period):
    """None if the buffer's rows are contiguous (index +1 per row, time
    +period per row, each on a period boundary), else what is wrong."""
    arr = shm.array
    if len(arr) < 2:
        return None
    idx = arr['index'].astype('int64')
    t = arr['time'].astype('float64')
    di = idx[1:] - idx[:-1]
    if (di != 1).any():
        k = int((di != 1).argmax())
        return f'{period:g} s bars: index {idx[k]} then {idx[k + 1]} (row {k})'
    dt = t[1:] - t[:-1]
    bad = abs(dt - period) > 1e-6
    if bad.any():
        k = int(bad.argmax())
        return f'{period:g} s bars: time {t[k]} then {t[k + 1]} (row {k})'
    off = [x for x in t if abs(x / period - round(x / period)) > 1e-6]
    if off:
        return f'{period:g} s bars: time {off[0]} is not on a period boundary'
    return None


class Counts:
    def __init__(self):
        self.n = 0  # quotes received (inside frames too)
        self.msgs = 0  # messages (quotes or frames or steps) received
        self.gaps = 0  # quotes missing between received ones
        self.gap_events = 0
        self.last_seq = None
        self.frame_seq = None
        self.frame_gaps = 0
        self.bars_error = None
        self.step_error = None
        self.index_jumps = 0
        self.first = False

    def seen(self, first_seq, last_seq, n):
        if self.last_seq is not None and first_seq != self.last_seq + 1:
            missing = first_seq - self.last_seq - 1
            self.gap_events += 1
            self.gaps += missing if missing > 0 else 1  # <= 0: out of order / repeated
        self.last_seq = last_seq
        self.n += n


async def reporter(epoch, c, extra):
    while True:
        await trio.sleep(REPORT_S)
        rss, fds = _proc_figures()
        emit(
            ev='stats',
            epoch=epoch,
            t=time.monotonic(),
            n=c.n,
            msgs=c.msgs,
            gaps=c.gaps,
            gap_events=c.gap_events,
            frame_gaps=c.frame_gaps,
            last_seq=c.last_seq,
            bars_error=c.bars_error,
            step_error=c.step_error,
            index_jumps=c.index_jumps,
            rss=rss,
            fds=fds,
            **(await extra()),
        )


async def run_feed(addr, mode, topic, tick_rate, throttle, epoch):
    from tractor_sampler import open_market_feed

    c = Counts()
    async with open_market_feed(
        [topic],
        'sim',
        registry_addr=addr,
        config={'tick_rate': tick_rate, 'seed': 7},
        tick_throttle=throttle if mode == 'frames' else None,
    ) as feed:
        info = await feed.info()
        pid = info['pid'] if isinstance(info, dict) else info.pid
        emit(ev='up', epoch=epoch, t=time.monotonic(), daemon_pid=pid)
        bufs = {p: feed.buffer(topic, p) for p in (1.0, 60.0)}
        remote = {}

        async def extra():
            # the producer's counters for this subscriber (one request on
            # the feed's own stream), and the bar check
            for p, shm in bufs.items():
                err = check_bars(shm, p)
                if err and not c.bars_error:
                    c.bars_error = err
            with trio.move_on_after(2):
                st = await feed.quotes.stats()
                remote.update(
                    dropped=st.dropped,
                    overruns=st.overruns,
                    delivered=st.delivered,
                    removed=st.removed,
                )
            return {
                'remote': dict(remote),
                'local_dropped': feed.quotes.local_stats.dropped,
                'last_bar': float(bufs[1.0].last_row['time']),
                'wall': time.time(),
            }

        async with trio.open_nursery() as tn:
            tn.start_soon(reporter, epoch, c, extra)
            async for msg in feed:
                if not c.first:
                    c.first = True
                    emit(ev='first', epoch=epoch, t=time.monotonic())
                c.msgs += 1
                if mode == 'frames':
                    if c.frame_seq is not None and msg.seq != c.frame_seq + 1:
                        c.frame_gaps += 1
                    c.frame_seq = msg.seq
                    tf = msg.topics[topic]
                    c.seen(tf.first_seq, tf.last_seq, tf.n_quotes)
                else:
                    c.seen(msg.seq, msg.seq, 1)
            tn.cancel_scope.cancel()
    return c


async def run_steps(addr, epoch):
    from tractor_sampler import Step, open_sample_stream
    from tractor_services import compat

    c = Counts()
    prev = None
    # a client, never a registry of its own (a5 makes a root the registry
    # when none answers at the address): as open_market_feed() does, ask first
    if not await compat.registry_reachable(addr):
        raise ConnectionError(f'no service root answers at {addr[0]}:{addr[1]}')
    async with compat.open_root_actor(addr, 'chaos_steps'):
        async with open_sample_stream(1.0, registry_addr=addr) as ss:
            emit(ev='up', epoch=epoch, t=time.monotonic(), daemon_pid=None)

            async def extra():
                return {}

            async with trio.open_nursery() as tn:
                tn.start_soon(reporter, epoch, c, extra)
                async for msg in ss:
                    if not isinstance(msg, Step) or msg.period_s != 1.0:
                        continue
                    if not c.first:
                        c.first = True
                        emit(ev='first', epoch=epoch, t=time.monotonic())
                    c.msgs += 1
                    c.n += 1
                    if abs(msg.time - round(msg.time)) > 1e-6 and not c.step_error:
                        c.step_error = f'step time {msg.time} is not on a 1 s boundary'
                    if prev is not None:
                        if msg.time != prev.time + 1.0 and not c.step_error:
                            c.step_error = f'step time {prev.time} then {msg.time}'
                        if (
                            min(prev.index, msg.index) >= 0
                            and msg.index != prev.index + 1
                        ):
                            # the buffers behind the index changed (a feed
                            # daemon restarted): counted, judged by the suite
                            c.index_jumps += 1
                    prev = msg
                tn.cancel_scope.cancel()
    return c


def _describe(exc):
    from tractor_services import compat

    err = compat.unwrap_error(exc)
    remote = compat.remote_error_type(err)
    if remote is not None:
        return f'{remote}: {compat.remote_error_message(err)}'
    return f'{type(err).__name__}: {err}'


async def main(host, port, mode, topic, tick_rate, throttle):
    addr = (host, port)
    epoch = 0
    while True:
        epoch += 1
        error = None
        try:
            if mode == 'steps':
                await run_steps(addr, epoch)
            else:
                await run_feed(addr, mode, topic, tick_rate, throttle, epoch)
        except Exception as exc:  # report it, then open the stream again
            error = _describe(exc)
        except BaseException as exc:  # a MultiError holding only Exceptions
            if not all(
                isinstance(e, Exception) for e in getattr(exc, 'exceptions', [None])
            ):
                raise
            error = _describe(exc)
        emit(ev='ended', epoch=epoch, t=time.monotonic(), error=error)
        # not a pacing sleep: a short pause before reconnecting, so a
        # daemon that is restarting is not hammered
        await trio.sleep(0.05)


if __name__ == '__main__':
    throttle = float(sys.argv[6]) if len(sys.argv) > 6 else math.nan
    try:
        trio.run(
            main,
            sys.argv[1],
            int(sys.argv[2]),
            sys.argv[3],
            sys.argv[4],
            float(sys.argv[5]),
            None if math.isnan(throttle) else throttle,
        )
    except KeyboardInterrupt:
        pass
