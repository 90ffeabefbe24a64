"""A backend plugin whose register hook raises: it must be left out, in
one line, while every other backend works."""

from __future__ import annotations

from tractor_sampler.hookspecs import Register, hookimpl


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    raise RuntimeError('the venue SDK is not configured')
