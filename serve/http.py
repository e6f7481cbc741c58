"""The FastAPI app every voxray HTTP route hangs on, with its error handlers and OpenAPI docs.

Route mixins (``serve/routes/<product>.py``) decorate their methods with ``@app.get`` /
``@app.post`` on this object; ``serve/app.py`` combines the mixins into one ingress class
(``@serve.ingress(app)``), so the whole product is one application and one port. The pages for
people, ``/docs`` (offline Swagger UI) and ``/ui`` (the web page), are ``serve/pages.py``'s.
"""

from fastapi import FastAPI

from serve.errors import install_error_handlers, install_openapi
from serve.pages import install_pages

app = FastAPI(
    title="voxray",
    description=(
        "Speaker verification, embedding extraction, enrollment and identification; "
        "diarization; target speaker extraction; neural codecs; sound classification."
    ),
    version="1",
    docs_url=None,  # serve/pages.py serves /docs with local assets (FastAPI's load from a CDN)
    redoc_url=None,
)

install_error_handlers(app)
install_openapi(app)
install_pages(app)
