"""The ``cuda`` backend (csrc/ kernels in ``attngan_fast._C``) as a backend: what a machine
without the extension or a GPU reports, its registration, the extension built and chosen, and the
extension's own input checks. Its kernels' parity is in the op suites (test_<op>.py: on a GPU the
real kernels under ``-m gpu``, on the CPU the same kernels through ``cuda_emulation.py``).
"""

from __future__ import annotations

import pytest
import torch

from attngan_fast import ops
from attngan_fast.ops import cuda_ext, registry

CUDA_OPS = ("word_attention", "damsm_word_similarity", "batch_norm_act")
gpu = pytest.mark.gpu


def _c():
    """The compiled extension (the GPU tests fail, not skip, when it was not built)."""
    from attngan_fast import _C

    return _C


# --- CPU: what a machine without the extension or a GPU reports -----------------------------------


@pytest.mark.parametrize("op", CUDA_OPS)
def test_cpu_tensors_never_list_cuda(op):
    assert "cuda" not in ops.available_backends(op, "cpu")
    why = registry.implementation(op, "cuda").supports(registry.typical_call("cpu"))
    assert why is not None and "CUDA tensors" in why


# (an explicit backend="cuda" on CPU tensors: test_registry.py)


@pytest.mark.skipif(
    cuda_ext._C is not None or cuda_ext.why_no_build() is None,
    reason="the extension is built here, or the cuda backend would build it on first use",
)
@pytest.mark.parametrize("op", CUDA_OPS)
def test_missing_extension_is_named(op):
    assert "attngan_fast._C is not built" in cuda_ext._extension_missing()
    assert "cuda" not in ops.available_backends(op, "cuda")


def test_module_registers_its_kernels():
    for op in CUDA_OPS:
        impl = registry.implementation(op, "cuda")
        assert impl.forward_op is not None and impl.backward_op is not None, op
    assert "cuda" not in registry.backend_names("upsample_conv3x3")


# --- GPU: build -----------------------------------------------------------------------------------


@gpu
def test_extension_is_built_and_chosen():
    _c()
    for op in CUDA_OPS:
        assert "cuda" in ops.available_backends(op, "cuda"), op
    assert "cuda" not in ops.available_backends("upsample_conv3x3", "cuda")


# --- GPU: the extension's own checks --------------------------------------------------------------


@gpu
def test_c_word_attention_rejects_bad_inputs_by_name():
    C = _c()
    q = torch.randn(2, 3, 10, device="cuda")
    s = torch.randn(2, 3, 4, device="cuda")
    op = r"word_attention \(cuda forward\)"
    with pytest.raises(TypeError, match=op + ": query must be float32"):
        C.word_attention_forward(q.long(), s, None, True, False)
    with pytest.raises(ValueError, match=op + ": query must be a CUDA tensor"):
        C.word_attention_forward(q.cpu(), s, None, True, False)
    with pytest.raises(ValueError, match=op + ": query must be contiguous"):
        C.word_attention_forward(q.transpose(1, 2).contiguous().transpose(1, 2), s, None, True,
                                 False)  # fmt: skip
    with pytest.raises(TypeError, match=op + ": source is Half"):
        C.word_attention_forward(q, s.half(), None, True, False)
    with pytest.raises(ValueError, match=op + r": source must have shape B x C x T"):
        C.word_attention_forward(q, s[:1].contiguous(), None, True, False)
    with pytest.raises(ValueError, match=op + r": mask must have shape B x T"):
        C.word_attention_forward(q, s, torch.zeros(2, 5, dtype=torch.bool, device="cuda"), True,
                                 False)  # fmt: skip
    with pytest.raises(TypeError, match=r"word_attention \(cuda backward\): lse must be"):
        C.word_attention_backward(q, None, q, s, None, torch.zeros(2, 10, device="cuda").half(),
                                  False)  # fmt: skip


@gpu
def test_c_damsm_refuses_more_than_32_words():
    img = torch.randn(2, 8, 9, device="cuda")
    wrd = torch.randn(2, 8, 33, device="cuda")
    lens = torch.tensor([33, 2], device="cuda")
    with pytest.raises(ValueError, match=r"at most 32 words.*T = 33"):
        registry.custom_op("damsm_word_similarity", "cuda")(img, wrd, lens, 4.0, 5.0)


@gpu
def test_c_damsm_and_batch_norm_reject_bad_inputs_by_name():
    C = _c()
    img = torch.randn(2, 8, 9, device="cuda")
    wrd = torch.randn(2, 8, 5, device="cuda")
    lens = torch.tensor([5, 2], device="cuda")
    op = r"damsm_word_similarity \(cuda forward\)"
    with pytest.raises(TypeError, match=op + ": cap_lens must be int64"):
        C.damsm_word_similarity_forward(img, wrd, lens.int(), 4.0, 5.0)
    with pytest.raises(ValueError, match=op + ": words must be a CUDA tensor"):
        C.damsm_word_similarity_forward(img, wrd.cpu(), lens, 4.0, 5.0)
    with pytest.raises(ValueError, match=op + ": img_local must be contiguous"):
        C.damsm_word_similarity_forward(img.transpose(1, 2).contiguous().transpose(1, 2), wrd,
                                        lens, 4.0, 5.0)  # fmt: skip
    x = torch.randn(2, 6, 3, 3, device="cuda")
    op = r"batch_norm_act \(cuda forward\)"
    with pytest.raises(ValueError, match=op + ": x must be contiguous or channels-last"):
        C.batch_norm_act_forward(x[:, :, :, :2], None, None, None, None, None, True, 1e-5, "glu")
    with pytest.raises(ValueError, match=op + ": mode must be 'glu' or 'add'"):
        C.batch_norm_act_forward(x, None, None, None, None, None, True, 1e-5, "relu")
    with pytest.raises(TypeError, match=op + ": x must be float32"):
        C.batch_norm_act_forward(x.long(), None, None, None, None, None, True, 1e-5, "glu")
    residual = torch.randn_like(x).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=op + ": residual must have the memory format of x"):
        C.batch_norm_act_forward(x, residual, None, None, None, None, True, 1e-5, "add")
