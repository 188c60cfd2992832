"""``spinedx serve``: the review service (FastAPI app, analysis workers) and the review export.

The app is :func:`spinedx.serve.app.create_app`; :func:`spinedx.serve.runner.serve` runs it with
uvicorn; :mod:`spinedx.serve.export` writes reviewed studies as training data.
"""
