"""Test session setup: 4 forced CPU devices (to test data parallelism), a shared compile cache."""
import os
import tempfile

# --xla_backend_optimization_level=0: the suite's tiny programs are compile-bound, and LLVM's -O0
# compiles them ~25% faster (measured: tests/test_training.py 29 s -> 22 s) while running them
# about as fast. Values stay within the tests' tolerances; runs compared bitwise share the flag.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
                           " --xla_backend_optimization_level=0").strip()

# Many tests (and the subprocesses they start) compile the same tiny programs: JAX's persistent
# compilation cache, shared through the environment, compiles each of them once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jax_resnets_test_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# glibc malloc tuning (xla_flags.tune_malloc) speeds up long runs' steps but slows compiling
# ~1.5x, and the suite mostly compiles tiny programs: off here (and in the subprocesses), tested
# on its own in test_xla_flags.py.
os.environ.setdefault("JAX_RESNETS_MALLOC_TUNING", "0")

from jax_resnets.cpu import xla_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_flags.configure()
