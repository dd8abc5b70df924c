"""The projection file: typed models, loader (``${VAR}``, folders, file:line:col errors), docs.

Public API: :func:`load_config` -> :class:`LoadedConfig` (``.project`` is the
:class:`~cdc_projector.config.models.ProjectFile`), and the models themselves.
"""
from .loader import DEFAULT_PATH, LoadedConfig, load_config
from .models import Embed, Lookup, Projection, ProjectFile, SinkConfig, SourceConfig

__all__ = ["DEFAULT_PATH", "LoadedConfig", "load_config", "Embed", "Lookup", "Projection",
           "ProjectFile", "SinkConfig", "SourceConfig"]
