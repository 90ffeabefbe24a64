"""Quotes on a, bars on b (issue #13, item 5): host a runs only a service
root whose feed daemon is quotes-only (no samplerd anywhere on a); host b
joins a's registry and its ``relay`` feed daemon builds the bars from a's
trades in b's shared memory, stepped by b's samplerd.  Every whole
closed bar on b equals the bar built from the trades a published."""

from __future__ import annotations

import json
import subprocess

import pytest
import trio
from _hosts import PROGRAMS, PYTHON, Host, Network, read_line, stop

pytestmark = pytest.mark.multihost

PORT = 6161
TOKEN = 'bars-on-b-test-token'

_CMDLINES = """
import json, os
out = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                out.append(f.read().replace(b'\\0', b' ').decode(errors='replace'))
        except OSError:
            pass
print(json.dumps(out))
"""


async def _cmdlines(host: Host) -> list[str]:
    res = await host.run(PYTHON, '-c', _CMDLINES)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


async def test_quotes_on_a_bars_stepped_on_b(net: Network):
    a, b = net['a'], net['b']
    root = await trio.lowlevel.open_process(
        a.python(str(PROGRAMS / 'quotes_root.py'), a.addr, str(PORT)),
        stdout=subprocess.PIPE,
        env=a.env(TRACTOR_SERVICES_TOKEN=TOKEN),
    )
    a.procs.append(root)
    joined = None
    try:
        assert json.loads(await read_line(root))['ready']
        joined = await trio.lowlevel.open_process(
            b.python(
                '-m',
                'tractor_sampler',
                'run',
                '--join',
                f'{a.addr}:{PORT}',
                '--host',
                b.addr,
                '--label',
                'b',
            ),
            stdout=subprocess.PIPE,
            env=b.env(TRACTOR_SERVICES_TOKEN=TOKEN),
        )
        b.procs.append(joined)
        assert 'joined the registry' in await read_line(joined)

        res = await b.run(
            PYTHON,
            str(PROGRAMS / 'relay_bars.py'),
            a.addr,
            str(PORT),
            'b',
            'AAA',
            timeout=240,
            env={'TRACTOR_SERVICES_TOKEN': TOKEN},
        )
        assert res.returncode == 0, (res.stdout.decode() + res.stderr.decode())[-3000:]
        out = json.loads(res.stdout.decode().strip().splitlines()[-1])
        # the bars are b's shared memory (a client on b attaches them)
        assert out['feed'] == 'feedd.relay@b' and out['bars'] == 'ShmArray', out
        # the source on a keeps no bars
        assert out['source'] == 'feedd.sim' and out['source_buffers'] == {}, out
        assert out['compared'] >= 4 and out['equal'], out

        on_a, on_b = await _cmdlines(a), await _cmdlines(b)
        # a runs the quotes-only feed daemon and no samplerd at all
        assert any('feedd.sim' in c for c in on_a), on_a
        assert not [c for c in on_a if 'samplerd' in c], on_a
        # b's samplerd steps b's bars
        assert any('samplerd@b' in c for c in on_b), on_b
        assert any('feedd.relay@b' in c for c in on_b), on_b
    finally:
        if joined is not None:
            assert await stop(joined) == 0
        assert await stop(root) == 0
