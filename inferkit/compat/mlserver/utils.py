"""``mlserver.utils`` for model files (see :mod:`inferkit.compat`): ``get_model_uri``."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from ...settings import ModelSettings
from .errors import InvalidModelURI

__all__ = ["get_model_uri"]


async def get_model_uri(
    settings: ModelSettings,
    wellknown_filenames: Sequence[str] = (),
    allowed_schemes: Sequence[str] = (),
) -> str:
    """The absolute path of the model's artefact, as MLServer's ``get_model_uri`` gives it.

    ``parameters.uri`` is taken relative to the model's folder (the folder of its
    ``model-settings.json``; the working directory for settings built in code). A file is
    returned as it is; a folder is searched for the first of ``wellknown_filenames`` and
    returned itself if none is there. A URI with a scheme (``s3://...``) is returned unchanged
    if the scheme is allowed. Anything else raises :class:`InvalidModelURI`.
    """
    uri = settings.parameters.uri if settings.parameters else None
    if not uri:
        raise InvalidModelURI(settings.name)
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme:
        if scheme in allowed_schemes:
            return uri
        raise InvalidModelURI(settings.name, uri)
    # The settings loader has already made a file's relative uri absolute; one built in code
    # resolves against its folder, as the built-in runtimes' artefact lookup does.
    path = Path(os.path.abspath(os.path.join(settings.folder or "", uri)))
    if path.is_file():
        return str(path)
    if path.is_dir():
        for name in wellknown_filenames:
            if (path / name).is_file():
                return str(path / name)
        return str(path)
    raise InvalidModelURI(settings.name, str(path))
