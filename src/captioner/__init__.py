"""captioner: look at a picture, write a plain-English sentence about it.

Data flows one way: files -> ``data`` -> ``encoders`` -> ``models`` (decoder) -> ``decoding``
-> text -> ``metrics``. ``training`` drives that flow to fit a model; ``api.Captioner`` is the
one door that the CLI, the server and users' code go through to caption images.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
