"""DrawingBot: ``attngan-fast serve``, a local web page and HTTP API on a trained generator.

    engine = DrawingEngine.from_checkpoint("runs/demo/gan")      # no web framework needed
    result = engine.generate("this bird has a red crown", seed=3, n=2)

    from attngan_fast.serve.app import create_app                 # needs the ``serve`` extra
    uvicorn.run(create_app(engine), host="127.0.0.1", port=8000)

``engine`` (the generation service: limits, one model run at a time, PNG results) needs only the
core package; ``app`` (FastAPI routes, the page in ``static/``) and ``cli`` (which imports uvicorn
when it runs) need ``pip install "attngan-fast[serve]"``. Nothing here is imported by the rest of
the package.
"""

from attngan_fast.serve.engine import DrawingEngine, RequestError, ServeLimits

__all__ = ["DrawingEngine", "RequestError", "ServeLimits"]
