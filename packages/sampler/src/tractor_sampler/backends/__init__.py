"""Backends shipped with tractor-sampler; they register through the same
hook as third-party plugins (see :mod:`tractor_sampler._plugins`)."""
