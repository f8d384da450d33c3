"""Triton backend of ``attngan_fast.ops``: one module per op, each with its kernels and the
``<op>_forward`` / ``<op>_backward`` / ``<op>_supported`` functions of the backend contract."""
