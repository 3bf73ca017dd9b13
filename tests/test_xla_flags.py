"""xla_flags.configure: the CPU flags, the eval-only variant, and the user's own choice kept."""
import sys

import pytest

from jax_resnets import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.mark.parametrize("eval_only, value", [(False, "-individual_convolution"),
                                              (True, "-individual_convolution,-reduce")])
def test_configure_appends_the_cpu_flag(monkeypatch, eval_only, value):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.delenv("JAX_RESNETS_DEFAULT_XLA_FLAGS", raising=False)
  xla_flags.configure(eval_only=eval_only)
  assert xla_flags.os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", f"{YNN}={value}"]


def test_configure_keeps_the_users_value_and_honours_opt_out(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"{YNN}=-dot")
  xla_flags.configure(eval_only=True)
  assert xla_flags.os.environ["XLA_FLAGS"] == f"{YNN}=-dot"
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("JAX_RESNETS_DEFAULT_XLA_FLAGS", "0")
  xla_flags.configure()
  assert xla_flags.os.environ["XLA_FLAGS"] == ""


def test_allocator_and_hint(monkeypatch):
  monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
  assert xla_flags.allocator() == "tcmalloc" and xla_flags.allocator_hint() is None
  monkeypatch.setenv("LD_PRELOAD", "")
  assert xla_flags.allocator() == "glibc"
  if sys.platform.startswith("linux"):
    assert "LD_PRELOAD=" in xla_flags.allocator_hint() and "tcmalloc" in xla_flags.allocator_hint()
