"""The backend registry of ``attngan_fast.ops``: which implementation of an op runs a call.

An op (``word_attention``, ``damsm_word_similarity``, ``upsample_conv3x3``, ``batch_norm_act``,
``upsample_conv3x3_bn_glu``) is defined once by its module with ``define_op``: the contract of
its kernels, given as the annotated fake (meta) functions of the forward and the backward, and
the autograd formula that joins them. Backends then ``register`` implementations of it, in one
of two forms:

* kernels: ``forward`` and ``backward`` functions with the op's contract. The registry wraps them
  in two ``torch.library`` custom ops, ``attngan_fast::<op>_<backend>`` and
  ``attngan_fast::<op>_<backend>_backward``, with the op's fakes and autograd formula, so that
  they work under autograd, ``torch.compile`` and ``torch.library.opcheck``;
* composite: one function taking the op's checked arguments, written with PyTorch operations and
  differentiated by autograd (the ``reference`` backend: the ``*_reference`` functions).

Every registration carries a capability predicate ``supports(call) -> None | str``: None when the
implementation can run the call, else a sentence saying why not. It sees the call's device, dtype
and named input shapes (``Call``), and a rank per device type for the automatic choice (lower
first; ``"*"``: any other device type; no rank: chosen only by name). A ``Backend`` holds a
backend's name and ranks for its registrations (``TORCH`` here, ``TRITON`` in
``ops/triton/_common.py``, ``CUDA`` in ``ops/cuda_ext.py``).

Which implementation runs, per call: the op's ``backend=`` argument, else the innermost
``use_backend`` block that names one for the op, else the environment variable
``ATTNGAN_FAST_BACKEND``, else (also for the name ``"auto"`` or an empty value) automatically: the
first implementation in the device's rank order whose predicate accepts the call. A backend chosen
by name that cannot run the call raises ``BackendUnavailableError`` saying why.

Under ``torch.compile`` the choice is traced with the op: made once per compiled graph (a
``use_backend`` block around the compiled call is guarded on and recompiles when it changes; the
environment variable is read when the graph is traced). Predicates therefore stay simple
comparisons of the call's fields; anything that reads files, drivers or the toolkit goes behind
``torch.compiler.assume_constant_result``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

ENV_VAR = "ATTNGAN_FAST_BACKEND"
AUTO = "auto"
NAMESPACE = "attngan_fast"

# Ranks of the built-in backends (lower is tried first); a new backend takes its place among them.
RANK_TRITON, RANK_CUDA, RANK_CPU, RANK_TORCH = 10, 20, 30, 50
REFERENCE = "reference"  # the backend of each op's plain-PyTorch reference (``define_op``)

# Backends living in modules of their own, imported by ``load_builtin_backends`` (the reference
# and torch backends are registered by the op modules themselves).
BUILTIN_BACKENDS = {
    "triton": "attngan_fast.ops.triton",
    "cuda": "attngan_fast.ops.cuda_ext",
    "cpu": "attngan_fast.ops.cpu",
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run the op here; the message says what is missing."""


class Call(NamedTuple):
    """What a capability predicate sees of one call: the device and dtype of its inputs and
    their shapes by argument name (e.g. ``{"query": (B, C, N), "source": (B, C, T)}``)."""

    device: torch.device
    dtype: torch.dtype
    shapes: Mapping[str, tuple[int, ...]]

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of input ``name``, None when the call does not say (``available_backends``
        asks about a device and dtype only)."""
        return self.shapes.get(name)


Supports = Callable[[Call], "str | None"]


def any_call(call: Call) -> str | None:
    """The predicate of an implementation that runs every call (plain PyTorch)."""
    return None


@torch.compiler.assume_constant_result
def cuda_usable() -> bool:
    """Whether a CUDA GPU is usable here (``torch.cuda.is_available()``), for predicates."""
    return torch.cuda.is_available()


@torch.compiler.assume_constant_result
def _capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index if index >= 0 else None)
    return 10 * major + minor


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability (major, minor) of a CUDA ``device`` (its index, else the current)."""
    sm = _capability(-1 if device.index is None else device.index)
    return sm // 10, sm % 10


@dataclass(frozen=True)
class OpDef:
    """What every backend of one op shares: the kernels' contract (schemas from the fakes) and
    the autograd formula. ``backward(impl, ctx, *grads)`` calls ``impl.backward_op`` (or, for
    an op without a backward kernel of its own, other ops' backward kernels of the backend)."""

    name: str
    forward_fake: Callable
    backward_fake: Callable | None
    setup_context: Callable
    backward: Callable
    forward_schema: str
    backward_schema: str | None


@dataclass(eq=False)
class Implementation:
    """One backend's implementation of one op (see the module docstring for the two forms)."""

    op: str
    backend: str
    supports: Supports
    preference: Mapping[str, int]
    forward: Callable | None = None
    backward: Callable | None = None
    composite: Callable | None = None
    forward_op: Any = field(default=None, repr=False)  # the custom ops of the kernel form
    backward_op: Any = field(default=None, repr=False)

    def rank(self, device_type: str) -> int | None:
        """Place in the automatic order on ``device_type`` (None: chosen only by name)."""
        return self.preference.get(device_type, self.preference.get("*"))


_OPS: dict[str, OpDef] = {}
_IMPLS: dict[str, dict[str, Implementation]] = {}
_ORDER: dict[str, dict[str, tuple[Implementation, ...]]] = {}  # op -> device type -> auto order
_KERNEL_OPS: dict[tuple[str, str], tuple[Any, Any, list[Implementation]]] = {}
_LOAD_ERRORS: dict[str, str] = {}
_NAMES: list[str] = []  # every backend name registered for some op or failed to load, in order
_SCOPE = threading.local()


# --- defining ops and registering implementations ---------------------------------------------


def define_op(
    name: str,
    forward_fake: Callable,
    backward_fake: Callable | None,
    setup_context: Callable,
    backward: Callable,
    *,
    reference: Callable,
) -> OpDef:
    """Define op ``name``: its kernels' contract (the annotated fakes give the custom ops'
    schemas; ``backward_fake`` None: the backend's kernels are a forward alone, the autograd
    formula runs other ops' backward kernels) and autograd formula (``setup_context(ctx, inputs,
    output)`` as for ``torch.library.register_autograd``; ``backward(impl, ctx, *grads)``).
    Every op has a plain-PyTorch ``reference`` (composite form), registered here as backend
    ``reference``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"op names are lower-case identifiers, got {name!r}")
    if name in _OPS:
        raise ValueError(f"op {name!r} is already defined")
    opdef = OpDef(
        name,
        forward_fake,
        backward_fake,
        setup_context,
        backward,
        torch.library.infer_schema(forward_fake, mutates_args=()),
        None
        if backward_fake is None
        else torch.library.infer_schema(backward_fake, mutates_args=()),
    )
    _OPS[name] = opdef
    _IMPLS[name] = {}
    _ORDER[name] = {}
    register(name, REFERENCE, composite=reference)
    return opdef


def register(
    op: str,
    backend: str,
    *,
    supports: Supports = any_call,
    preference: Mapping[str, int] | None = None,
    forward: Callable | None = None,
    backward: Callable | None = None,
    composite: Callable | None = None,
) -> Implementation:
    """Register ``backend``'s implementation of ``op``: ``forward`` and ``backward`` (kernel
    form; ``forward`` alone for an op defined without a backward kernel) or ``composite`` (see
    the module docstring), with its capability predicate and its rank per device type
    (``{"cuda": 10}``; None or empty: chosen only by name)."""
    if op not in _OPS:
        raise ValueError(f"no op {op!r} is defined (defined: {', '.join(_OPS)})")
    if not _NAME.fullmatch(backend) or backend == AUTO:
        raise ValueError(
            f"backend names are lower-case identifiers other than 'auto', got {backend!r}"
        )
    if backend in _IMPLS[op]:
        raise ValueError(f"{op}: backend {backend!r} is already registered")
    opdef = _OPS[op]
    kernels = forward is not None
    wants_backward = opdef.backward_fake is not None
    if kernels == (composite is not None) or (kernels and (backward is not None) != wants_backward):
        form = "forward and backward" if wants_backward else "forward"
        raise ValueError(f"{op}/{backend}: give {form}, or composite alone")
    impl = Implementation(
        op, backend, supports, dict(preference or {}), forward, backward, composite
    )
    if kernels:
        impl.forward_op, impl.backward_op, current = _kernel_ops(opdef, backend)
        current[:] = [impl]
    _IMPLS[op][backend] = impl
    _reorder(op)
    return impl


@dataclass(frozen=True, eq=False)
class Backend:
    """A backend's name and its ranks in the automatic order per device type, which each of its
    registrations shares: ``TRITON.register(OP, forward, backward, supports=...)``."""

    name: str
    preference: Mapping[str, int] = field(default_factory=dict)

    def register(
        self,
        op: str,
        forward: Callable | None = None,
        backward: Callable | None = None,
        *,
        supports: Supports = any_call,
        composite: Callable | None = None,
    ) -> Implementation:
        """``register(op, self.name, ...)`` with this backend's ranks."""
        return register(
            op, self.name, supports=supports, preference=self.preference, forward=forward,
            backward=backward, composite=composite,
        )  # fmt: skip


TORCH = Backend("torch", {"*": RANK_TORCH})  # each op's PyTorch kernels: last on every device


def _renamed() -> None:
    names = dict.fromkeys(b for impls in _IMPLS.values() for b in impls)
    _NAMES[:] = [*names, *(b for b in _LOAD_ERRORS if b not in names)]


def unregister(op: str, backend: str) -> None:
    """Remove ``backend``'s implementation of ``op`` (its custom ops stay defined in
    ``torch.library`` and serve a later registration of the same name)."""
    impl = _IMPLS[op].pop(backend)
    if impl.forward_op is not None:
        _KERNEL_OPS[(op, backend)][2].clear()
    _reorder(op)


@contextlib.contextmanager
def registered(op: str, backend: str, **kwargs: Any) -> Iterator[Implementation]:
    """``register`` for the duration of a block (benchmarks, tests)."""
    impl = register(op, backend, **kwargs)
    try:
        yield impl
    finally:
        unregister(op, backend)


def _kernel_ops(opdef: OpDef, backend: str) -> tuple[Any, Any, list[Implementation]]:
    """The forward and backward custom ops of ``backend``'s kernels for ``opdef``, created once;
    they call the implementation registered now (the list holds it)."""
    key = (opdef.name, backend)
    if key in _KERNEL_OPS:
        return _KERNEL_OPS[key]
    current: list[Implementation] = []

    def registered_now() -> Implementation:
        if not current:
            raise BackendUnavailableError(f"{opdef.name}: backend {backend!r} is not registered")
        return current[0]

    base = f"{NAMESPACE}::{opdef.name}_{backend}"
    forward_op = torch.library.custom_op(
        base, lambda *args: registered_now().forward(*args), mutates_args=(),
        schema=opdef.forward_schema,
    )  # fmt: skip
    forward_op.register_fake(opdef.forward_fake)
    backward_op = None
    if opdef.backward_fake is not None:
        backward_op = torch.library.custom_op(
            f"{base}_backward", lambda *args: registered_now().backward(*args), mutates_args=(),
            schema=opdef.backward_schema,
        )  # fmt: skip
        backward_op.register_fake(opdef.backward_fake)
    forward_op.register_autograd(
        lambda ctx, *grads: opdef.backward(registered_now(), ctx, *grads),
        setup_context=opdef.setup_context,
    )
    _KERNEL_OPS[key] = (forward_op, backward_op, current)
    return _KERNEL_OPS[key]


def _reorder(op: str) -> None:
    """Recompute the automatic order of ``op`` for every device type a rank names."""
    impls = list(_IMPLS[op].values())  # registration order breaks ties
    device_types = {t for i in impls for t in i.preference}
    _ORDER[op] = {
        t: tuple(sorted((i for i in impls if i.rank(t) is not None), key=lambda i: i.rank(t)))
        for t in device_types | {"*"}
    }
    _renamed()


def load_builtin_backends() -> None:
    """Import the built-in backends' modules (they register themselves); a backend whose module
    cannot be imported (e.g. triton not installed) is remembered with the reason."""
    for name, module in BUILTIN_BACKENDS.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            _LOAD_ERRORS[name] = f"{module} could not be imported ({type(exc).__name__}: {exc})"
    _renamed()


# --- choosing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def use_backend(name: str | None = None, /, **per_op: str) -> Iterator[None]:
    """Within the block, ops without a ``backend=`` argument run on backend ``name`` (``"auto"``:
    automatic choice), and the ops named as keywords on theirs:
    ``use_backend("reference")``, ``use_backend(damsm_word_similarity="cuda")``. Blocks nest (the
    innermost that names a backend for an op wins) and hold for the current thread."""
    for key, value in (("name", name), *per_op.items()):
        if value is not None:
            _check_name(value, f"use_backend({key}=...)")
    for op in per_op:
        if op not in _OPS:
            raise ValueError(f"use_backend: no op {op!r} (ops: {', '.join(_OPS)})")
    outer = getattr(_SCOPE, "frames", ())
    _SCOPE.frames = (*outer, (name, tuple(per_op.items())))
    try:
        yield
    finally:
        _SCOPE.frames = outer


def _check_name(name: object, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"{source} must be a backend name (a string: {', '.join(backend_names())} or "
            f"'auto') or None, got {type(name).__name__} {name!r}"
        )
    clean = name.strip().lower()
    if clean not in ("", AUTO) and clean not in _NAMES:
        raise ValueError(
            f"{source}: {name!r} is not a backend; choose one of {', '.join(backend_names())} "
            "or 'auto'"
        )
    return clean


def _requested(op: str, backend: str | None) -> tuple[str, str]:
    """(name or "" for automatic, where it came from) for one call of ``op``."""
    if backend is not None:
        return _check_name(backend, "backend="), "backend="
    for default, per_op in reversed(getattr(_SCOPE, "frames", ())):
        for key, value in per_op:
            if key == op:
                return _check_name(value, "use_backend"), "use_backend"
        if default is not None:
            return _check_name(default, "use_backend"), "use_backend"
    return _check_name(os.environ.get(ENV_VAR, ""), ENV_VAR), ENV_VAR


def choose(op: str, call: Call, backend: str | None = None) -> Implementation:
    """The implementation of ``op`` that runs ``call`` (see the module docstring for the rules).

    Raises BackendUnavailableError when the backend chosen by name cannot run the call (or no
    backend can), ValueError for a name that is not a backend, TypeError for a non-string.
    """
    name, source = _requested(op, backend)
    impls = _IMPLS[op]
    if name in ("", AUTO):
        reasons = []
        order = _ORDER[op]
        for impl in order.get(call.device.type, order["*"]):
            why = impl.supports(call)
            if why is None:
                return impl
            reasons.append(f"{impl.backend}: {why}")
        raise BackendUnavailableError(
            f"{op}: no backend can run {call.dtype} inputs on {call.device} ({'; '.join(reasons)})"
        )
    impl = impls.get(name)
    why = impl.supports(call) if impl is not None else _why_not_registered(op, name)
    if why is not None:
        chosen = "" if source == "backend=" else f" (chosen by {source})"
        raise BackendUnavailableError(f"{op}: backend {name!r} is not available: {why}{chosen}")
    return impl


def _why_not_registered(op: str, backend: str) -> str:
    if backend in _LOAD_ERRORS:
        return _LOAD_ERRORS[backend]
    return f"it has no {op} implementation (backends of {op}: {', '.join(_IMPLS[op])})"


# --- what is there ----------------------------------------------------------------------------


def op_names() -> list[str]:
    """The defined ops, in definition order."""
    return list(_OPS)


def backend_names(op: str | None = None) -> list[str]:
    """Registered backends (of ``op``, or of any op, including built-in ones that failed to
    load), in registration order."""
    return list(_IMPLS[op]) if op is not None else list(_NAMES)


def implementation(op: str, backend: str) -> Implementation:
    """``backend``'s registered implementation of ``op`` (KeyError if there is none)."""
    return _IMPLS[op][backend]


def implementations(op: str) -> list[Implementation]:
    """Every registered implementation of ``op``, in registration order."""
    return list(_IMPLS[op].values())


def custom_op(op: str, backend: str, backward: bool = False) -> torch._ops.OpOverloadPacket:
    """``torch.ops.attngan_fast.<op>_<backend>[_backward]``: the custom op of a kernel
    implementation (for ``torch.library.opcheck``, ``FlopCounterMode``, profiles)."""
    name = f"{op}_{backend}" + ("_backward" if backward else "")
    return getattr(getattr(torch.ops, NAMESPACE), name)


def typical_call(device: torch.device | str, dtype: torch.dtype | None = None) -> Call:
    """A call of ``dtype`` (default float32) inputs on ``device`` whose shapes no predicate
    limits: what ``available_backends`` and ``resolve_backend`` ask about."""
    return Call(torch.device(device), dtype or torch.float32, {})


def available_backends(
    op: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> list[str]:
    """The backends that can run ``op`` on ``device`` for ``dtype`` inputs (float32 by default;
    shape limits aside): the automatic order first, then those chosen only by name."""
    call = typical_call(device, dtype)
    order = _ORDER[op].get(call.device.type, _ORDER[op]["*"])
    auto = [i.backend for i in order if i.supports(call) is None]
    rest = [i.backend for i in _IMPLS[op].values() if i.backend not in auto]
    return auto + [b for b in rest if _IMPLS[op][b].supports(call) is None]


def resolve_backend(
    op: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    backend: str | None = None,
) -> str:
    """The backend a call of ``op`` on ``device`` with ``dtype`` inputs would run on now, under
    the current selection (``backend=``, ``use_backend``, ``ATTNGAN_FAST_BACKEND``)."""
    return choose(op, typical_call(device, dtype), backend).backend
